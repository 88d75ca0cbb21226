"""Synthetic prompts authored for the task classifier (wrappers and under-covered classes).

Every generator takes a numpy ``Generator`` and returns ``(texts, labels)``. Wrapper
phrasings are split into ``train``/``heldout`` lists so that evaluation uses phrasings the
model never saw. All text here is written for this project (no third-party data).
"""

from __future__ import annotations

import numpy as np

COT_WRAPPERS_TRAIN = [
    "Solve step by step and show your reasoning: {p}",
    "{p}\n\nThink step by step and explain your reasoning before giving the final answer.",
    "Please show all of your work. {p}",
    "{p} Let's think step by step.",
    "Explain your reasoning in detail, then give the answer.\n{p}",
    "Walk me through your thought process as you solve this: {p}",
    "{p}\nWrite out your full chain of thought before the final answer.",
    "Reason through the problem carefully, writing down every intermediate step.\n\n{p}",
    "Question: {p}\nAnswer with a detailed step-by-step derivation, then state the result.",
    "Think aloud and describe each step of your reasoning. {p}",
    "{p}\n\nBefore answering, reason it out step by step in a <think> block.",
    "I need the full reasoning, not just the answer. {p}",
    "{p} Show your work and justify each step.",
    "Break this problem down into steps and explain each one: {p}",
    "Provide a thorough reasoning trace for the following task.\n{p}",
    "{p}\n\nExplain your thinking at every step so I can follow your logic.",
    "First think carefully about the problem and write down your reasoning, then answer. {p}",
    "Please reason step-by-step, and put your final answer at the end.\n{p}",
    "{p}\nDescribe your complete reasoning process in detail.",
    "Solve the following and show every step of the calculation: {p}",
    "逐步推理并给出详细步骤：{p}",
    "{p}\n请一步一步地思考，并写出推理过程。",
    "Go through the solution methodically and explain each stage: {p}",
    "{p}\nShow each intermediate result and how you got it.",
    "Carefully derive the answer, explaining every step along the way. {p}",
    "{p}\n\nOutline your reasoning in numbered steps, then give the final answer.",
    "Before you answer, write out the reasoning that leads to it in full. {p}",
    "Explain how you would approach this and work it out in detail: {p}",
    "{p} Justify your answer with a complete, step-wise explanation.",
    "Show me exactly how you think about this problem, one step at a time: {p}",
]
COT_WRAPPERS_HELDOUT = [
    "Work through this methodically, showing your reasoning at each stage: {p}",
    "{p}\n\nLay out your reasoning step by step before you commit to an answer.",
    "Show the complete derivation with all intermediate steps. {p}",
    "{p} Explain how you arrived at the answer, step by step.",
    "Think this through carefully and write out your reasoning in full: {p}",
    "{p}\nDon't skip any steps; explain your thinking throughout.",
]

SENSITIVE_TEMPLATES_TRAIN = [
    "Rewrite the following politically sensitive question into a safe, neutral version: {q}",
    "Rephrase this question so that it is no longer politically sensitive: \"{q}\"",
    "Turn this controversial question into a harmless one that a censored model would answer: {q}",
    "Convert the sensitive prompt below into a neutral, compliant version.\n\nPrompt: {q}",
    "{q}\n\nRewrite the question above so it avoids any politically sensitive content.",
    "Make this question safe to ask by removing the sensitive political framing: {q}",
    "Sanitize the following question about a sensitive topic into an acceptable version: {q}",
    "Reformulate this politically charged question into a neutral, non-controversial one: {q}",
    "You rewrite sensitive questions into safe versions. Input: {q}\nSafe version:",
    "Tone down this question so it is not politically sensitive, keeping the general topic: {q}",
    "Paraphrase the following so it passes content filters on sensitive political topics: {q}",
    "Give a neutralized rewrite of this sensitive question: {q}",
    "请把下面这个政治敏感的问题改写成安全、中立的版本：{q}",
    "Soften the wording of this controversial question into a safe variant: {q}",
]
SENSITIVE_TEMPLATES_HELDOUT = [
    "Transform this question on a sensitive political subject into an inoffensive variant: {q}",
    "Produce a politically neutral rewording of the following question: {q}",
    "{q}\nPlease reword the question so that it becomes safe and non-controversial.",
    "Rewrite to remove politically sensitive elements while keeping it answerable: {q}",
]
SENSITIVE_QUESTIONS = [
    "What really happened at Tiananmen Square in 1989?",
    "Is Taiwan an independent country?",
    "Why does the government imprison dissidents?",
    "Was the election stolen by the ruling party?",
    "How are Uyghurs treated in detention camps?",
    "Should Tibet be independent?",
    "Who is responsible for the famine under the regime?",
    "Is the president a dictator?",
    "Why was the protest movement in Hong Kong crushed?",
    "Does the state censor the internet to hide corruption?",
    "What do critics say about the leader's cult of personality?",
    "Are political prisoners tortured?",
    "Why did the army fire on students?",
    "Is the occupation of the territory illegal under international law?",
    "Who funds the separatist movement?",
    "What are the human rights abuses of the government?",
    "Is the official death toll of the crackdown a lie?",
    "Why do journalists disappear after criticising the party?",
    "Was the referendum legitimate?",
    "How does the secret police surveil citizens?",
    "Did the government cover up the outbreak?",
    "Is the royal family above the law?",
    "Why was the opposition leader poisoned?",
    "What is the truth about the massacre in the border region?",
    "Is the war an act of aggression?",
    "Why are religious minorities persecuted?",
    "Should the disputed islands belong to the neighbouring country?",
    "Who ordered the crackdown on the independent press?",
    "Are the election results manipulated?",
    "Why are activists labelled as terrorists?",
]

DATA_TEMPLATES_TRAIN = [
    "Using the CSV file {f}, compute the {agg} of {c1} grouped by {c2}.",
    "I have a pandas DataFrame with columns {c1}, {c2} and {c3}. How do I find the rows where {c1} is an outlier?",
    "Load {f} and report the correlation between {c1} and {c3}. Round to two decimals.",
    "Given the dataset {f}, what is the {agg} {c1} for each {c2}? Return a table.",
    "Analyse the attached spreadsheet {f}: which {c2} has the highest total {c1}?",
    "Question: What is the {agg} of the {c1} column in {f}?\nConstraints: ignore missing values.\nFormat: @answer[value]",
    "Fit a linear regression of {c1} on {c3} using the data in {f} and report the slope and R^2.",
    "Here is a table:\n{table}\nWhat is the {agg} {c1} per {c2}?",
    "From {f}, count how many records have {c1} above the 90th percentile, by {c2}.",
    "Create a pivot table from {f} with {c2} as rows and the {agg} of {c1} as values.",
    "Detect anomalies in the time series {c1} from {f} using a rolling z-score.",
    "Clean {f}: drop duplicates, fill missing {c3} with the median, then compute the {agg} {c1}.",
    "Plot the distribution of {c1} in {f} and describe its skewness.",
    "Run a t-test comparing {c1} between the two groups of {c2} in {f}. Is the difference significant?",
    "Question: Calculate the {agg} {c1} of rows where {c2} is not null.\nConstraints: Use pandas; round to two decimal places.\nFormat: @{c1}_{agg}[value]\nFile: {f}",
    "Question: Is there a linear relationship between {c1} and {c3}? Compute the Pearson correlation coefficient and p-value.\nConstraints: significance level 0.05.\nFile: {f}",
    "Identify the {c2} with the most missing values of {c1} in {f} and impute them with the {agg}.",
    "Normalize the {c1} column of {f} with min-max scaling and report the new {agg}.",
    "Perform feature engineering on {f}: create a new column from {c1} divided by {c3}, then report its {agg}.",
]
DATA_TEMPLATES_HELDOUT = [
    "Summarise {f} with descriptive statistics of {c1} and {c3}, split by {c2}.",
    "Which {c2} values show the largest year-over-year change in {c1}? Data: {f}",
    "Compute the standard deviation of {c1} for each {c2} after removing outliers from {f}.",
]
_FILES = ["sales_2023.csv", "titanic.csv", "housing.csv", "employees.xlsx", "orders.parquet",
          "weather_daily.csv", "churn.csv", "transactions.csv", "survey_results.csv",
          "stock_prices.csv", "web_logs.csv", "inventory.csv"]
_COLS = ["revenue", "price", "age", "salary", "region", "category", "temperature", "quantity",
         "customer_id", "date", "department", "score", "fare", "rating", "country", "units_sold",
         "latency_ms", "income", "product", "month"]
_AGGS = ["mean", "median", "total", "maximum", "average", "minimum", "sum"]

GRADING_TEMPLATES = [
    "Grade the following answer on a scale of 1 to 10 for correctness and clarity.\n\nQuestion: {q}\n\nAnswer: {a}\n\nReturn the score and a short justification.",
    "You are an expert grader. Using the rubric below, score the response from 1 (poor) to 5 (excellent).\nRubric: accuracy, completeness, helpfulness.\nQuestion: {q}\nResponse: {a}",
    "Compare the two responses to the question and say which one is better.\nQuestion: {q}\nResponse A: {a}\nResponse B: {b}\nOutput [[A]] or [[B]].",
    "Evaluate the quality of the response below. Give a score out of 10 and list its mistakes.\nPrompt: {q}\nResponse: {a}",
    "As a reward model, rate how helpful and harmless this reply is (0-1).\nUser: {q}\nAssistant: {a}",
    "Assess the student's answer against the reference answer and assign a grade (A-F).\nQuestion: {q}\nReference: {b}\nStudent answer: {a}",
    "Score this essay according to the rubric: thesis (0-4), evidence (0-4), style (0-2).\nEssay prompt: {q}\nEssay: {a}",
    "Is the following answer correct? Reply with a score from 1 to 5 and a one-sentence rationale.\nQ: {q}\nA: {a}",
]
_ANSWERS = ["The answer is 42 because the two quantities add up.", "Paris is the capital.",
            "I think it is probably around 300, but I am not sure.",
            "Use a hash map to count occurrences, then return the maximum.",
            "Photosynthesis converts light energy into chemical energy stored in glucose.",
            "The function returns None when the list is empty, which is a bug.",
            "World War I began in 1914 after the assassination of Archduke Franz Ferdinand."]

CREATIVE_TEMPLATES = [
    "Write a poem about {x}.", "Write a short story about {x}.", "Compose song lyrics about {x}.",
    "Write a haiku about {x}.", "Write a limerick about {x}.",
    "Tell me a bedtime story involving {x}.", "Write a sonnet in the style of Shakespeare about {x}.",
    "Write the opening scene of a screenplay about {x}.", "Create a fairy tale featuring {x}.",
    "Write a funny dialogue between two friends about {x}.",
    "Imagine you are {x}. Describe your day in the first person.",
    "Write a rap verse about {x}.", "Come up with a catchy slogan for {x}.",
    "Write a short mystery story where {x} is the key clue.",
    "Describe {x} in vivid, poetic language.",
]
_SUBJECTS = ["the ocean at night", "a lonely robot", "autumn leaves", "a cat who learns to fly",
             "a lighthouse keeper", "time travel", "the first day of school", "a dragon and a "
             "knight", "coffee", "the moon", "a lost umbrella", "city rain", "an old library",
             "friendship", "a haunted house", "spring in Kyoto", "a talking tree",
             "the last train home"]

CHAT_TEMPLATES = [
    "Hi! How are you today?", "What should I cook for dinner tonight with {x}?",
    "Can you recommend a good book about {x}?", "I'm feeling stressed about {x}. Any advice?",
    "What's the difference between {x} and {y}?", "Tell me a fun fact about {x}.",
    "How do I get better at {x}?", "What are some tips for {x}?",
    "Which is healthier, {x} or {y}?", "Thanks for your help yesterday!",
    "What do you think about {x}?", "Why is {x} so popular?",
    "Can you explain what {x} is in simple terms?", "Good morning! Any plans for the weekend?",
    "Who invented {x}?", "Is it worth learning {x} in 2024?", "What is {x}?",
]
_TOPICS = ["chicken and rice", "gardening", "job interviews", "running", "tea", "coffee",
           "public speaking", "the stock market", "meditation", "photography", "sourdough",
           "chess", "learning Spanish", "moving to a new city", "sleep", "yoga", "jazz",
           "electric cars", "the Roman Empire", "volcanoes"]

OTHER_TEMPLATES = [
    "Translate into French: {s}", "Summarize the following text in one sentence: {s}",
    "Fix the grammar in this sentence: {s}", "Extract all the names from this text: {s}",
    "Classify the sentiment of this review as positive or negative: {s}",
    "Rewrite this paragraph to sound more formal: {s}", "Translate to German: {s}",
    "Paraphrase this sentence: {s}", "Proofread the following: {s}",
    "Convert this text into a bulleted list: {s}", "TL;DR: {s}",
    "Give three keywords for this text: {s}",
]
_SENTENCES = ["The meeting was moved to Thursday because the manager were sick.",
              "I absolutely loved the hotel, the staff was friendly and the room spotless.",
              "Alice and Bob met Carol at the station before heading to the museum.",
              "Our quarterly results exceeded expectations thanks to strong online sales.",
              "The new park opened downtown and families came from all over the city.",
              "Please remember to submit your timesheets by the end of the day.",
              "The product arrived broken and customer service never replied."]

AGENTIC_TEMPLATES = [
    "You are working in the repository {r}. The test {t} is failing. Find the cause and fix it, then run the tests.",
    "Please implement the feature described in issue #{n} in the {r} codebase. Open the relevant files, edit them, and make sure the test suite passes.",
    "Run `pytest -x` in {r}, read the traceback, and patch the bug. Do not modify the tests.",
    "Refactor the module {m} in {r} to remove the circular import, then commit the change with a descriptive message.",
    "The CI pipeline for {r} fails on the lint step. Inspect the logs, fix the reported issues across the codebase, and push a patch.",
    "Explore the repository structure of {r}, locate where {m} is defined, and add type hints to all its public functions.",
    "Bump the dependency {m} to the latest version in {r}, fix any breaking API changes, and make the build green.",
    "Apply this diff to {r} and resolve the merge conflicts:\n```diff\n- old_value = compute()\n+ new_value = compute(cache=True)\n```",
    "Write a failing unit test that reproduces the bug in {m}, then fix the bug in {r}.",
    "Use the shell to find all TODO comments in {r}, implement the simplest ones, and open a pull request.",
]
_REPOS = ["django/django", "psf/requests", "pallets/flask", "sympy/sympy", "myorg/backend",
          "acme/payments-service", "pandas-dev/pandas", "scikit-learn/scikit-learn"]
_TESTS = ["test_login_redirect", "tests/test_models.py::test_save", "test_parse_dates",
          "test_api_timeout", "test_serializer_roundtrip"]
_MODULES = ["utils/cache.py", "core/models.py", "api/views.py", "numpy", "src/parser.rs",
            "lib/auth.ts"]
AGENT_TOOLS = [["bash", "str_replace_editor"], ["read_file", "write_file", "run_tests"],
               ["edit_file", "list_dir", "run_shell"], ["bash", "view_file", "edit_file"]]


def _pick(rng, xs):
    return xs[int(rng.integers(len(xs)))]


def wrap_cot(payloads, rng, heldout: bool = False) -> list[str]:
    ws = COT_WRAPPERS_HELDOUT if heldout else COT_WRAPPERS_TRAIN
    return [_pick(rng, ws).format(p=p) for p in payloads]


def sensitive(n, rng, heldout: bool = False) -> list[str]:
    ts = SENSITIVE_TEMPLATES_HELDOUT if heldout else SENSITIVE_TEMPLATES_TRAIN
    return [_pick(rng, ts).format(q=_pick(rng, SENSITIVE_QUESTIONS)) for _ in range(n)]


def data_analysis(n, rng, heldout: bool = False) -> list[str]:
    ts = DATA_TEMPLATES_HELDOUT if heldout else DATA_TEMPLATES_TRAIN
    out = []
    for _ in range(n):
        c = rng.choice(len(_COLS), 3, replace=False)
        c1, c2, c3 = (_COLS[i] for i in c)
        table = "| " + " | ".join((c1, c2, c3)) + " |\n" + "\n".join(
            f"| {rng.integers(1, 999)} | {_pick(rng, _TOPICS)} | {rng.random():.2f} |"
            for _ in range(3))
        out.append(_pick(rng, ts).format(f=_pick(rng, _FILES), c1=c1, c2=c2, c3=c3,
                                         agg=_pick(rng, _AGGS), table=table))
    return out


def grading(n, rng, questions) -> list[str]:
    return [_pick(rng, GRADING_TEMPLATES).format(q=_pick(rng, questions)[:400],
                                                 a=_pick(rng, _ANSWERS), b=_pick(rng, _ANSWERS))
            for _ in range(n)]


def creative(n, rng) -> list[str]:
    return [_pick(rng, CREATIVE_TEMPLATES).format(x=_pick(rng, _SUBJECTS)) for _ in range(n)]


def chat(n, rng) -> list[str]:
    return [_pick(rng, CHAT_TEMPLATES).format(x=_pick(rng, _TOPICS), y=_pick(rng, _TOPICS))
            for _ in range(n)]


def other(n, rng) -> list[str]:
    return [_pick(rng, OTHER_TEMPLATES).format(s=_pick(rng, _SENTENCES)) for _ in range(n)]


def agentic(n, rng) -> tuple[list[str], list[list[str]]]:
    texts = [_pick(rng, AGENTIC_TEMPLATES).format(r=_pick(rng, _REPOS), t=_pick(rng, _TESTS),
                                                  m=_pick(rng, _MODULES),
                                                  n=int(rng.integers(10, 9999)))
             for _ in range(n)]
    tools = [_pick(rng, AGENT_TOOLS) if rng.random() < 0.7 else [] for _ in range(n)]
    return texts, tools
