"""End-to-end: simulate → detect → outputs per contract §2, on a small demo log."""

from __future__ import annotations

import json

import polars as pl
import pytest
from click.testing import CliRunner

from distillguard.cli import cli
from distillguard.detect import detect
from distillguard.simulate import simulate


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    d = tmp_path_factory.mktemp("sim")
    simulate("demo", scale=0.3, seed=11, out=d)
    return d


@pytest.fixture(scope="module")
def det(sim, tmp_path_factory):
    out = tmp_path_factory.mktemp("det")
    res = detect([sim / "events"], accounts=sim / "accounts.csv",
                 releases=sim / "releases.csv", out=out)
    return out, res


def test_outputs_follow_the_contract(sim, det):
    out, res = det
    acc = pl.read_csv(out / "accounts.csv", schema_overrides={"cluster_id": pl.String,
                                                             "reasons": pl.String})
    assert acc.columns == ["account_id", "score", "verdict", "cluster_id", "reasons"]
    truth = pl.read_csv(sim / "truth.csv")
    assert set(acc["account_id"]) == set(truth["account_id"])  # every account, dormant too
    assert acc["account_id"].is_unique().all()
    assert acc["score"].is_between(0, 1).all()
    assert set(acc["verdict"]) <= {"attack", "suspicious", "benign"}
    clusters = json.loads((out / "clusters.json").read_text())
    assert isinstance(clusters, list) and clusters
    for c in clusters:
        for key in ("cluster_id", "accounts", "score", "verdict", "exchanges", "first_seen",
                    "last_seen", "capabilities", "evidence"):
            assert key in c
        members = acc.filter(pl.col("cluster_id") == c["cluster_id"])["account_id"]
        assert sorted(members) == sorted(c["accounts"])
    html = (out / "report.html").read_text()
    assert "<html" in html and "http://" not in html and "https://" not in html
    assert res.mode in ("learned", "rules")


def test_detection_finds_the_campaigns_on_an_unseen_seed(sim, det):
    out, _ = det
    acc = pl.read_csv(out / "accounts.csv").join(pl.read_csv(sim / "truth.csv"), on="account_id")
    att = acc.filter(pl.col("label") == "attack")
    ben = acc.filter(pl.col("label") == "benign")
    recall = (att["verdict"] == "attack").mean()
    fpr = (ben["verdict"] == "attack").mean()
    assert recall >= 0.8, recall
    assert fpr <= 0.01, fpr
    # attack accounts of one campaign mostly share one cluster
    top = (att.group_by("campaign").agg(pl.col("cluster_id").drop_nulls().mode().first()
                                        .alias("c"), pl.len()))
    assert top["c"].null_count() == 0


def test_a_log_without_attacks_gives_a_calm_report(sim, tmp_path):
    truth = pl.read_csv(sim / "truth.csv")
    benign = truth.filter(pl.col("label") == "benign")["account_id"]
    ev = pl.read_parquet(sim / "events").filter(pl.col("account_id").is_in(benign.implode()))
    (tmp_path / "events").mkdir()
    ev.write_parquet(tmp_path / "events" / "part-0.parquet")
    out = tmp_path / "det"
    res = detect([tmp_path / "events"], releases=sim / "releases.csv", out=out)
    clusters = json.loads((out / "clusters.json").read_text())
    assert not [c for c in clusters if c["verdict"] == "attack"]
    assert res.verdicts.get("attack", 0) <= 0.01 * res.n_accounts
    html = (out / "report.html").read_text()
    # suspicious (review) is allowed at its fitted ~1% benign rate; an alert banner is not
    assert 'class="banner alert"' not in html
    assert 'class="banner calm"' in html or 'class="banner warn"' in html


def test_detect_cli_bad_input_exits_2_without_traceback(tmp_path):
    bad = tmp_path / "log.jsonl"
    bad.write_text('{"ts": "2026-02-01T00:00:00Z", "account_id": "a", "prompt": "hi"}\n'
                   '{"ts": "yesterday", "account_id": "b", "prompt": "hi"}\n')
    r = CliRunner().invoke(cli, ["detect", str(bad), "--out", str(tmp_path / "o")])
    assert r.exit_code == 2
    assert "log.jsonl:2" in r.output and "ts" in r.output
    assert "Traceback" not in r.output


def test_tiny_log_with_no_clusters(tmp_path):
    log = tmp_path / "log.jsonl"
    log.write_text("".join(
        f'{{"ts": {1767225600 + i * 60}, "account_id": "acct{i % 3}", "prompt": "hello {i}"}}\n'
        for i in range(30)))
    res = detect([log], out=tmp_path / "o")
    assert res.n_accounts == 3 and res.n_clusters == 0
    acc = pl.read_csv(tmp_path / "o" / "accounts.csv")
    assert acc.height == 3


def test_detect_cli_profile_prints_stage_table(sim, tmp_path):
    r = CliRunner().invoke(cli, ["detect", str(sim / "events"), "--accounts",
                                 str(sim / "accounts.csv"), "--out", str(tmp_path / "o"),
                                 "--profile", "--quiet"])
    assert r.exit_code == 0, r.output
    text = r.output + (r.stderr if hasattr(r, "stderr") else "")
    for stage in ("read", "fingerprint", "content", "link", "cluster", "score", "report"):
        assert stage in text
    run = json.loads((tmp_path / "o" / "run.json").read_text())
    assert set(run["timings"]) >= {"read", "content", "link", "cluster"}
    # the live stage log is written next to the outputs
    log = (tmp_path / "o" / "profile.log").read_text()
    assert "start read" in log and "end report" in log


def test_results_do_not_depend_on_the_account_partitions(sim, det, tmp_path):
    out, _ = det
    res = detect([sim / "events"], accounts=sim / "accounts.csv",
                 releases=sim / "releases.csv", out=tmp_path / "p3", partitions=3)
    assert "3 account partition(s)" in (tmp_path / "p3" / "profile.log").read_text()
    assert res.n_clusters > 0
    for name in ("accounts.csv", "clusters.json"):
        assert (tmp_path / "p3" / name).read_text() == (out / name).read_text(), name
