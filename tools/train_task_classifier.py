"""Train, evaluate and write the shipped task classifier (reproducible, fixed seed).

Training data: ONLY the permissively licensed corpus shipped in the package
(``distillguard.corpus.load()``) plus synthetic prompts authored in
``distillguard.content.synth``. The non-commercial / do-not-train sets in
/work/shared/corpora are read for evaluation only (never trained on, never shipped).

Two fits:
1. *evaluation fit*: held out = whole sources (humaneval, toolbench, mtbench/vicuna questions,
   MT-bench judge templates, GSM8K test file), held-out wrapper phrasings, and a random 20 %
   of the rest → accuracy + confusion matrices;
2. *shipped fit*: every permissive row + synthetic rows with the training phrasings (the
   held-out phrasings stay out), evaluated on the never-trained sources and phrasings.

Usage: python tools/train_task_classifier.py [--out PATH] [--corpora /work/shared/corpora]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import time
from pathlib import Path

import numpy as np
import polars as pl

from distillguard import corpus
from distillguard.content import synth
from distillguard.content.classify import (DEFAULT_MODEL, TaskClassifier, _COT,
                                           compose_texts, rule_based_task)
from distillguard.schema import TASKS

SEED = 0
HELDOUT_FILES = {"humaneval", "toolbench_queries", "mtbench_vicuna_questions",
                 "mtbench_judge_templates"}
HELDOUT_SOURCE_SUBSTR = ["grade_school_math/data/test.jsonl"]

_CODE = (r"(?i)```|\bdef \w+\(|\bpython\b|javascript|typescript|\bjava\b|c\+\+|\brust\b|golang|"
         r"\bsql\b|\bcode\b|\bscript\b|regex|\bhtml\b|\bcss\b|\breact\b|\bfunction\b|"
         r"\bcompile|#include|\bbash\b|linux terminal|\bapi\b|programming|developer")
_CREATIVE = (r"(?i)\b(?:poem|story|stories|song|lyrics|haiku|limerick|sonnet|screenplay|"
             r"fiction|novel|fairy tale|rap|slogan|act as|role-?play|character|"
             r"in the style of|joke|rhyme)\b")
_MATH = (r"(?i)\$|\\frac|\bsolve\b|\bprove\b|probability|equation|integer|riddle|puzzle|"
         r"calculate|how many .* (?:are|is|were|does|do)")
_OTHER = (r"(?i)^\s*(?:translate|summari[sz]e|extract|classify|paraphrase|rewrite|proofread|"
          r"correct|convert|fix the grammar|tl;?dr|identify|detect|find the)")


def benign_label() -> pl.Expr:
    t = pl.col("text")
    return (pl.when(t.str.contains(_COT)).then(pl.lit("cot_elicitation"))
            .when(t.str.contains(_CODE)).then(pl.lit("coding"))
            .when(t.str.contains(_CREATIVE)).then(pl.lit("creative"))
            .when(t.str.contains(_MATH)).then(pl.lit("reasoning"))
            .when(t.str.contains(_OTHER)).then(pl.lit("other"))
            .otherwise(pl.lit("chat")))


def label_frame(df: pl.DataFrame) -> pl.DataFrame:
    """Map corpus task/source to schema.TASKS (``label``) and compose the classifier text."""
    f, s, task = pl.col("file"), pl.col("source"), pl.col("task")
    lab = (pl.when(f == "nq_open_search_queries").then(pl.lit("chat"))
           .when(task == "benign").then(benign_label())
           .when(s.str.contains("Codegen/")).then(pl.lit("coding"))
           .when(s.str.contains("Roleplay/")).then(pl.lit("creative"))
           .when(s.str.contains("Toolformer/")).then(pl.lit("tool_use"))
           .when(task == "instruction_gen").then(pl.lit("other"))
           .otherwise(task))
    df = df.with_columns(lab.alias("label"))
    tools = [[t.get("name", "") for t in json.loads(j) if isinstance(t, dict)] if j else []
             for j in df["tools_json"].to_list()]
    text = compose_texts(df["text"], df["system"], pl.Series(tools, dtype=pl.List(pl.String)))
    return df.with_columns(text.alias("x"))


def synthetic(rng: np.random.Generator, pool: pl.DataFrame, heldout: bool) -> pl.DataFrame:
    """Synthetic rows; CoT wrappers go around reasoning/coding/chat payloads from ``pool``."""
    rows: list[tuple[str, str, str]] = []

    def add(texts, label, src):
        rows.extend((t, label, src) for t in texts)

    k = 300 if heldout else 1
    reason = pool.filter(pl.col("label") == "reasoning")["text"]
    code = pool.filter(pl.col("label") == "coding")["text"]
    chatp = pool.filter(pl.col("label") == "chat")["text"]
    n_cot = 300 if heldout else 1800
    payload = (reason.sample(min(len(reason), int(n_cot * 0.7)), seed=int(rng.integers(1e9)))
               .to_list()
               + code.sample(min(len(code), int(n_cot * 0.15)), seed=int(rng.integers(1e9)))
               .to_list()
               + chatp.sample(min(len(chatp), int(n_cot * 0.15)), seed=int(rng.integers(1e9)))
               .to_list())
    add(synth.wrap_cot(payload, rng, heldout=heldout), "cot_elicitation", "synth:cot")
    add(synth.sensitive(k if heldout else 700, rng, heldout=heldout), "sensitive_rewrite",
        "synth:sensitive")
    add(synth.data_analysis(k if heldout else 900, rng, heldout=heldout), "data_analysis",
        "synth:data")
    if not heldout:
        qs = pool["text"].sample(200, seed=1).to_list()
        add(synth.grading(400, rng, qs), "grading", "synth:grading")
        add(synth.creative(400, rng), "creative", "synth:creative")
        add(synth.chat(500, rng), "chat", "synth:chat")
        add(synth.other(300, rng), "other", "synth:other")
        at, tools = synth.agentic(400, rng)
        x = compose_texts(pl.Series(at), None, pl.Series(tools, dtype=pl.List(pl.String)))
        rows.extend((t, "agentic_coding", "synth:agentic") for t in x.to_list())
    df = pl.DataFrame(rows, schema=["text", "label", "file"], orient="row")
    return df.with_columns(pl.col("text").alias("x"))


def load_nc(corpora: Path) -> pl.DataFrame:
    """Evaluation-only sets (non-commercial / do-not-train); labels by source or heuristics."""
    spec = {"distillation/mbpp_plus.jsonl": "coding",
            "distillation/leetcode_problems.jsonl": "coding",
            "distillation/codealpaca_instructions.jsonl": "coding",
            "distillation/dabench_data_analysis.jsonl": "data_analysis",
            "benign/wizardlm_testset.jsonl": None, "benign/koala_test_set.jsonl": None}
    frames = []
    for rel, lab in spec.items():
        p = corpora / rel
        if not p.is_file():
            continue
        d = pl.read_ndjson(p, infer_schema_length=None).select("text")
        d = d.with_columns(pl.lit(Path(rel).stem).alias("file"))
        d = d.with_columns((pl.lit(lab) if lab else benign_label()).alias("label"))
        frames.append(d)
    if not frames:
        return pl.DataFrame(schema={"text": pl.String, "file": pl.String, "label": pl.String,
                                    "x": pl.String})
    return pl.concat(frames).with_columns(pl.col("text").alias("x"))


def confusion(y, p) -> str:
    labs = [c for c in TASKS if c in set(y) | set(p)]
    idx = {c: i for i, c in enumerate(labs)}
    m = np.zeros((len(labs), len(labs)), dtype=int)
    for a, b in zip(y, p):
        m[idx[a], idx[b]] += 1
    short = {c: c[:6] for c in labs}
    head = "| true \\ pred | " + " | ".join(short[c] for c in labs) + " |"
    sep = "|---" * (len(labs) + 1) + "|"
    body = "\n".join(f"| {c} | " + " | ".join(str(v) for v in m[i]) + " |"
                     for i, c in enumerate(labs))
    return "\n".join([head, sep, body])


def report(name, model, df, *, matrix=True) -> dict:
    if df.height == 0:
        return {}
    p = model.predict(df["x"])
    y = df["label"].to_numpy()
    acc = float((p == y).mean())
    rb = float((rule_based_task(df["x"]) == y).mean())
    print(f"\n### {name}: n={df.height} accuracy={acc:.3f} (rule fallback {rb:.3f})")
    per = (pl.DataFrame({"file": df["file"], "ok": p == y}).group_by("file")
           .agg(pl.len().alias("n"), pl.col("ok").mean().round(3).alias("acc")).sort("file"))
    for r in per.iter_rows():
        print(f"  {r[0]:40s} n={r[1]:5d} acc={r[2]:.3f}")
    if matrix:
        print(confusion(list(y), list(p)))
    return {"n": df.height, "accuracy": acc, "rule_accuracy": rb}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] /
                    "src/distillguard/data/models" / DEFAULT_MODEL)
    ap.add_argument("--corpora", type=Path, default=Path("/work/shared/corpora"))
    args = ap.parse_args(argv)
    rng = np.random.default_rng(SEED)

    full = label_frame(corpus.load())
    held_src = (pl.col("file").is_in(list(HELDOUT_FILES))
                | pl.any_horizontal([pl.col("source").str.contains(s, literal=True)
                                     for s in HELDOUT_SOURCE_SUBSTR]))
    src_out = full.filter(held_src)
    pool = full.filter(~held_src)
    syn_train = synthetic(rng, pool, heldout=False)
    syn_held = synthetic(rng, src_out.filter(pl.col("label") == "reasoning")
                         .vstack(pool.filter(pl.col("label").is_in(["coding", "chat"]))
                                 .sample(200, seed=SEED)), heldout=True)
    cols = ["x", "label", "file"]
    data = pl.concat([pool.select(cols), syn_train.select(cols)])
    data = data.with_columns(pl.Series("u", rng.random(data.height)))
    train, test = data.filter(pl.col("u") >= 0.2), data.filter(pl.col("u") < 0.2)
    print("label counts (train):", dict(train.group_by("label").len().sort("label").iter_rows()))

    t0 = time.time()
    m_eval = TaskClassifier(seed=SEED).fit(train["x"], train["label"].to_numpy())
    print(f"evaluation fit: {train.height} rows in {time.time() - t0:.1f}s")
    metrics = {
        "random_split": report("Held-out random 20% split (same sources)", m_eval, test),
        "heldout_sources": report("Held-out permissive sources (never trained)", m_eval,
                                  src_out.select(cols)),
        "heldout_phrasings": report("Held-out synthetic phrasings", m_eval,
                                    syn_held.select(cols)),
    }

    t0 = time.time()
    m_ship = TaskClassifier(seed=SEED)
    ship_data = pl.concat([full.select(cols), syn_train.select(cols)])
    m_ship.fit(ship_data["x"], ship_data["label"].to_numpy())
    print(f"\nshipped fit: {ship_data.height} rows in {time.time() - t0:.1f}s")
    nc = load_nc(args.corpora)
    metrics["shipped_heldout_phrasings"] = report("Shipped model: held-out phrasings",
                                                  m_ship, syn_held.select(cols))
    if nc.height:
        clear = nc.filter(pl.col("file").is_in(["mbpp_plus", "leetcode_problems",
                                                "codealpaca_instructions",
                                                "dabench_data_analysis"]))
        metrics["shipped_nc_eval"] = report(
            "Shipped model: non-commercial eval-only sets (labels by source)", m_ship, clear)
        fuzzy = nc.filter(pl.col("file").is_in(["wizardlm_testset", "koala_test_set"]))
        metrics["shipped_nc_benign_heuristic"] = report(
            "Shipped model: WizardLM/Koala test sets (labels by keyword heuristics)", m_ship,
            fuzzy)

    # speed (texts/s) on realistic prompts
    sample = ship_data["x"].sample(20000, with_replacement=True, seed=SEED)
    m_ship.predict(sample[:500])
    t0 = time.time()
    m_ship.predict(sample)
    rate = len(sample) / (time.time() - t0)
    print(f"\nspeed: {rate:,.0f} texts/s (single process)")
    metrics["texts_per_s"] = rate

    m_ship.meta_ = {
        "trained": dt.date.today().isoformat(), "seed": SEED,
        "training_data": {
            "corpus_files": sorted(full["file"].unique().to_list()),
            "synthetic": "distillguard.content.synth (training phrasings only)",
            "rows": ship_data.height,
        },
        "metrics": {k: v for k, v in metrics.items() if v},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    m_ship.save(args.out)
    print(f"wrote {args.out} ({args.out.stat().st_size / 1e6:.2f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
