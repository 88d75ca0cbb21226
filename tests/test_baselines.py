"""Peer baselines on a small synthetic log with one obvious coordinated block."""

from __future__ import annotations

import datetime as dt

import numpy as np
import polars as pl
import pytest

from distillguard.baselines import BASELINES, run_all, run_fraudar, run_iforest, run_volume
from distillguard.baselines.fraudar import peel
from distillguard.schema import ACCOUNT_SCHEMA, ACCOUNTS_OUT_COLUMNS, EVENT_SCHEMA, conform

N_BENIGN, N_RING, GIANT = 200, 20, "giant"


def _log(seed: int = 0) -> tuple[pl.LazyFrame, pl.DataFrame]:
    """200 independent benign accounts, one giant-volume benign-looking account, and a ring
    of 20 accounts sharing 4 IPs, one /24, one payment fingerprint and one client."""
    rng = np.random.default_rng(seed)
    t0 = dt.datetime(2026, 1, 5, tzinfo=dt.timezone.utc)
    rows = []
    accounts = []
    for i in range(N_BENIGN):
        a = f"b{i:03d}"
        accounts.append((a, f"pay-{a}", "gmail.com"))
        for _ in range(int(rng.integers(3, 15))):
            rows.append((a, t0 + dt.timedelta(hours=float(rng.uniform(0, 24 * 7))),
                         f"10.{i}.{rng.integers(0, 3)}.1", f"10.{i}.{rng.integers(0, 3)}",
                         f"key-{a}", f"ua-{i % 50}", f"tls-{i % 7}",
                         int(rng.integers(50, 2000)), int(rng.integers(50, 1500))))
    accounts.append((GIANT, "pay-giant", "bigcorp.com"))
    for k in range(3000):
        rows.append((GIANT, t0 + dt.timedelta(seconds=60 * k), "8.8.8.8", "8.8.8",
                     "key-giant", "ua-giant", "tls-giant", 800, 600))
    for i in range(N_RING):
        a = f"r{i:02d}"
        accounts.append((a, "pay-ring", f"ring{i}.example"))
        for k in range(10):
            ip = int(rng.integers(0, 4))
            rows.append((a, t0 + dt.timedelta(hours=float(rng.uniform(0, 48))),
                         f"203.0.113.{ip}", "203.0.113", f"key-{a}-{k % 2}", "python-ring",
                         "tls-ring", 400, 4096))
    ev = pl.DataFrame(rows, schema=["account_id", "ts", "ip", "ip_prefix", "api_key_id",
                                    "user_agent", "tls_fingerprint", "input_tokens",
                                    "output_tokens"], orient="row")
    ev = conform(ev.with_columns(max_tokens=pl.lit(4096), n_user_turns=pl.lit(1)), EVENT_SCHEMA)
    acc = conform(pl.DataFrame(accounts, schema=["account_id", "payment_fingerprint",
                                                 "email_domain"], orient="row"), ACCOUNT_SCHEMA)
    return ev.lazy(), acc


@pytest.fixture(scope="module")
def log():
    return _log()


@pytest.fixture(scope="module")
def outputs(log):
    return run_all(*log)


def _verdicts(df: pl.DataFrame, prefix: str) -> pl.Series:
    return df.filter(pl.col("account_id").str.starts_with(prefix))["verdict"]


@pytest.mark.parametrize("name", list(BASELINES))
def test_output_shape(outputs, name):
    df = outputs[name]
    assert tuple(df.columns) == ACCOUNTS_OUT_COLUMNS
    assert df.height == N_BENIGN + N_RING + 1
    assert df["account_id"].n_unique() == df.height
    assert df["score"].is_between(0, 1).all()
    assert set(df["verdict"].unique()) <= {"attack", "suspicious", "benign"}


def test_volume_flags_giant(outputs):
    df = outputs["volume"]
    giant = df.filter(pl.col("account_id") == GIANT)
    assert giant["verdict"][0] == "attack"
    assert giant["score"][0] == df["score"].max() == 1.0
    # p99 of 221 accounts: at most 1% + ties can be flagged
    assert (df["verdict"] == "attack").sum() <= 3


def test_volume_tier_limit():
    ev, acc = _log()
    acc = acc.with_columns(tier=pl.lit("paid"))
    df = run_volume(ev, acc, rpd_limits={"paid": 10_000})
    assert (df["verdict"] == "attack").sum() == 0
    df = run_volume(ev, acc, rpd_limits={"paid": 2})
    assert _verdicts(df, "r").eq("attack").all()


def test_fraudar_finds_ring(outputs):
    df = outputs["fraudar"]
    ring = df.filter(pl.col("account_id").str.starts_with("r"))
    assert (ring["verdict"] == "attack").all()
    assert ring["cluster_id"].n_unique() == 1 and ring["cluster_id"][0] is not None
    assert "payment_fingerprint" in ring["reasons"][0]
    benign = df.filter(pl.col("account_id").str.starts_with("b"))
    assert (benign["verdict"] == "attack").mean() < 0.05
    assert ring["score"].min() > benign["score"].max()


def test_peel_densest_block_exact():
    # a 4x3 complete block plus a sparse path: the block is the densest subgraph
    block = [(r, c) for r in range(4) for c in range(3)]
    path = [(4, 3), (5, 3), (5, 4), (6, 4), (6, 5)]
    rows, cols = np.array(block + path).T
    br, bc, dens, order, whole = peel(rows, cols, 7, 6)
    assert sorted(br.tolist()) == [0, 1, 2, 3] and sorted(bc.tolist()) == [0, 1, 2]
    w = 1 / np.log(4 + 5)
    assert dens == pytest.approx(12 * w / 7)
    assert sorted(order.tolist()) == list(range(7))


def test_iforest_ranks_ring_and_giant_high(outputs):
    df = outputs["iforest"]
    benign_median = df.filter(pl.col("account_id").str.starts_with("b"))["score"].median()
    assert df.filter(pl.col("account_id") == GIANT)["score"][0] > benign_median
    assert df.filter(pl.col("account_id").str.starts_with("r"))["score"].median() > benign_median
    flagged = df.filter(pl.col("verdict") != "benign")
    assert (flagged["reasons"] != "").all()


@pytest.mark.parametrize("fn", [run_volume, run_iforest, run_fraudar])
def test_deterministic(fn):
    a = fn(*_log(seed=3))
    b = fn(*_log(seed=3))
    assert a.equals(b)


def test_accepts_dataframe_and_no_accounts(log):
    ev, _ = log
    for fn in BASELINES.values():
        df = fn(ev.collect(), None)
        assert df.height == N_BENIGN + N_RING + 1


def test_empty_log():
    ev = pl.DataFrame(schema=EVENT_SCHEMA).lazy()
    for fn in BASELINES.values():
        assert fn(ev, None).height == 0


def test_fraudar_reports_nothing_on_homogeneous_graph():
    """Every account shares one of 3 IPs at random: no block is denser than the graph."""
    rng = np.random.default_rng(1)
    n = 300
    ev = conform(pl.DataFrame({
        "account_id": [f"u{i}" for i in range(n)],
        "ts": [dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)] * n,
        "ip": [f"1.1.1.{k}" for k in rng.integers(0, 3, n)],
    }), EVENT_SCHEMA)
    assert (run_fraudar(ev, None)["verdict"] == "attack").sum() == 0
