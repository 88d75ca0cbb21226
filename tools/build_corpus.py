"""Build the prompt corpus shipped inside the package from ../shared/corpora.

Only permissively licensed sources are shipped (see LICENSES below); non-commercial and
"do not train" sets stay in ../shared and may only be read by tests. Deterministic:
rows are sampled with a fixed seed. Run: python tools/build_corpus.py [SHARED_CORPORA]
"""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

import zstandard

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "src" / "distillguard" / "data" / "corpus"

# file -> (licence as stated by the source, max rows shipped)
SHIPPED = {
    "benign/arena_hard_prompts.jsonl": ("Apache-2.0", 1250),
    "benign/mtbench_vicuna_questions.jsonl": ("Apache-2.0", 200),
    "benign/alpaca_eval_instructions.jsonl": ("Apache-2.0", 805),
    "benign/self_instruct_human_written.jsonl": ("Apache-2.0", 427),
    "benign/nq_open_search_queries.jsonl": ("CC BY-SA 3.0", 3000),
    "benign/awesome_chatgpt_prompts.jsonl": ("CC0-1.0", 1500),
    "distillation/gsm8k_questions.jsonl": ("MIT", 4000),
    "distillation/math_competition_and_wordproblems.jsonl": ("MIT (CC BY 3.0 for college_math rows)", 4000),
    "distillation/humaneval.jsonl": ("MIT", 164),
    "distillation/humaneval_x_multilang.jsonl": ("Apache-2.0", 817),
    "distillation/swe_bench_lite_issues.jsonl": ("MIT (princeton-nlp SWE-bench Lite)", 323),
    "distillation/bfcl_v4_function_calling.jsonl": ("Apache-2.0", 1500),
    "distillation/toolbench_queries.jsonl": ("Apache-2.0", 610),
    "distillation/prometheus_rubric_judge_prompts.jsonl": ("Apache-2.0", 898),
    "distillation/mtbench_judge_templates.jsonl": ("Apache-2.0", 8),
    "distillation/gpteacher_instructions.jsonl": ("MIT", 4000),
}
# Not shipped (evaluation only, read from ../shared by tests): wizardlm_testset (CC BY-NC 4.0),
# koala_test_set ("do not use for training"), mbpp_plus, codealpaca_instructions,
# dabench_data_analysis (CC BY-NC 4.0), leetcode_problems (problem text owned by leetcode.com).
MAX_CHARS = 6000
MAX_TOOLS_CHARS = 6000


def main(src: Path) -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    rng = random.Random(20260223)
    cctx = zstandard.ZstdCompressor(level=19)
    lines = ["# Shipped prompt corpus: sources and licences", "",
             "Prompt text only (answers, outputs, tests dropped), sampled with a fixed seed by",
             "`tools/build_corpus.py` from the public sets described in `../shared/corpora/README.md`.",
             "Each row keeps `source` = `owner/repo:path` of the original file.", "",
             "| file | licence | rows shipped | rows in source |", "|---|---|---|---|"]
    for rel, (lic, cap) in SHIPPED.items():
        rows = [json.loads(x) for x in (src / rel).read_text().split("\n") if x.strip()]
        n_src = len(rows)
        if len(rows) > cap:
            rows = rng.sample(rows, cap)
        out_rows = []
        for r in rows:
            keep = {"text": r["text"][:MAX_CHARS], "source": r["source"], "task": r["task"]}
            for k in ("turns", "system"):
                if r.get(k):
                    keep[k] = r[k]
            if r.get("tools"):
                tools = r["tools"]
                if len(json.dumps(tools)) > MAX_TOOLS_CHARS:
                    continue
                keep["tools"] = tools
            if r.get("meta"):
                keep["meta"] = {k: v for k, v in r["meta"].items() if isinstance(v, (str, int, float))}
            out_rows.append(keep)
        name = Path(rel).name + ".zst"
        payload = "\n".join(json.dumps(r, ensure_ascii=False) for r in out_rows).encode() + b"\n"
        (OUT / name).write_bytes(cctx.compress(payload))
        lines.append(f"| `{name}` | {lic} | {len(out_rows)} | {n_src} |")
    lines += ["", "Attribution: Chatbot Arena / Arena-Hard (lmarena), FastChat MT-bench (lm-sys),",
              "AlpacaEval (tatsu-lab), Self-Instruct (yizhongw), Natural Questions (Google, CC BY-SA 3.0:",
              "shared alike, this file set is redistributed under the same licence), awesome-chatgpt-prompts (f),",
              "GSM8K (OpenAI), Qwen2.5-Math evaluation data (QwenLM), HumanEval (OpenAI), HumanEval-X (THUDM),",
              "SWE-bench Lite (princeton-nlp), Berkeley Function Calling Leaderboard (gorilla),",
              "ToolBench (OpenBMB), Prometheus-Eval (prometheus-eval), GPTeacher (teknium1).", ""]
    (OUT / "ATTRIBUTION.md").write_text("\n".join(lines))


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT.parent / "shared" / "corpora")
