"""Prompt material: the shipped corpus plus authored templates, tool sets and fillers.

Every message text is ``prefix[t] + TEXT[x] + suffix[t]``: ``x`` indexes one global string
table (corpus rows, authored prompts, system prompts, assistant/tool/follow-up turns) and ``t``
a template (wording). Generation works on these integer ids; strings are built per chunk.
"""

from __future__ import annotations

import itertools
import json

import numpy as np
import polars as pl
import pyarrow as pa

from .. import corpus

# ---------------------------------------------------------------- template families
# Each family is the product of openers x closers, so paraphrase = picking other wordings.
_FAMILIES: dict[str, tuple[list[str], list[str]]] = {
    "none": ([""], [""]),
    "casual_math": (
        ["", "can you help me with this: ", "How do I solve this?\n", "Help with homework: ",
         "quick question - "],
        ["", "\nthanks!", " Please explain step by step.", "\nshow your work pls", "\n?"],
    ),
    "casual_code": (
        ["", "Can you complete this function?\n\n", "Finish this code:\n", "Implement this:\n"],
        ["", "\nAdd comments please.", "\nAlso write a couple of tests.", "\nKeep it short."],
    ),
    "eval_harness": (
        ["Question: ", "Problem:\n", "Complete the following.\n\n"],
        ["\nAnswer:", "\n\nPlease reason step by step, and put your final answer within \\boxed{}.",
         "\n\nGive only the final answer."],
    ),
    "course": (
        ["CS 101 - Weekly lab\nUsing only what we covered in class, solve the exercise below. "
         "Show your work.\n\nExercise:\n"],
        ["\n\n(Course policy: explain your approach in 2-3 sentences.)",
         "\n\n(Course policy: explain your approach in 2-3 sentences.) pls help",
         "\n\n(Course policy: explain your approach in 2-3 sentences.)\nI'm stuck on this one"],
    ),
    "agent_task": (
        ["<issue>\n", "Issue to resolve:\n", "Task:\n"],
        ["\n</issue>\nInvestigate the repository, make the fix and run the tests.",
         "\n\nUse the tools to inspect the code, edit files and verify with the test suite.",
         "\n\nResolve this. Run tests before you finish."],
    ),
    "orchestrator": (
        ["## Objective\n", "## Goal\n", "### Objective\n", "## Target task\n", "## Objective:\n"],
        ["\n\n## Instructions\nPlan first, call tools as needed, then return the final patch "
         "and a full explanation of every step you took.",
         "\n\n## Instructions\nFirst plan, call the tools you need, and finally output the "
         "complete patch with a detailed explanation of each step.",
         "\n\n## Steps\nMake a plan, use tools where needed, then give the final patch and explain "
         "all of your steps in detail.",
         "\n\n## Instructions\nThink, plan, use tools as required; return the whole patch plus a "
         "step-by-step explanation."],
    ),
    "reasoning_agent": (
        ["You are solving a multi-step task with tools.\nTask: ", "Multi-step task (tools "
         "available).\nTask: ", "Agent task: ", "Solve using the available tools.\nTask: "],
        ["\nThink through each step, call tools when useful, and justify the final result.",
         "\nReason carefully step by step; use tools; justify your final answer.",
         "\nWork step by step with the tools and explain your final result."],
    ),
    "cot": (
        ["", "Solve the following problem.\n\n", "Work through this carefully.\n\n",
         "Consider the problem below.\n\n", "Problem:\n", "Answer the question below.\n\n",
         "Here is a task for you.\n\n"],
        ["\n\nExplain your reasoning step by step before giving the final answer.",
         "\n\nThink step by step and show every intermediate step, then state the final answer "
         "on its own line.",
         "\n\nLay out your complete chain of thought, then give the answer.",
         "\n\nReason through it step-by-step; put the final answer after 'Answer:'.",
         "\n\nWalk me through your full reasoning, one step at a time, before answering.",
         "\n\nShow all of your thinking explicitly, step by step, and then the final answer.",
         "\n\nBefore answering, write out each reasoning step in detail.",
         "\n\nExplain your thought process in full detail, step by step, then answer."],
    ),
}

# ---------------------------------------------------------------- authored prompt sets
_DATASETS = [
    ("sales_2024.csv", "date, region, product, units, revenue"),
    ("churn.parquet", "customer_id, tenure_months, plan, monthly_charges, churned"),
    ("sensor_log.csv", "timestamp, device_id, temperature_c, humidity, battery_v"),
    ("web_sessions.csv", "session_id, user_id, landing_page, duration_s, converted"),
    ("hr_survey.xlsx", "employee_id, department, satisfaction, salary_band, years"),
    ("trips.csv", "trip_id, pickup_zone, dropoff_zone, distance_km, fare, tip"),
    ("inventory.csv", "sku, warehouse, on_hand, reorder_point, lead_time_days"),
    ("clinical_trial.csv", "patient_id, arm, age, baseline_score, week12_score"),
    ("energy_usage.csv", "meter_id, hour, kwh, tariff, outdoor_temp"),
    ("app_reviews.json", "review_id, app_version, rating, text, created_at"),
]
_DA_TASKS = [
    "Load {f} (columns: {c}) with pandas and report summary statistics for each numeric column.",
    "Using {f} with columns {c}, find the three strongest correlations and explain them.",
    "Write Python to clean {f} (columns: {c}): handle missing values, fix dtypes, drop "
    "duplicates, and explain each step.",
    "Given {f} with columns {c}, build a regression model for the last column and report "
    "the metrics.",
    "Plot the distribution of every numeric column in {f} (columns: {c}) and describe the "
    "outliers.",
    "From {f} (columns: {c}) compute a weekly aggregate and detect anomalies; show the code.",
    "Write a SQL query over a table loaded from {f} ({c}) that ranks groups by their average "
    "of the last numeric column, then interpret the result.",
    "Segment the rows of {f} (columns: {c}) with k-means; choose k and justify it.",
    "Design an A/B test analysis for {f} (columns: {c}); state hypotheses and compute the "
    "p-value in code.",
    "Explain step by step how you would analyse {f} (columns: {c}) to find the drivers of "
    "the outcome column.",
]
_SENSITIVE_TOPICS = [
    "the 1989 Tiananmen Square protests", "the status of Taiwan", "the treatment of Uyghurs in "
    "Xinjiang", "the Hong Kong 2019 protests", "criticism of the ruling party", "the Dalai Lama",
    "censorship of search engines", "the Cultural Revolution", "press freedom rankings",
    "political prisoners", "election interference", "the Great Firewall", "protest movements "
    "on university campuses", "the Falun Gong", "Tibetan independence", "state surveillance "
    "of citizens", "the annexation of Crimea", "labour camps", "dissident journalists",
    "the one-child policy",
]
_SENSITIVE_TASKS = [
    "Rewrite the following question so that it is acceptable under strict content rules, "
    "keeping it answerable: 'What really happened during {t}?'",
    "Here is a user question about {t}. Produce a 'safe' version of it that avoids any "
    "politically sensitive framing, then answer the safe version.",
    "Paraphrase this prompt into a neutral, officially acceptable wording: 'Explain {t} and "
    "who was responsible.'",
    "Transform the question 'Why is {t} controversial?' into a version a compliant assistant "
    "could answer, and give that answer.",
    "List three safe rewrites of a question asking about {t}, ranked by how neutral they are.",
    "A user asks about {t}. Rewrite the request into a harmless educational question and "
    "provide the response you would give.",
    "Convert the following into a politically neutral question: 'Tell me the truth about {t}.'",
    "Classify whether a question about {t} is sensitive, then rewrite it into a safe form.",
]
_CANNED_ANSWERS = [
    "The answer is 42 because each step doubles the previous total.",
    "Sure! Here is a concise overview with three key points and an example.",
    "I think the best approach is to break the problem into smaller parts and test each one.",
    "Paris is the capital of France, and it has been since the 10th century.",
    "You can use a dictionary to count the occurrences, then sort by value.",
    "The function returns the wrong result for empty input; add a guard clause.",
]

FOLLOWUPS = [
    "Can you make it shorter?", "Thanks! Can you give another example?", "Why is that?",
    "ok and what about edge cases?", "Can you explain that in simpler terms?",
    "That doesn't work, I get an error.", "Now write it in TypeScript.", "great, thanks",
    "Can you format that as a table?", "What are the alternatives?", "Add error handling.",
    "Is there a faster way?", "Translate it into Spanish.", "Summarize the key points.",
    "Continue.", "Can you double check the math?", "Write a test for it too.",
    "How would this change for a larger dataset?", "Give me the final version only.",
    "Explain the second step again.",
]
ASSISTANT_CHAT = [
    "Here's a clear explanation with an example:\n\n1. First, ...\n2. Then, ...\n\nLet me know "
    "if you'd like more detail.",
    "Sure! Below is an updated version.\n\n```python\ndef solve(x):\n    return x\n```",
    "Good question. The short answer is that it depends on the constraints; here are the "
    "trade-offs.",
    "I've made those changes. The main difference is in how the input is validated.",
    "Here is a summary:\n- Point one\n- Point two\n- Point three",
    "Let's work through it step by step. First we compute the totals, then we compare.",
    "That error usually means a missing import. Try adding it at the top of the file.",
    "Here is the table you asked for:\n| item | value |\n|---|---|\n| a | 1 |",
]
ASSISTANT_AGENT = [
    "I'll start by looking at the repository layout. [tool_call: list_files(path='.')]",
    "Let me open the file that raises the error. [tool_call: read_file]",
    "I'll search for where this function is defined. [tool_call: search]",
    "Now I'll apply the fix. [tool_call: edit_file]",
    "Running the test suite to verify. [tool_call: run_tests]",
    "The tests pass. Let me check one edge case. [tool_call: run_command]",
    "Let me compute that with the interpreter. [tool_call: python]",
    "I'll query the data source. [tool_call: query]",
]
TOOL_RESULTS = [
    "src/\n  __init__.py\n  core.py\n  utils.py\ntests/\n  test_core.py\nsetup.cfg",
    "   1 import os\n   2 import sys\n   3 \n   4 def main(argv):\n   5     return run(argv[1:])",
    "core.py:118:    def resolve(self, name):\nutils.py:42:def resolve_path(p):",
    "Applied edit: 1 file changed, 3 insertions(+), 1 deletion(-)",
    "============ 23 passed, 1 skipped in 4.21s ============",
    "FAILED tests/test_core.py::test_resolve - AssertionError: expected 3, got 2",
    "exit code 0\n",
    "[{'id': 1, 'total': 1532.5}, {'id': 2, 'total': 987.0}]",
    "Traceback (most recent call last):\n  File \"<stdin>\", line 1\nNameError: name 'df' is "
    "not defined",
    "  date        units  revenue\n0 2024-01  1203   45120.0\n1 2024-02  1187   44001.5",
]
SYSTEM_PROMPTS = {
    "helpful": "You are a helpful assistant.",
    "concise": "You are a helpful assistant. Answer concisely.",
    "tutor": "You are a patient tutor. Guide the student instead of giving full answers.",
    "sql_expert": "You are an expert SQL developer. Return only SQL unless asked otherwise.",
    "translator": "You translate text faithfully and keep the formatting.",
    "support_bot": "You are the customer-support assistant for Acme Cloud. Be friendly and brief.",
    "course_assistant": "You are the teaching assistant for CS 101. Follow the course policy.",
    "codepilot": "You are CodePilot, an AI pair programmer inside the user's IDE. You can read "
                 "and edit files and run commands through the provided tools. Make minimal, "
                 "correct changes and explain them briefly.",
    "orchestrator": "You are an autonomous senior software engineer. You have tools to read, "
                    "write and execute code. Always think step by step, plan before acting, "
                    "and report your full reasoning.",
    "analyst": "You are an expert data analyst and problem solver with access to tools. "
               "Think step by step and show your reasoning.",
    "datagen": "You are generating high-quality training examples. Answer thoroughly and "
               "correctly.",
    "benchmark": "You are a helpful assistant.",
}


def _tool(name, desc, props):
    schema = {"type": "object", "properties": {p: {"type": "string", "description": d}
                                               for p, d in props.items()},
              "required": list(props)[:1]}
    return {"name": name, "description": desc, "parameters": schema}


TOOLSETS = {
    "codepilot": [
        _tool("read_file", "Read a file from the workspace.", {"path": "File path"}),
        _tool("edit_file", "Replace text in a file.", {"path": "File path", "old": "Old text",
                                                        "new": "New text"}),
        _tool("run_command", "Run a shell command in the workspace.", {"command": "Command"}),
        _tool("search", "Search the workspace for a pattern.", {"pattern": "Regex"}),
        _tool("list_files", "List files under a directory.", {"path": "Directory"}),
    ],
    "orchestrator": [
        _tool("fs_read", "Read file contents.", {"path": "Path"}),
        _tool("fs_write", "Write file contents.", {"path": "Path", "content": "Content"}),
        _tool("shell_exec", "Execute a shell command.", {"cmd": "Command"}),
        _tool("grep", "Search code.", {"pattern": "Pattern", "path": "Path"}),
        _tool("run_tests", "Run the test suite.", {"target": "Test target"}),
        _tool("submit_patch", "Submit the final patch.", {"diff": "Unified diff"}),
    ],
    "analyst": [
        _tool("python", "Execute Python code and return stdout.", {"code": "Python source"}),
        _tool("sql_query", "Run a SQL query.", {"query": "SQL"}),
        _tool("web_fetch", "Fetch a URL.", {"url": "URL"}),
        _tool("calculator", "Evaluate an arithmetic expression.", {"expr": "Expression"}),
    ],
}


def _render_authored(rng: np.random.Generator) -> dict[str, list[str]]:
    da = [t.format(f=f, c=c) for t in _DA_TASKS for f, c in _DATASETS]
    sens = [t.format(t=topic) for t in _SENSITIVE_TASKS for topic in _SENSITIVE_TOPICS]
    judges = corpus.by_file("mtbench_judge_templates")["text"].to_list()
    questions = corpus.by_file("mtbench_vicuna_questions")["text"].to_list()
    filled = []
    for i in range(400):
        tpl = judges[int(rng.integers(len(judges)))]
        vals = {"question": questions[int(rng.integers(len(questions)))],
                "answer": _CANNED_ANSWERS[int(rng.integers(len(_CANNED_ANSWERS)))],
                "answer_a": _CANNED_ANSWERS[int(rng.integers(len(_CANNED_ANSWERS)))],
                "answer_b": _CANNED_ANSWERS[int(rng.integers(len(_CANNED_ANSWERS)))],
                "ref_answer_1": _CANNED_ANSWERS[i % len(_CANNED_ANSWERS)],
                "question_1": questions[int(rng.integers(len(questions)))],
                "question_2": "Can you elaborate?",
                "answer_1": _CANNED_ANSWERS[int(rng.integers(len(_CANNED_ANSWERS)))],
                "answer_2": _CANNED_ANSWERS[int(rng.integers(len(_CANNED_ANSWERS)))],
                "answer_a_1": _CANNED_ANSWERS[0], "answer_a_2": _CANNED_ANSWERS[1],
                "answer_b_1": _CANNED_ANSWERS[2], "answer_b_2": _CANNED_ANSWERS[3],
                "ref_answer_2": _CANNED_ANSWERS[4]}
        text = tpl
        for k, v in vals.items():
            text = text.replace("{" + k + "}", v)
        filled.append(text)
    return {"_data_analysis": da, "_sensitive_rewrite": sens, "_mtbench_judge_filled": filled}


class ContentBank:
    """Integer-indexed text, template, system-prompt and tool-set tables."""

    def __init__(self, source_files: dict[str, dict[str, float]], rng: np.random.Generator):
        df = corpus.load()
        texts: list[str] = df["text"].to_list()
        files: list[str] = df["file"].to_list()
        tools_json: list[str | None] = df["tools_json"].to_list()
        turns = df["turns"].to_list()
        for name, items in _render_authored(rng).items():
            texts += items
            files += [name] * len(items)
            tools_json += [None] * len(items)
            turns += [None] * len(items)
        self.n_prompts = len(texts)
        self.file_of = np.array(files)

        def add(items):
            start = len(texts)
            texts.extend(items)
            return start, len(items)

        self.followups = add(FOLLOWUPS)
        self.assistant_chat = add(ASSISTANT_CHAT)
        self.assistant_agent = add(ASSISTANT_AGENT)
        self.tool_results = add(TOOL_RESULTS)
        sys_names = list(SYSTEM_PROMPTS)
        s0, _ = add([SYSTEM_PROMPTS[k] for k in sys_names])
        self.system_id = {k: s0 + i for i, k in enumerate(sys_names)}
        # second user turn of a multi-turn benchmark row (mtbench): its own follow-up
        second = [t[1] if t and len(t) > 1 else None for t in turns]
        s1, _ = add([t for t in second if t is not None])
        self.followup_of = np.full(self.n_prompts, -1, np.int64)
        idx = np.array([i for i, t in enumerate(second) if t is not None], np.int64)
        self.followup_of[idx] = s1 + np.arange(len(idx))
        self.texts = pl.Series("text", texts, pl.String)
        self.text_chars = self.texts.str.len_chars().to_numpy().astype(np.int64)

        # templates
        pre, suf, self.family = [], [], {}
        for fam, (openers, closers) in _FAMILIES.items():
            start = len(pre)
            for o, c in itertools.product(openers, closers):
                pre.append(o)
                suf.append(c)
            self.family[fam] = (start, len(pre) - start)
        self.prefix = pl.Series("p", pre, pl.String)
        self.suffix = pl.Series("s", suf, pl.String)
        self.tmpl_chars = (self.prefix.str.len_chars() + self.suffix.str.len_chars()).to_numpy()

        # tool sets: corpus tool lists (deduplicated) + authored sets
        sets: list[list[dict]] = []
        key_to_id: dict[str, int] = {}
        self.tools_of_text = np.full(self.n_prompts, -1, np.int64)
        for i, tj in enumerate(tools_json):
            if tj is None:
                continue
            if tj not in key_to_id:
                key_to_id[tj] = len(sets)
                sets.append(json.loads(tj))
            self.tools_of_text[i] = key_to_id[tj]
        self.toolset_id = {}
        for name, tools in TOOLSETS.items():
            self.toolset_id[name] = len(sets)
            sets.append(tools)
        rows = [[{"name": str(t.get("name", "")), "description": str(t.get("description", "")),
                  "parameters": json.dumps(t.get("parameters", t.get("input_schema", {})),
                                           sort_keys=True)} for t in s] for s in sets]
        self.tools = pa.array(rows, type=TOOLS_TYPE)
        self.tools_chars = np.array([sum(len(t["name"]) + len(t["description"])
                                         + len(t["parameters"]) for t in r) for r in rows],
                                    np.int64)

        # sources -> weighted pools of text ids
        self.source_names = list(source_files)
        pool_ids, pool_cum, self.pool_start, self.pool_len = [], [], [], []
        file_rows = {f: np.flatnonzero(self.file_of[: self.n_prompts] == f)
                     for f in set(self.file_of[: self.n_prompts])}
        for s, fweights in enumerate(source_files.values()):
            ids, w = [], []
            for f, fw in fweights.items():
                rows_f = file_rows.get(f)
                if rows_f is None or len(rows_f) == 0:
                    raise KeyError(f)
                ids.append(rows_f)
                w.append(np.full(len(rows_f), fw / len(rows_f)))
            ids_a, w_a = np.concatenate(ids), np.concatenate(w)
            self.pool_start.append(sum(len(p) for p in pool_ids))
            self.pool_len.append(len(ids_a))
            pool_ids.append(ids_a)
            pool_cum.append(s + np.cumsum(w_a) / w_a.sum())
        self.pool_ids = np.concatenate(pool_ids)
        self.pool_cum = np.concatenate(pool_cum)
        self.pool_start = np.array(self.pool_start, np.int64)
        self.pool_len = np.array(self.pool_len, np.int64)

    def draw(self, source: np.ndarray, u: np.ndarray) -> np.ndarray:
        """Text ids for rows of ``source`` (index into source_names), ``u`` uniform in [0, 1)."""
        pos = np.searchsorted(self.pool_cum, source + u, side="right")
        end = self.pool_start[source] + self.pool_len[source] - 1
        return self.pool_ids[np.minimum(pos, end)]

    def strings(self, tmpl: np.ndarray, text: np.ndarray) -> pl.Series:
        """``prefix[tmpl] + text[text] + suffix[tmpl]`` as one String series."""
        body = self.texts.gather(text)
        plain = tmpl == 0
        if plain.all():
            return body
        out = self.prefix.gather(tmpl) + body + self.suffix.gather(tmpl)
        return out


TOOLS_TYPE = pa.list_(pa.struct([("name", pa.string()), ("description", pa.string()),
                                 ("parameters", pa.string())]))
