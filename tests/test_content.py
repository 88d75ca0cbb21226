"""Content signals: task classifier and prompt-template mining."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from distillguard import corpus
from distillguard.content import (TaskClassifier, account_template_stats, cot_score,
                                  load_default, mine_templates, normalize_prompts,
                                  predict_tasks, rule_based_task, synth)
from distillguard.errors import InputError
from distillguard.schema import TASKS

CORPORA = Path("/work/shared/corpora")


@pytest.fixture(scope="module")
def model():
    m = load_default()
    assert m is not None, "shipped model file missing"
    return m


# ---------------------------------------------------------------- classifier
def test_shipped_model_header(model):
    assert set(model.classes_) == set(TASKS)
    assert model.coef_.shape == (len(TASKS), model.n_features)
    assert "training_data" in model.meta_


def test_model_file_has_no_pickle():
    from distillguard.content.classify import default_model_path

    with zipfile.ZipFile(default_model_path()) as z:
        for name in z.namelist():
            with z.open(name) as fh:
                head = fh.read(128)
            assert b"'descr': '|O'" not in head and b"'descr': 'O'" not in head, name


@pytest.mark.skipif(not (CORPORA / "distillation/mbpp_plus.jsonl").exists(),
                    reason="eval-only corpora not available")
def test_accuracy_on_never_trained_sources(model):
    # non-commercial sets: evaluation only, never trained on (docs/content.md: 0.97 / 0.97)
    for rel, label, bound in [("distillation/mbpp_plus.jsonl", "coding", 0.90),
                              ("distillation/leetcode_problems.jsonl", "coding", 0.90)]:
        texts = pl.read_ndjson(CORPORA / rel)["text"].head(300)
        acc = float((model.predict(texts) == label).mean())
        assert acc >= bound, (rel, acc)


def test_wrapper_classes_on_heldout_phrasings(model):
    rng = np.random.default_rng(7)
    problems = corpus.by_file("gsm8k_questions")["text"].head(80).to_list()
    plain = model.predict(problems)
    assert (plain == "reasoning").mean() >= 0.95
    wrapped = synth.wrap_cot(problems, rng, heldout=True)
    cs_wrapped, cs_plain = cot_score(wrapped, model), cot_score(problems, model)
    assert cs_wrapped.mean() > cs_plain.mean() + 0.3
    assert (model.predict(wrapped) == "cot_elicitation").mean() >= 0.6  # measured 0.73
    sens = synth.sensitive(60, rng, heldout=True)
    assert (model.predict(sens) == "sensitive_rewrite").mean() >= 0.9


def test_save_load_round_trip_identical(model, tmp_path):
    texts = corpus.load()["text"].sample(300, seed=3)
    p = model.save(tmp_path / "m.npz")
    again = TaskClassifier.load(p)
    assert list(again.classes_) == list(model.classes_)
    np.testing.assert_array_equal(again.predict(texts), model.predict(texts))
    np.testing.assert_allclose(again.predict_proba(texts), model.predict_proba(texts))


def test_fit_predict_small_and_roundtrip(tmp_path):
    rng = np.random.default_rng(0)
    x = synth.creative(60, rng) + synth.data_analysis(60, rng)
    y = ["creative"] * 60 + ["data_analysis"] * 60
    m = TaskClassifier(n_features=2**12, seed=0).fit(x, y)
    assert (m.predict(x) == np.array(y)).mean() > 0.95
    assert m.predict_proba(x).shape == (120, 2)
    np.testing.assert_allclose(m.predict_proba(x).sum(axis=1), 1.0, rtol=1e-5)
    m2 = TaskClassifier.load(m.save(tmp_path / "s.npz"))
    np.testing.assert_array_equal(m2.predict(x), m.predict(x))
    with pytest.raises(ValueError):
        TaskClassifier(n_features=2**10).fit(["a", "b"], ["coding", "not_a_task"])


def test_load_bad_file_is_input_error(tmp_path):
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a zip")
    with pytest.raises(InputError, match="bad.npz"):
        TaskClassifier.load(bad)
    with pytest.raises(InputError, match="not found"):
        TaskClassifier.load(tmp_path / "missing.npz")


def test_word_tokens_match_the_regex_tokens():
    """The numpy tokeniser of the word n-grams finds exactly ``str.extract_all(_WORD)``'s
    tokens, on ASCII and on multi-byte, combining, joining and space characters."""
    from distillguard.content.classify import _WORD, _word_tokens

    texts = ["", "  ", None, "Hello, world!", "under_score foo-bar 3.14 $x$ (a+b)",
             "héllo wörld İstanbul", "日本語のテキスト、句読点。", "a\u00a0b\u2003c\u3000d",
             "emoji 😀👍🏽 ok", "zw\u200dj e\u0301\u0302", "tab\tnl\nvt\x0bff\x0cfs\x1cus\x1f!",
             "\u2028\u2029\u0085nel", "١٢٣ ǅ ﬁ Ω≈ç√∫ …", "x" * 40 + "." + "é" * 30]
    rng = np.random.default_rng(0)
    alphabet = list("ab_9 .,\t\n") + ["é", "日", "\u00a0", "😀", "\u0301", "…", "\u3000"]
    texts += ["".join(rng.choice(alphabet, size=int(n))) for n in rng.integers(0, 40, 200)]
    s = pl.Series(texts, dtype=pl.String)
    counts, tlen, data = _word_tokens(s)
    ends = np.cumsum(tlen)
    got = [bytes(data[e - n:e]).decode() for e, n in zip(ends.tolist(), tlen.tolist())]
    want = s.fill_null("").str.extract_all(_WORD)
    assert counts.tolist() == want.list.len().to_list()
    assert got == want.explode().drop_nulls().to_list()


def test_rule_fallback():
    got = rule_based_task([
        "Solve step by step: 2+2", "Rewrite this politically sensitive question into a "
        "neutral version: is X a dictator?", "Write a poem about rain", "hello there",
        "Using sales.csv compute the median revenue per region", None,
    ])
    assert list(got) == ["cot_elicitation", "sensitive_rewrite", "creative", "chat",
                         "data_analysis", "chat"]


def test_predict_tasks_events(model):
    ev = pl.DataFrame({
        "prompt": ["What's the weather in Paris?", "Think step by step: 17*23?", None],
        "system": [None, None, "You are a helpful assistant."],
        "tool_names": [["get_weather"], None, []],
    }, schema={"prompt": pl.String, "system": pl.String, "tool_names": pl.List(pl.String)})
    for m in (model, None):
        out = predict_tasks(ev, m)
        assert out.height == 3 and set(out["task"]) <= set(TASKS)
        assert out["cot_score"][1] > out["cot_score"][0]
        assert out["task_base"][1] not in ("cot_elicitation", "sensitive_rewrite")
    assert predict_tasks(ev, model)["task"][0] == "tool_use"
    assert predict_tasks(ev.head(0), model).height == 0


# ---------------------------------------------------------------- templates
def test_normalize_prompts():
    s = pl.Series("p", ['Solve: "hi" it\'s 3.5 at https://x.io/a me@a.org ```py\nx=1\n```  ',
                        None, "A\n\n  B 1,000"])
    assert normalize_prompts(s).to_list() == [
        "solve: <str> it's <num> at <url> <email> <code>", "", "a b <num>"]


def _campaign_frame():
    probs = corpus.by_file("gsm8k_questions")["text"].head(120).to_list()
    chat = corpus.by_file("alpaca_eval_instructions")["text"].head(150).to_list()
    rows = [("a1", "Solve step by step and show your reasoning: " + p) for p in probs[:40]]
    rows += [("a2", "Please solve step by step and show all your reasoning: " + p)
             for p in probs[40:80]]  # paraphrased variant of the same wrapper
    rows += [("a3", p + "\n\nThink step by step and explain your reasoning before answering.")
             for p in probs[80:120]]
    rows += [("b1", p) for p in chat]
    rows += [("e1", "What is the capital of France?")] * 25  # verbatim replay
    return pl.DataFrame(rows, schema=["account_id", "prompt"], orient="row")


def test_whitespace_runs_pattern_equals_every_run():
    """Replacing the whitespace runs other than a lone space gives the text that replacing
    every ``\\s+`` run gives (normalize_prompts and the classifier rely on it)."""
    from distillguard.content.templates import WS_RUNS

    rng = np.random.default_rng(1)
    alphabet = [" ", " ", "\t", "\n", "\u00a0", "\u3000", "\u2028", "a", "b", "é", "."]
    texts = ["".join(rng.choice(alphabet, size=int(n))) for n in rng.integers(0, 30, 500)]
    s = pl.Series(texts + ["", " ", "a b", " a  b ", None], dtype=pl.String)
    assert s.str.replace_all(WS_RUNS, " ").equals(s.str.replace_all(r"\s+", " "))
    assert (s.str.replace_all(WS_RUNS, " ") != s).any()


def test_mine_templates_groups_wrappers_and_keeps_unrelated_apart():
    df = _campaign_frame()
    df = df.with_columns(mine_templates(df, seed=0))
    per = df.group_by("account_id").agg(pl.col("template_id").n_unique().alias("k"),
                                        pl.col("template_id").first().alias("t"))
    k = dict(per.select("account_id", "k").iter_rows())
    t = dict(per.select("account_id", "t").iter_rows())
    assert k["a1"] == 1 and k["a2"] == 1 and k["a3"] == 1 and k["e1"] == 1
    assert t["a1"] == t["a2"]  # paraphrase variants share a template
    assert t["a1"] != t["a3"]  # a suffix wrapper is a different skeleton
    # unrelated casual prompts: almost all distinct, none joins a campaign template
    b = df.filter(pl.col("account_id") == "b1")["template_id"]
    assert b.n_unique() >= 0.85 * len(b)
    # (a maths word problem in the chat set may join via a shared payload tail: known limit)
    assert b.is_in([t["a1"], t["a3"], t["e1"]]).sum() <= 2


def test_mine_templates_deterministic_and_edge_cases():
    df = _campaign_frame()
    a = mine_templates(df, seed=0)
    assert a.dtype == pl.Int64 and a.len() == df.height and a.null_count() == 0
    assert a.equals(mine_templates(df, seed=0))
    assert mine_templates(df.head(0)).len() == 0
    one = pl.DataFrame({"prompt": [None, "", "x"]}, schema={"prompt": pl.String})
    r = mine_templates(one)
    assert r[0] == r[1] and r[2] != r[0]


def test_mine_templates_chunking_does_not_change_ids(monkeypatch):
    from distillguard.content import templates

    df = pl.concat([_campaign_frame(), pl.DataFrame(
        {"prompt": [None, "", "<num>", "a " * 40, "a " * 41, "¿qué? " * 3]},
        schema={"prompt": pl.String})], how="diagonal")
    whole = mine_templates(df, seed=0)
    monkeypatch.setattr(templates, "_CHUNK", 3)
    assert mine_templates(df, seed=0).equals(whole)


def test_account_template_stats():
    df = _campaign_frame().with_columns(mine_templates(_campaign_frame()))
    shared = df.filter(pl.col("account_id") == "a1").with_columns(
        pl.lit("a9").alias("account_id"))
    st = account_template_stats(pl.concat([df, shared]), k=5, m=1)
    row = {r["account_id"]: r for r in st.iter_rows(named=True)}
    assert row["a1"]["template_reuse_share"] == 1.0 and row["a1"]["top_template_share"] == 1.0
    assert row["a1"]["cross_account_templates"] == 1  # a2 and a9 share it
    assert row["e1"]["n_templates"] == 1 and row["e1"]["cross_account_templates"] == 0
    assert row["b1"]["template_reuse_share"] < 0.3
    assert row["b1"]["n_prompts"] == 150 and len(row["b1"]["template_ids"]) == \
        row["b1"]["n_templates"]
