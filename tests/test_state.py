"""Incremental detect (``--state``): day-by-day runs equal one run over all days."""

from __future__ import annotations

import json

import polars as pl
import pytest

from distillguard.detect import detect
from distillguard.errors import ConfigError
from distillguard.simulate import simulate


@pytest.fixture(scope="module")
def days(tmp_path_factory):
    """A simulated log split at a day boundary into two files (and both in one directory)."""
    root = tmp_path_factory.mktemp("state")
    simulate("demo", scale=0.3, seed=12, out=root / "sim")
    ev = pl.read_parquet(root / "sim" / "events")
    cut = ev["ts"].dt.truncate("1d").unique().sort()
    cut = cut[len(cut) // 2]
    (root / "all").mkdir()
    for name, part in (("d1", ev.filter(pl.col("ts") < cut)),
                       ("d2", ev.filter(pl.col("ts") >= cut))):
        assert part.height > 1000
        (root / name).mkdir()
        part.write_parquet(root / name / "events.parquet")
        part.write_parquet(root / "all" / f"{name}.parquet")
    return root


def _run(days, logs, out, **kw):
    sim = days / "sim"
    return detect([days / d for d in logs], accounts=sim / "accounts.csv", out=days / out, **kw)


def test_daily_runs_with_state_equal_a_full_rerun(days):
    full = _run(days, ["all"], "full")
    _run(days, ["d1"], "inc1", state=days / "st")
    meta = json.loads((days / "st" / "state.json").read_text())
    n1 = pl.scan_parquet(days / "d1" / "events.parquet").select(pl.len()).collect().item()
    assert meta["n_events"] == n1
    inc = _run(days, ["d2"], "inc2", state=days / "st", partitions=2)
    assert inc.n_events == full.n_events and full.n_clusters > 0
    for name in ("accounts.csv", "clusters.json"):
        assert (days / "inc2" / name).read_text() == (days / "full" / name).read_text(), name
    # the first day alone differs: the state really carried day 1 into day 2
    alone = _run(days, ["d2"], "alone")
    assert alone.n_events < full.n_events
    assert (days / "alone" / "accounts.csv").read_text() != (
        days / "full" / "accounts.csv").read_text()
    # no prompt text is kept for history beyond the per-account sample
    hist = pl.read_parquet_schema(days / "st" / "events.parquet")
    assert "prompt" not in hist and "ts" in hist


def test_state_from_other_sampling_parameters_is_refused(days):
    _run(days, ["d1"], "s1", state=days / "st2")
    with pytest.raises(ConfigError, match="max_prompts"):
        _run(days, ["d2"], "s2", state=days / "st2", max_prompts=16)
