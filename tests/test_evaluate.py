"""Evaluation figures on hand-made frames whose answers are known by construction."""

from __future__ import annotations

import json
import math
import sys
import types

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from distillguard.errors import ConfigError, InputError
from distillguard.evaluate import (
    EvalResult, cluster_figures, evaluate, evaluate_frames, load_predictions, load_truth,
    recall_at_fpr,
)


def _pred(ids, scores, verdicts, clusters=None):
    return pl.DataFrame({"account_id": ids, "score": scores, "verdict": verdicts,
                         "cluster_id": clusters or [None] * len(ids),
                         "reasons": [""] * len(ids)}, schema_overrides={"cluster_id": pl.String})


def _truth(ids, labels, campaigns=None, segments=None):
    d = {"account_id": ids, "label": labels,
         "campaign": campaigns or [None] * len(ids)}
    if segments:
        d["segment"] = segments
    return pl.DataFrame(d, schema_overrides={"campaign": pl.String})


# 4 attacks (campaigns A, A, B, B), 6 benign (segments x, x, x, y, y, y)
IDS = [f"a{i}" for i in range(10)]
LABELS = ["attack"] * 4 + ["benign"] * 6
CAMPAIGNS = ["A", "A", "B", "B"] + [None] * 6
SEGMENTS = ["campaign_a", "campaign_a", "campaign_b", "campaign_b", "x", "x", "x", "y", "y", "y"]
TRUTH = _truth(IDS, LABELS, CAMPAIGNS, SEGMENTS)


def test_perfect_ranking_and_verdicts():
    scores = [0.9, 0.8, 0.95, 0.7, 0.1, 0.2, 0.3, 0.0, 0.05, 0.6]
    verdicts = ["attack"] * 4 + ["benign"] * 6
    m = evaluate_frames(_pred(IDS, scores, verdicts, ["c1", "c1", "c2", "c2"] + [None] * 6),
                        TRUTH)
    assert m["auprc"] == 1.0 and m["roc_auc"] == 1.0
    assert (m["precision"], m["recall"], m["f1"]) == (1.0, 1.0, 1.0)
    assert m["recall_at_0.1pct_fpr"] == 1.0 and m["recall_at_1pct_fpr"] == 1.0
    assert m["cluster_purity"] == 1.0 and m["cluster_ari"] == 1.0
    assert m["n_accounts"] == 10 and m["n_attack"] == 4 and m["benign_fpr"] == 0.0


def test_counts_per_campaign_and_segment():
    # attack verdicts: a0 (A), a2 (B), a4 (x: FP), a7 (y: FP); a5 suspicious (x)
    verdicts = ["attack", "benign", "attack", "suspicious", "attack", "suspicious", "benign",
                "attack", "benign", "benign"]
    scores = [0.9, 0.1, 0.8, 0.5, 0.85, 0.5, 0.1, 0.7, 0.1, 0.1]
    m = evaluate_frames(_pred(IDS, scores, verdicts), TRUTH)
    assert m["precision"] == pytest.approx(2 / 4)
    assert m["recall"] == pytest.approx(2 / 4)
    assert m["f1"] == pytest.approx(0.5)
    assert m["benign_fpr"] == pytest.approx(2 / 6)
    assert m["campaigns"]["A"]["recall"] == 0.5 and m["campaigns"]["A"]["n"] == 2
    assert m["campaigns"]["B"]["recall"] == 0.5 and m["campaigns"]["B"]["flagged"] == 1.0
    assert m["segments"]["x"]["fpr"] == pytest.approx(1 / 3)
    assert m["segments"]["x"]["suspicious_rate"] == pytest.approx(1 / 3)
    assert m["segments"]["y"]["fpr"] == pytest.approx(1 / 3)
    assert m["worst_segment_fpr"] == pytest.approx(1 / 3)


def test_recall_at_fpr_ties():
    # 1000 benign: one at 0.9, ten tied at 0.5, the rest 0; attacks at 0.95, 0.9, 0.6, 0.5
    benign = np.r_[0.9, np.full(10, 0.5), np.zeros(989)]
    y = np.r_[np.ones(4, bool), np.zeros(1000, bool)]
    s = np.r_[[0.95, 0.9, 0.6, 0.5], benign]
    # 0.1% -> k = 1 benign allowed: threshold = 2nd highest benign = 0.5, flag s > 0.5
    r, achieved, thr = recall_at_fpr(y, s, 0.001)
    assert (r, achieved, thr) == (0.75, 0.001, 0.5)
    # 1% -> k = 10: the 11th highest benign is still 0.5 (tie): same threshold, FPR stays 0.1%
    r, achieved, thr = recall_at_fpr(y, s, 0.01)
    assert (r, achieved, thr) == (0.75, 0.001, 0.5)
    # 5% -> k = 50: threshold 0, everything above 0 flagged
    r, achieved, _ = recall_at_fpr(y, s, 0.05)
    assert r == 1.0 and achieved == pytest.approx(11 / 1000)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.integers(0, 6)), min_size=2, max_size=60),
       st.sampled_from([0.001, 0.01, 0.1, 0.3]))
def test_recall_at_fpr_is_best_feasible_threshold(pairs, fpr):
    y = np.array([p[0] for p in pairs])
    s = np.array([p[1] / 6 for p in pairs])
    r, achieved, _ = recall_at_fpr(y, s, fpr)
    if (~y).any():
        assert achieved <= fpr + 1e-12
    # brute force over every strict threshold
    best = -1.0
    for t in np.r_[-np.inf, np.unique(s)]:
        if (~y).any() and (s[~y] > t).mean() > fpr + 1e-12:
            continue
        best = max(best, (s[y] > t).mean() if y.any() else math.nan)
    if y.any():
        assert r == pytest.approx(best)
    else:
        assert math.isnan(r)


def test_cluster_figures_known_ari():
    camp = pl.Series(["A", "A", "A", "B", "B", "B"])
    ids = pl.Series([f"x{i}" for i in range(6)])
    # one cluster with everything: purity 1/2, ARI 0
    f = cluster_figures(pl.Series(["k"] * 6), camp, ids)
    assert f["cluster_purity"] == 0.5 and f["cluster_ari"] == pytest.approx(0.0)
    # all unclustered -> singletons: purity 1, ARI 0, nobody clustered
    f = cluster_figures(pl.Series([None] * 6, dtype=pl.String), camp, ids)
    assert f["cluster_purity"] == 1.0 and f["cluster_ari"] == pytest.approx(0.0)
    assert f["clustered_share"] == 0.0
    # {A,A},{A,B},{B,B} against {A,A,A},{B,B,B}: purity 5/6, ARI as sklearn computes it
    from sklearn.metrics import adjusted_rand_score
    f = cluster_figures(pl.Series(["p", "p", "q", "q", "r", "r"]), camp, ids)
    assert f["cluster_ari"] == pytest.approx(
        adjusted_rand_score([0, 0, 0, 1, 1, 1], [0, 0, 1, 1, 2, 2]))
    assert f["cluster_purity"] == pytest.approx(5 / 6)


def test_benign_in_attack_clusters():
    clusters = ["c1", "c1", None, None, "c1", "c2", None, None, None, None]
    m = evaluate_frames(_pred(IDS, [0.5] * 10, ["benign"] * 10, clusters), TRUTH)
    assert m["benign_in_attack_clusters"] == 1   # a4 shares c1; c2 has no attack account
    assert m["clustered_share"] == 0.5


def test_undefined_figures_are_nan_and_json_null():
    t = _truth(["a", "b"], ["benign", "benign"])
    m = evaluate_frames(_pred(["a", "b"], [0.1, 0.2], ["benign", "benign"]), t)
    assert math.isnan(m["auprc"]) and math.isnan(m["recall"])
    d = json.loads(EvalResult(metrics=m).to_json())
    assert d["metrics"]["auprc"] is None


def test_missing_account_is_error():
    with pytest.raises(InputError, match="missing from predictions"):
        evaluate_frames(_pred(IDS[:-1], [0.1] * 9, ["benign"] * 9), TRUTH)


def test_extra_predicted_accounts_counted():
    m = evaluate_frames(_pred(IDS + ["zz"], [0.1] * 11, ["benign"] * 11), TRUTH)
    assert m["n_unlabeled"] == 1 and m["n_accounts"] == 10


# --------------------------------------------------------------------------- files


def _write(tmp_path, accounts_csv: str, truth_csv: str):
    out = tmp_path / "det"
    out.mkdir()
    (out / "accounts.csv").write_text(accounts_csv)
    truth = tmp_path / "truth.csv"
    truth.write_text(truth_csv)
    return out, truth


GOOD = ("account_id,score,verdict,cluster_id,reasons\n"
        "a,0.9,attack,c1,volume;template\n"
        "b,0.8,attack,c1,\n"
        "c,0.1,benign,,\n"
        "d,0.4,suspicious,,\n")
TRUTH_CSV = ("account_id,label,campaign,segment,variant\n"
             "a,attack,campaign_a,campaign_a,\n"
             "b,attack,campaign_a,campaign_a,\n"
             "c,benign,,power_user,\n"
             "d,benign,,eval_company,\n")


def test_evaluate_files_and_render(tmp_path):
    out, truth = _write(tmp_path, GOOD, TRUTH_CSV)
    res = evaluate(out, truth)
    assert res.metrics["auprc"] == 1.0
    assert res.metrics["segments"]["eval_company"]["suspicious_rate"] == 1.0
    res.baselines["volume"] = dict(res.metrics, auprc=0.25)
    text = res.render()
    assert "AUPRC" in text and "volume" in text and "0.250" in text
    assert "eval_company" in text and "campaign_a" in text
    d = json.loads(res.to_json())
    assert d["baselines"]["volume"]["auprc"] == 0.25
    assert d["metrics"]["campaigns"]["campaign_a"]["recall"] == 1.0


def test_labels_csv_without_segment(tmp_path):
    out, truth = _write(tmp_path, GOOD, "account_id,label,campaign\na,attack,A\nb,attack,\n"
                                        "c,benign,\nd,benign,\n")
    t = load_truth(truth)
    assert t["segment"].to_list() == ["A", "attack", "benign", "benign"]
    res = evaluate(out, truth)
    assert set(res.metrics["campaigns"]) == {"A", "attack"}
    assert set(res.metrics["segments"]) == {"benign"}


@pytest.mark.parametrize("body, field, row", [
    ("a,abc,attack,,\n", "score", 1),
    ("a,0.5,attack,,\nb,1.5,benign,,\n", "score", 2),
    ("a,0.5,attack,,\nb,0.5,nope,,\n", "verdict", 2),
    ("a,0.5,attack,,\na,0.5,benign,,\n", "account_id", 2),
    ("a,,attack,,\n", "score", 1),
])
def test_bad_predictions(tmp_path, body, field, row):
    out, _ = _write(tmp_path, "account_id,score,verdict,cluster_id,reasons\n" + body, TRUTH_CSV)
    with pytest.raises(InputError) as err:
        load_predictions(out)
    assert err.value.field == field and err.value.row == row
    assert "accounts.csv" in str(err.value)


def test_missing_column_and_missing_account(tmp_path):
    out, truth = _write(tmp_path, "account_id,score\na,0.5\n", TRUTH_CSV)
    with pytest.raises(InputError, match="verdict"):
        evaluate(out, truth)
    (out / "accounts.csv").write_text(GOOD.rsplit("\n", 2)[0] + "\n")   # drop d
    with pytest.raises(InputError) as err:
        evaluate(out, truth)
    assert "accounts.csv" in str(err.value) and "d" in str(err.value)


def test_bad_truth_label(tmp_path):
    out, truth = _write(tmp_path, GOOD, "account_id,label\na,attack\nb,evil\n")
    with pytest.raises(InputError) as err:
        evaluate(out, truth)
    assert err.value.field == "label" and err.value.row == 2 and "truth.csv" in str(err.value)


def test_baselines_need_log(tmp_path):
    out, truth = _write(tmp_path, GOOD, TRUTH_CSV)
    with pytest.raises(ConfigError):
        evaluate(out, truth, baselines=True)


def test_baselines_run_on_log(tmp_path, monkeypatch):
    """With a stand-in reader, every baseline is graded on the same truth."""
    from distillguard.schema import EVENT_SCHEMA, conform
    import datetime as dt

    t0 = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
    ev = conform(pl.DataFrame({
        "account_id": ["a"] * 50 + ["b"] * 40 + ["c", "d"],
        "ts": [t0 + dt.timedelta(minutes=i) for i in range(92)],
        "ip": ["1.1.1.1"] * 90 + ["2.2.2.2", "3.3.3.3"],
    }), EVENT_SCHEMA)
    fake = types.ModuleType("distillguard.read")
    fake.read_log = lambda paths, accounts=None: types.SimpleNamespace(
        events=ev.lazy(), accounts=pl.DataFrame({"account_id": ["a", "b", "c", "d"]}))
    monkeypatch.setitem(sys.modules, "distillguard.read", fake)
    out, truth = _write(tmp_path, GOOD, TRUTH_CSV)
    res = evaluate(out, truth, baselines=True, log_paths=[tmp_path / "events"])
    assert set(res.baselines) == {"volume", "iforest", "fraudar"}
    assert res.baselines["volume"]["auprc"] == 1.0   # a, b have the highest daily volume
    assert "fraudar" in res.render()


def test_quality_bench_markdown_keeps_splits_apart(monkeypatch):
    """bench/quality.py renders train and held-out runs in separate sections."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "bench" / "quality.py"
    spec = importlib.util.spec_from_file_location("dg_quality_bench", path)
    q = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, q)   # dataclasses look their module up
    spec.loader.exec_module(q)
    m = evaluate_frames(_pred(IDS, [0.9, 0.8, 0.95, 0.7] + [0.1] * 6,
                              ["attack"] * 4 + ["benign"] * 6), TRUTH)
    runs = [q.Run("train", "demo", 0, {"distillguard": m, "volume": dict(m, auprc=0.5)}),
            q.Run("held-out", "variant-stealth", 100, error="RuntimeError: detect failed")]
    text = q.render(runs, ["a note"], types.SimpleNamespace(scale=1.0))
    train, held = text.split("## Held-out")
    assert "## Train" in train and "| volume | 0.500 |" in train and "campaign_a" not in train
    assert "| A |" in train and "FAILED: RuntimeError: detect failed" in held
    assert "0 of 1 runs completed" in held
