"""The traffic simulator: layout, contract validity, determinism and per-segment shapes."""

from __future__ import annotations

import datetime as dt
import hashlib
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow.parquet as pq
import pytest

from distillguard import corpus
from distillguard.errors import ConfigError
from distillguard.simulate import list_scenarios, load_scenario, simulate
from distillguard.simulate.engine import hex_ids

SCALE = 0.2
FILES = ("accounts.csv", "releases.csv", "labels.csv", "truth.csv", "allowlist.csv",
         "scenario.yaml")


@pytest.fixture(scope="module")
def sim(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("sim") / "demo"
    simulate("demo", scale=SCALE, seed=3, out=out)
    return out


@pytest.fixture(scope="module")
def ev(sim) -> pl.DataFrame:
    truth = pl.read_csv(sim / "truth.csv", schema_overrides={"campaign": pl.String,
                                                              "variant": pl.String})
    return pl.read_parquet(sim / "events").join(truth, on="account_id", how="left")


def _digest(path: Path) -> dict[str, str]:
    return {str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(path.rglob("*")) if p.is_file()}


def test_list_scenarios_has_demo_seed_scale_and_held_out_variants():
    names = dict(list_scenarios())
    for n in ("demo", "seed-scale", "variant-stealth", "variant-shifted"):
        assert n in names and names[n]
    assert not any(n.startswith("_") for n in names)


@pytest.mark.parametrize("kw", [{"scale": 0}, {"scale": -1.0}, {"scale": float("nan")},
                                {"scale": "2"}])
def test_bad_scale_is_config_error(tmp_path, kw):
    with pytest.raises(ConfigError, match="scale"):
        simulate("demo", out=tmp_path, **kw)


def test_unknown_scenario_is_config_error(tmp_path):
    with pytest.raises(ConfigError, match="unknown scenario 'nope'"):
        simulate("nope", out=tmp_path)
    with pytest.raises(ConfigError, match="unknown scenario"):
        simulate("_defaults", out=tmp_path)


def test_unknown_key_names_file_and_key(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("base: demo\nsegments:\n  campaign_a:\n    acounts: 3\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml.*campaign_a.*unknown key 'acounts'"):
        load_scenario(str(bad))
    dup = tmp_path / "dup.yaml"
    dup.write_text("base: demo\ndays: 3\ndays: 4\n")
    with pytest.raises(ConfigError, match="duplicate key 'days'"):
        load_scenario(str(dup))
    typo = tmp_path / "typo.yaml"
    typo.write_text("base: demo\nsegments:\n  power_user:\n    tasks: {chatt: 1}\n")
    with pytest.raises(ConfigError, match="unknown source 'chatt'"):
        load_scenario(str(typo))


def test_scale_multiplies_accounts_keeps_small_segments():
    base, small = load_scenario("demo"), load_scenario("demo", scale=0.1)
    b = {s.name: s for s in base.segments}
    for s in small.segments:
        assert s.accounts >= 1
        assert s.accounts == max(s.min_accounts, round(b[s.name].accounts * 0.1))
        # the segment's total volume scales with `scale` even when its account count cannot
        assert s.volume_multiplier * s.accounts == pytest.approx(0.1 * b[s.name].accounts,
                                                                 rel=1e-3)


def test_layout_and_parquet_schema(sim):
    for f in FILES:
        assert (sim / f).is_file()
    parts = sorted((sim / "events").glob("part-*.parquet"))
    assert parts and parts[0].name == "part-00000.parquet"
    schema = pq.read_schema(parts[0])
    assert str(schema.field("ts").type) == "timestamp[us, tz=UTC]"
    assert str(schema.field("messages").type).startswith("list<element: struct<role: string")
    tools_t = str(schema.field("tools").type)
    assert "name: string" in tools_t and "parameters: string" in tools_t
    for p in parts:
        ts = pl.read_parquet(p, columns=["ts"])["ts"]
        assert ts.is_sorted()
    rel = pl.read_csv(sim / "releases.csv")
    assert rel.columns == ["model", "released_at"]
    assert pl.read_csv(sim / "labels.csv").columns == ["account_id", "label", "campaign"]
    assert pl.read_csv(sim / "truth.csv").columns == ["account_id", "label", "campaign",
                                                      "segment", "variant"]


def test_output_is_contract_valid(sim):
    from distillguard.read import read_log

    with read_log([sim / "events"], accounts=sim / "accounts.csv",
                  releases=sim / "releases.csv") as log:
        events = log.events.collect()
        n_events = pl.scan_parquet(sim / "events").select(pl.len()).collect().item()
        assert events.height == n_events
        assert events["prompt"].null_count() == 0
        assert events["ip_prefix"].null_count() == 0
        assert (events["n_turns"] >= 1).all()
        assert log.releases.height == 4
        assert log.accounts.height == pl.read_csv(sim / "accounts.csv").height
        assert log.accounts["created_at"].null_count() == 0
        # system prompts travel either in `system` or as a system message; both are read
        assert events["system"].null_count() < events.height


def test_labels_and_truth_cover_every_account_exactly(sim, ev):
    acc = pl.read_csv(sim / "accounts.csv")
    labels = pl.read_csv(sim / "labels.csv", schema_overrides={"campaign": pl.String})
    truth = pl.read_csv(sim / "truth.csv", schema_overrides={"campaign": pl.String})
    assert acc["account_id"].is_unique().all()
    assert set(labels["account_id"]) == set(acc["account_id"]) == set(truth["account_id"])
    assert set(ev["account_id"]) <= set(acc["account_id"])
    assert ev["label"].null_count() == 0
    assert set(labels["label"]) == {"attack", "benign"}
    assert (labels.filter(pl.col("label") == "benign")["campaign"].fill_null("") == "").all()
    assert labels.filter(pl.col("label") == "attack")["campaign"].null_count() == 0
    allow = pl.read_csv(sim / "allowlist.csv")
    seg = truth.filter(pl.col("account_id").is_in(allow["account_id"].implode()))["segment"]
    assert set(seg) == {"allowlisted_datagen"}


def test_determinism_by_seed(tmp_path):
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    simulate("demo", scale=0.05, seed=11, out=a)
    simulate("demo", scale=0.05, seed=11, out=b)
    simulate("demo", scale=0.05, seed=12, out=c)
    assert _digest(a) == _digest(b)
    da, dc = _digest(a), _digest(c)
    assert da["events/part-00000.parquet"] != dc["events/part-00000.parquet"]
    ta, tc = (pl.read_csv(p / "truth.csv") for p in (a, c))
    assert ta["segment"].value_counts().sort("segment").equals(
        tc["segment"].value_counts().sort("segment"))
    assert set(ta["account_id"]).isdisjoint(set(tc["account_id"]))


def test_resolved_scenario_yaml_reproduces_the_run(sim, tmp_path):
    again = load_scenario(str(sim / "scenario.yaml"))
    assert again.segments == load_scenario("demo", scale=SCALE, seed=3).segments
    simulate(str(sim / "scenario.yaml"), seed=3, out=tmp_path / "r")
    assert _digest(tmp_path / "r" / "events") == _digest(sim / "events")


def test_jsonl_formats_read_back(tmp_path):
    from distillguard.read import read_log

    res = simulate("demo", scale=0.03, seed=2, out=tmp_path / "j", fmt="jsonl.zst")
    part = tmp_path / "j" / "events" / "part-00000.jsonl.zst"
    assert part.is_file()
    with read_log([tmp_path / "j" / "events"]) as log:
        assert log.events.select(pl.len()).collect().item() == res.exchanges
    assert "exchanges" in res.summary() and "campaign_a" in res.summary()
    with pytest.raises(ConfigError, match="format"):
        simulate("demo", scale=0.03, out=tmp_path / "x", fmt="csv")


def test_university_course_shares_one_24_and_class_hours(ev):
    uni = ev.filter(pl.col("segment") == "university_course")
    assert uni["account_id"].n_unique() >= 5
    prefixes = uni["ip"].str.replace(r"\.\d+$", "")
    assert prefixes.n_unique() == 1
    local = uni["ts"].dt.offset_by("-6h")  # the course is in the US (tz -6)
    in_class = local.dt.hour().is_in([9, 10, 11, 12, 13, 14, 15, 16])
    assert in_class.mean() > 0.75
    assert (local.dt.weekday() <= 5).mean() > 0.9

    def top4_hours(df):  # share of traffic in the 4 busiest UTC hours
        return df["ts"].dt.hour().value_counts()["count"].sort(descending=True)[:4].sum() \
            / df.height

    casual = ev.filter(pl.col("segment") == "benign_casual")
    assert top4_hours(uni) > 0.5 > top4_hours(casual)
    assert casual["ip"].str.replace(r"\.\d+$", "").n_unique() > 50


def test_campaign_a_pivots_to_new_model_benign_adopts_slowly(sim, ev):
    rel = pl.read_csv(sim / "releases.csv", try_parse_dates=True)
    new = rel.sort("released_at")["model"][-1]
    t0 = rel.sort("released_at")["released_at"][-1]
    win = ev.filter((pl.col("ts") >= t0) & (pl.col("ts") < t0 + dt.timedelta(hours=24)))
    share = win.group_by("segment").agg((pl.col("model") == new).mean().alias("s"))
    s = dict(zip(share["segment"], share["s"]))
    assert s["campaign_a"] >= 0.4
    benign = win.filter(pl.col("label") == "benign")
    assert (benign["model"] == new).mean() < 0.2
    assert ev.filter(pl.col("ts") < t0)["model"].ne(new).all()


def _daily(ev: pl.DataFrame) -> pl.DataFrame:
    return ev.group_by("account_id", pl.col("ts").dt.date(), "segment", "label").len()


def test_low_and_slow_stays_under_benign_p95_daily_volume(ev):
    d = _daily(ev)
    p95 = d.filter(pl.col("label") == "benign")["len"].quantile(0.95)
    ls = d.filter(pl.col("segment") == "campaign_lowslow")
    assert ls.height > 0
    assert ls["len"].max() < p95


def test_filler_share_of_filler_variant(ev):
    fill_files = load_scenario("demo").sources["filler"].files
    texts = corpus.load().filter(pl.col("file").is_in(list(fill_files)))["text"]
    b = ev.filter(pl.col("variant").str.contains("filler"))
    assert b.height > 200
    first_user = b["messages"].list.eval(
        pl.element().filter(pl.element().struct.field("role") == "user")
        .struct.field("content").first()).list.first()
    share = first_user.is_in(texts.implode()).mean()
    assert 0.2 <= share <= 0.4


def test_campaign_c_shares_payment_fingerprints(sim):
    acc = pl.read_csv(sim / "accounts.csv").join(pl.read_csv(sim / "truth.csv"), on="account_id")
    c = acc.filter(pl.col("segment") == "campaign_c")
    assert c.height >= 5
    assert c["payment_fingerprint"].n_unique() <= max(1, c.height // 4)
    casual = acc.filter(pl.col("segment") == "benign_casual")
    assert casual["payment_fingerprint"].n_unique() == casual.height


def test_residential_proxy_ips_are_shared_with_benign_users(ev):
    attack_ips = set(ev.filter(pl.col("variant").str.contains("resproxy"))["ip"])
    benign_ips = set(ev.filter(pl.col("label") == "benign")["ip"])
    assert len(attack_ips & benign_ips) >= 10


def test_attack_accounts_are_individually_modest(ev):
    d = _daily(ev)
    med = d.group_by("segment").agg(pl.col("len").median())
    m = dict(zip(med["segment"], med["len"]))
    # campaign accounts sit well below the high-volume legitimate look-alikes
    assert m["campaign_a"] < m["power_user"] < m["eval_company"]
    assert m["campaign_a"] < m["coding_product"]


def test_hex_ids_are_fixed_width_hex():
    s = hex_ids("x_", np.array([0, 255, 2**64 - 1], dtype=np.uint64))
    assert s.to_list() == ["x_0000000000000000", "x_00000000000000ff", "x_ffffffffffffffff"]
