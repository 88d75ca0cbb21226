"""Reader: containers, field normalisation, bad input through the CLI, read_log, side tables."""

from __future__ import annotations

import gzip
from datetime import datetime, timezone

import orjson
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard
from click.testing import CliRunner

from distillguard.cli import cli
from distillguard.errors import InputError
from distillguard.read import (
    InvalidCounts,
    iter_event_batches,
    read_accounts,
    read_labels,
    read_log,
    read_releases,
    stable_hash64,
)
from distillguard.schema import ACCOUNT_SCHEMA, EVENT_SCHEMA, RELEASE_SCHEMA


def utc(*a) -> datetime:
    return datetime(*a, tzinfo=timezone.utc)


def write_jsonl(path, recs, *, raw_lines=()):
    data = b"".join(orjson.dumps(r) + b"\n" for r in recs) + b"".join(
        (x if isinstance(x, bytes) else x.encode()) + b"\n" for x in raw_lines)
    name = str(path)
    if name.endswith(".gz"):
        data = gzip.compress(data)
    elif name.endswith(".zst"):
        data = zstandard.ZstdCompressor().compress(data)
    path.write_bytes(data)
    return path


def read_all(paths, **kw) -> pl.DataFrame:
    frames = list(iter_event_batches(paths, **kw))
    return pl.concat(frames, how="diagonal_relaxed") if frames else pl.DataFrame()


FULL = {
    "ts": "2024-05-01T12:00:00.250+02:00", "account_id": "acc-1", "request_id": "r1",
    "api_key_id": "k1", "model": "m-1", "system": "You are terse.",
    "messages": [{"role": "user", "content": "first"},
                 {"role": "assistant", "content": "ok"},
                 {"role": "user", "content": "second question"}],
    "tools": [{"name": "search", "description": "d", "input_schema": {}},
              {"type": "function", "function": {"name": "calc", "parameters": {}}}],
    "response": "answer", "input_tokens": 10, "output_tokens": 20, "max_tokens": 1024,
    "temperature": 0.7, "thinking": {"type": "enabled", "budget_tokens": 4096},
    "logprobs": 5, "status": 200, "ip": "203.0.113.77", "asn": 64500, "country": "DE",
    "user_agent": "ua/1", "tls_fingerprint": "t13d", "extra_unknown": {"kept": "ignored"},
    "created_at": 1700000000, "tier": "education", "verified": False,
}


def test_every_contract_field_jsonl(tmp_path):
    df = read_all(write_jsonl(tmp_path / "a.jsonl", [FULL]))
    assert list(df.columns)[: len(EVENT_SCHEMA)] == list(EVENT_SCHEMA)
    for c, t in EVENT_SCHEMA.items():
        assert df.schema[c] == t, c
    r = df.row(0, named=True)
    assert r["ts"] == utc(2024, 5, 1, 10, 0, 0, 250000)
    assert r["account_id"] == "acc-1" and r["request_id"] == "r1" and r["api_key_id"] == "k1"
    assert r["prompt"] == "second question" and r["system"] == "You are terse."
    assert r["system_hash"] == stable_hash64("You are terse.")
    assert r["n_turns"] == 3 and r["n_user_turns"] == 2
    assert r["tool_names"] == ["calc", "search"]
    assert r["tools_hash"] == stable_hash64("calc\x1fsearch")
    assert r["has_tool_results"] is False and r["has_image"] is False
    assert (r["input_tokens"], r["output_tokens"], r["max_tokens"]) == (10, 20, 1024)
    assert r["temperature"] == 0.7 and r["thinking"] == 4096 and r["logprobs"] == 5
    assert r["status"] == 200 and r["asn"] == 64500 and r["country"] == "DE"
    assert r["ip_prefix"] == "203.0.113.0/24" and r["tls_fingerprint"] == "t13d"
    assert r["created_at"] == utc(2023, 11, 14, 22, 13, 20) and r["tier"] == "education"
    assert r["verified"] is False
    assert "extra_unknown" not in df.columns


def test_stable_hash_is_fixed():
    # Pinned values: must never change across runs, platforms or library versions.
    assert stable_hash64("abc") == 6455300059550759896
    assert stable_hash64("calc\x1fsearch") == 17053014292366205026


@pytest.mark.parametrize("suffix", [".jsonl", ".jsonl.gz", ".jsonl.zst"])
def test_jsonl_containers(tmp_path, suffix):
    recs = [{"ts": 1700000000 + i, "account_id": f"a{i % 3}", "prompt": f"p{i}"}
            for i in range(250)]
    df = read_all(write_jsonl(tmp_path / f"x{suffix}", recs), batch_rows=100)
    assert df.height == 250
    assert df["prompt"].to_list() == [f"p{i}" for i in range(250)]
    assert df["ts"][0] == utc(2023, 11, 14, 22, 13, 20)


def test_batches_bounded(tmp_path):
    recs = [{"ts": 1700000000 + i, "account_id": "a", "prompt": "p"} for i in range(250)]
    sizes = [len(b) for b in iter_event_batches(write_jsonl(tmp_path / "x.jsonl", recs),
                                                batch_rows=100)]
    assert sizes == [100, 100, 50]


def test_openai_vs_anthropic_styles(tmp_path):
    openai = {
        "ts": "2024-01-01T00:00:00Z", "account_id": "o",
        "messages": [
            {"role": "system", "content": "sys A"},
            {"role": "user", "content": [{"type": "text", "text": "look"},
                                         {"type": "image_url", "image_url": {"url": "x"}}]},
            {"role": "assistant", "content": None,
             "tool_calls": [{"id": "1", "type": "function",
                             "function": {"name": "f", "arguments": "{}"}}]},
            {"role": "tool", "tool_call_id": "1", "content": "result"},
        ],
        "logprobs": True, "top_logprobs": 3,
    }
    anthropic = {
        "ts": "2024-01-01T00:00:00Z", "account_id": "a",
        "system": [{"type": "text", "text": "sys B"}, {"type": "text", "text": "more"}],
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": "part 1"},
                                         {"type": "text", "text": "part 2"}]},
            {"role": "assistant", "content": [{"type": "tool_use", "id": "t", "name": "f",
                                               "input": {}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t",
                                          "content": [{"type": "image", "source": {}}]}]},
        ],
        "thinking": True, "logprobs": False,
    }
    df = read_all(write_jsonl(tmp_path / "m.jsonl", [openai, anthropic]))
    o, a = df.row(0, named=True), df.row(1, named=True)
    assert o["prompt"] == "look" and o["system"] == "sys A"
    assert o["n_turns"] == 3 and o["n_user_turns"] == 1
    assert o["has_tool_results"] and o["has_image"] and o["logprobs"] == 3
    assert a["prompt"] == "part 1\npart 2" and a["system"] == "sys B\nmore"
    assert a["n_turns"] == 3 and a["n_user_turns"] == 1  # tool_result-only turn not counted
    assert a["has_tool_results"] and a["has_image"] and a["thinking"] == 1 and a["logprobs"] == 0


def test_prompt_only_and_timestamps(tmp_path):
    recs = [
        {"ts": "2024-03-01T10:00:00", "account_id": "a", "prompt": "x"},          # naive = UTC
        {"ts": "2024-03-01T10:00:00Z", "account_id": "a", "prompt": "x"},
        {"ts": "2024-03-01T11:30:00+01:30", "account_id": "a", "prompt": "x"},
        {"ts": 1709287200.5, "account_id": "a", "prompt": "x"},
        {"ts": 1709287200, "account_id": 42, "prompt": "x", "thinking": 0},
    ]
    df = read_all(write_jsonl(tmp_path / "t.jsonl", recs))
    t0 = utc(2024, 3, 1, 10)
    assert df["ts"].to_list() == [t0, t0, t0, t0.replace(microsecond=500000), t0]
    assert df["n_turns"].to_list() == [1] * 5 and df["n_user_turns"].to_list() == [1] * 5
    assert df["account_id"][4] == "42" and df["tool_names"][0].to_list() == []
    assert df["tools_hash"].null_count() == 5 and df["system_hash"].null_count() == 5


def test_ipv6_prefix(tmp_path):
    recs = [{"ts": 0, "account_id": "a", "prompt": "x", "ip": ip}
            for ip in ["2001:db8:abcd:12::1", "::ffff:198.51.100.9", "not-an-ip"]]
    df = read_all(write_jsonl(tmp_path / "i.jsonl", recs))
    assert df["ip_prefix"].to_list() == ["2001:db8:abcd::/48", "198.51.100.0/24", None]
    assert df["ip"][2] == "not-an-ip"


MSG_T = pa.list_(pa.struct([("role", pa.string()), ("content", pa.string())]))
TOOL_T = pa.list_(pa.struct([("name", pa.string()), ("description", pa.string()),
                             ("parameters", pa.string())]))


def _sim_table(n=4):
    """A table shaped like the simulator's Parquet output (struct columns)."""
    return pa.table({
        "ts": pa.array([1_700_000_000_000_000 + i * 1_000_000 for i in range(n)],
                       pa.timestamp("us", "UTC")),
        "account_id": [f"a{i % 2}" for i in range(n)],
        "messages": pa.array([[{"role": "system", "content": "S"},
                               {"role": "user", "content": f"q{i}"},
                               {"role": "assistant", "content": "x"},
                               {"role": "tool", "content": "r"},
                               {"role": "user", "content": f"z{i}"}] for i in range(n)], MSG_T),
        "tools": pa.array([[{"name": "b", "description": "", "parameters": "{}"},
                            {"name": "a", "description": "", "parameters": "{}"}]] * n, TOOL_T),
        "thinking": pa.array([True, False, None, True]),
        "input_tokens": pa.array([1, 2, 3, 4], pa.int32()),
        "ip": ["10.0.0.1"] * n, "model": ["m1", "m1", "m2", "m2"],
    })


def test_parquet_struct_columns(tmp_path):
    pq.write_table(_sim_table(), tmp_path / "e.parquet", row_group_size=3)
    df = read_all(tmp_path / "e.parquet")
    assert df.height == 4
    r = df.row(1, named=True)
    assert r["ts"] == utc(2023, 11, 14, 22, 13, 21)
    assert r["prompt"] == "z1" and r["system"] == "S" and r["system_hash"] == stable_hash64("S")
    assert r["n_turns"] == 4 and r["n_user_turns"] == 2 and r["has_tool_results"]
    assert r["tool_names"] == ["a", "b"] and r["tools_hash"] == stable_hash64("a\x1fb")
    assert df["thinking"].to_list() == [1, 0, None, 1]
    assert df["input_tokens"].dtype == pl.Int64 and r["ip_prefix"] == "10.0.0.0/24"


def test_parquet_json_string_columns_match_jsonl(tmp_path):
    recs = [dict(FULL, account_id=f"a{i}") for i in range(3)]
    t = pa.table({
        k: [orjson.dumps(r[k]).decode() if isinstance(r[k], (list, dict)) else r[k]
            for r in recs] for k in FULL})
    pq.write_table(t, tmp_path / "j.parquet")
    a = read_all(tmp_path / "j.parquet")
    b = read_all(write_jsonl(tmp_path / "j.jsonl", recs))
    assert a.equals(b)


@pytest.mark.parametrize("ts_arr, expect", [
    (pa.array([0], pa.timestamp("ms")), utc(1970, 1, 1)),                          # naive = UTC
    (pa.array([3_600_000_000_000], pa.timestamp("ns", "Europe/Paris")), utc(1970, 1, 1, 1)),
    (pa.array([86400], pa.int64()), utc(1970, 1, 2)),
    (pa.array([1.5], pa.float64()), utc(1970, 1, 1, 0, 0, 1, 500000)),
    (pa.array(["1970-01-01T02:00:00+02:00"]), utc(1970, 1, 1)),
])
def test_parquet_ts_types(tmp_path, ts_arr, expect):
    pq.write_table(pa.table({"ts": ts_arr, "account_id": ["a"], "prompt": ["p"]}),
                   tmp_path / "t.parquet")
    assert read_all(tmp_path / "t.parquet")["ts"].to_list() == [expect]


def test_nested_directory(tmp_path):
    (tmp_path / "day=1" / "h").mkdir(parents=True)
    (tmp_path / "day=2").mkdir()
    (tmp_path / ".hidden").mkdir()
    write_jsonl(tmp_path / "day=1" / "h" / "a.jsonl.gz", [{"ts": 1, "account_id": "a",
                                                          "prompt": "1"}])
    pq.write_table(_sim_table(), tmp_path / "day=2" / "b.parquet")
    write_jsonl(tmp_path / ".hidden" / "c.jsonl", [{"ts": 1}])   # would be invalid
    (tmp_path / "_SUCCESS").write_text("")
    (tmp_path / "notes.txt").write_text("x")
    df = read_all(tmp_path)
    assert df.height == 5 and df["prompt"][0] == "1"


# ---------------------------------------------------------------- bad input through the CLI

def run_validate(*args):
    return CliRunner().invoke(cli, ["validate", *map(str, args)])


GOOD = {"ts": 1, "account_id": "a", "prompt": "p"}
BAD_JSONL = [
    ("malformed_json", None, '{"ts": 1, "account_id": "a",'),
    ("malformed_json", None, "[1, 2]"),
    ("missing_ts", "ts", {"account_id": "a", "prompt": "p"}),
    ("bad_ts", "ts", {"ts": "yesterday", "account_id": "a", "prompt": "p"}),
    ("bad_ts", "ts", {"ts": True, "account_id": "a", "prompt": "p"}),
    ("missing_account_id", "account_id", {"ts": 1, "account_id": "", "prompt": "p"}),
    ("missing_account_id", "account_id", {"ts": 1, "prompt": "p"}),
    ("bad_type:account_id", "account_id", {"ts": 1, "account_id": {"id": 1}, "prompt": "p"}),
    ("missing_prompt", "prompt", {"ts": 1, "account_id": "a"}),
    ("missing_prompt", "prompt", {"ts": 1, "account_id": "a", "prompt": ""}),
    ("missing_prompt", "prompt", {"ts": 1, "account_id": "a", "messages": []}),
    ("bad_type:messages", "messages", {"ts": 1, "account_id": "a", "messages": "hi"}),
    ("bad_type:messages", "messages", {"ts": 1, "account_id": "a", "messages": [1]}),
    ("bad_type:input_tokens", "input_tokens",
     {"ts": 1, "account_id": "a", "prompt": "p", "input_tokens": "many"}),
    ("bad_type:tools", "tools", {"ts": 1, "account_id": "a", "prompt": "p", "tools": {}}),
    ("bad_type:thinking", "thinking", {"ts": 1, "account_id": "a", "prompt": "p",
                                       "thinking": [1]}),
    ("bad_type:verified", "verified", {"ts": 1, "account_id": "a", "prompt": "p",
                                       "verified": "maybe"}),
]


@pytest.mark.parametrize("reason, field, bad", BAD_JSONL, ids=[f"{r}-{i}" for i, (r, _, _)
                                                                in enumerate(BAD_JSONL)])
def test_bad_jsonl_cli(tmp_path, reason, field, bad):
    lines = [bad] if isinstance(bad, str) else []
    p = write_jsonl(tmp_path / "bad.jsonl", [GOOD, GOOD] + ([] if lines else [bad]),
                    raw_lines=lines)
    res = run_validate(p)
    assert res.exit_code == 2, res.output
    assert "Traceback" not in res.output
    assert f"{p}:3:" in res.output
    if field:
        assert f"field '{field}'" in res.output
    with pytest.raises(InputError) as ei:
        read_all(p)
    assert ei.value.reason == reason and ei.value.line == 3
    # --skip-invalid counts it and reads the rest
    res = run_validate(p, "--skip-invalid", "--json")
    assert res.exit_code == 0, res.output
    out = orjson.loads(res.output)
    assert out["records"] == 2 and out["invalid"] == {reason: 1}


def test_bad_parquet_cli(tmp_path):
    t = pa.table({"ts": pa.array([1, 2, None, 4, 5], pa.int64()),
                  "account_id": ["a", "a", "a", None, "a"],
                  "prompt": ["p", "p", "p", "p", "p"],
                  "input_tokens": ["1", "2", "3", "4", "x"]})
    p = tmp_path / "bad.parquet"
    pq.write_table(t, p, row_group_size=2)
    res = run_validate(p)
    assert res.exit_code == 2 and "Traceback" not in res.output
    assert f"{p}: row group 1, row 0: field 'ts'" in res.output
    inv = InvalidCounts()
    df = read_all(p, skip_invalid=True, invalid=inv)
    assert df.height == 2
    assert inv.as_dict() == {"missing_ts": 1, "missing_account_id": 1,
                             "bad_type:input_tokens": 1}
    assert inv.total == 3


def test_bad_parquet_json_string_column(tmp_path):
    p = tmp_path / "bad.parquet"
    pq.write_table(pa.table({"ts": [1, 2], "account_id": ["a", "b"],
                             "messages": ['[{"role": "user", "content": "x"}]', "[{oops"]}), p)
    res = run_validate(p)
    assert res.exit_code == 2 and "row group 0, row 1: field 'messages'" in res.output


def _file(name, data=None):
    def make(d):
        p = d / name
        if data is None:
            p.mkdir()
        else:
            p.write_bytes(data)
        return p
    return make


@pytest.mark.parametrize("make, expect", [
    (lambda d: d / "missing.jsonl", "no such file"),
    (_file("x.csv", b"a"), "unknown log container"),
    (_file("e.jsonl", b""), "no records"),
    (_file("e.jsonl", b"\n \n"), "no records"),
    (_file("sub"), "no log file"),
    (_file("c.jsonl.gz", b"not gzip"), "cannot read"),
    (_file("c.jsonl.zst", b"not zstd"), "cannot read"),
    (_file("c.parquet", b"not parquet"), "cannot read Parquet"),
])
def test_bad_files_cli(tmp_path, make, expect):
    p = make(tmp_path)
    res = run_validate(p)
    assert res.exit_code == 2, res.output
    assert expect in res.output and str(p) in res.output and "Traceback" not in res.output


# ---------------------------------------------------------------- read_log and side tables

def test_read_log_accounts_releases_cache(tmp_path):
    recs = [
        {"ts": 100, "account_id": "a", "prompt": "p", "model": "m1", "tier": None},
        {"ts": 50, "account_id": "b", "prompt": "p", "model": "m2", "tier": "free"},
        {"ts": 200, "account_id": "a", "prompt": "p", "model": "m1", "tier": "paid",
         "verified": True},
        {"ts": 300, "account_id": "a", "prompt": "p", "tier": "education"},
        {"ts": 10, "account_id": "c", "prompt": "p", "model": "m1"},
    ]
    log_path = write_jsonl(tmp_path / "l.jsonl", recs)
    accounts = tmp_path / "acc.csv"
    accounts.write_text("account_id,tier,created_at,verified\nb,research,2024-01-01T00:00:00Z,"
                        "true\nz,free,,\nb,paid,,\n")
    with read_log(log_path, accounts=accounts, cache_dir=tmp_path / "cache",
                  batch_rows=2) as log:
        ev = log.events.collect()
        assert ev.schema == pl.Schema(EVENT_SCHEMA) and log.n_events == 5 == ev.height
        assert log.accounts.schema == pl.Schema(ACCOUNT_SCHEMA)
        acc = {r["account_id"]: r for r in log.accounts.to_dicts()}
        assert list(acc) == ["a", "b", "c", "z"]
        assert acc["a"]["tier"] == "paid" and acc["a"]["verified"] is True
        assert acc["b"]["tier"] == "research"  # table wins over inline
        assert acc["b"]["created_at"] == utc(2024, 1, 1) and acc["c"]["tier"] is None
        assert log.releases.schema == pl.Schema(RELEASE_SCHEMA)
        rel = dict(log.releases.iter_rows())
        assert rel == {"m1": utc(1970, 1, 1, 0, 0, 10), "m2": utc(1970, 1, 1, 0, 0, 50)}
        assert log.files == [str(log_path)] and log.invalid.total == 0
    assert (tmp_path / "cache" / "events.parquet").exists()


def test_read_log_temp_cache_cleaned(tmp_path):
    p = write_jsonl(tmp_path / "l.jsonl", [GOOD] * 3)
    rel = tmp_path / "rel.csv"
    rel.write_text("model,released_at\nm9,2025-02-01T00:00:00Z\n")
    log = read_log(p, releases=rel)
    cache = log.cache_path
    assert log.events.select(pl.len()).collect().item() == 3
    assert log.releases.row(0) == ("m9", utc(2025, 2, 1))
    log.close()
    import os
    assert not os.path.exists(cache)


def test_read_log_skip_invalid(tmp_path):
    p = write_jsonl(tmp_path / "l.jsonl", [GOOD, {"ts": "nope", "account_id": "a"}, GOOD],
                    raw_lines=["{broken"])
    with read_log(p, skip_invalid=True) as log:
        assert log.n_events == 2
        assert log.invalid.as_dict() == {"bad_ts": 1, "malformed_json": 1}
        assert ":2:" in log.invalid.examples["bad_ts"]


def test_side_table_errors(tmp_path):
    acc = tmp_path / "acc.csv"
    acc.write_text("account_id,created_at\na,2024-01-01\nb,yesterday\n")
    with pytest.raises(InputError, match=r"acc.csv: row 2: field 'created_at'"):
        read_accounts(acc)
    acc.write_text("account_id,verified\na,true\n,false\n")
    res = CliRunner().invoke(cli, ["validate", str(write_jsonl(tmp_path / "l.jsonl", [GOOD])),
                                   "--accounts", str(acc)])
    assert res.exit_code == 2 and "row 2: field 'account_id'" in res.output
    rel = tmp_path / "rel.csv"
    rel.write_text("model,when\nm,1\n")
    with pytest.raises(InputError, match="released_at"):
        read_releases(rel)
    lab = tmp_path / "labels.csv"
    lab.write_text("account_id,label,campaign\na,attack,A\nb,benign,\nc,evil,\n")
    with pytest.raises(InputError, match=r"row 3: field 'label'"):
        read_labels(lab)


def test_side_tables_ok(tmp_path):
    pq.write_table(pa.table({"account_id": ["a", "b"], "created_at": [1.0, 2.0],
                             "verified": [True, None], "tier": ["free", "paid"]}),
                   tmp_path / "acc.parquet")
    acc = read_accounts(tmp_path / "acc.parquet")
    assert acc.schema == pl.Schema(ACCOUNT_SCHEMA) and acc["tier"].to_list() == ["free", "paid"]
    write_jsonl(tmp_path / "acc.jsonl", [{"account_id": "x", "verified": 1}])
    assert read_accounts(tmp_path / "acc.jsonl")["verified"].to_list() == [True]
    lab = tmp_path / "labels.csv"
    lab.write_text("account_id,label,campaign,segment\na,attack,A,edu\nb,benign,,evalco\n")
    df = read_labels(lab)
    assert df.columns == ["account_id", "label", "campaign", "segment"]
    assert df["campaign"].to_list() == ["A", None]


def test_partitioned_cache_keeps_every_event_once_by_account(tmp_path):
    from distillguard.read import account_partition

    recs = [{"ts": 1_700_000_000 + i, "account_id": f"acct_{i % 7}", "prompt": f"p{i}"}
            for i in range(200)]
    p = tmp_path / "log.jsonl"
    p.write_bytes(b"\n".join(orjson.dumps(r) for r in recs) + b"\n")
    with read_log(p) as one, read_log(p, partitions=4) as four:
        assert len(four.parts) == 4 and len(one.parts) == 1
        whole = one.events.collect()
        parts = [x.collect() for x in four.parts]
        assert sum(len(x) for x in parts) == len(whole) == 200
        for i, x in enumerate(parts):
            # each account lives in exactly one partition, its events in input order
            assert x.select(account_partition(pl.col("account_id"), 4)
                            .eq(i).all()).item()
            for acc, g in x.group_by("account_id"):
                want = whole.filter(pl.col("account_id") == acc[0])
                assert g["prompt"].to_list() == want["prompt"].to_list()
        assert four.events.collect().sort("ts").equals(whole.sort("ts"))


def test_auto_partitions_from_parquet_footers_and_jsonl_size(tmp_path):
    from distillguard.read import auto_partitions

    d = tmp_path / "logs"
    d.mkdir()
    pl.DataFrame({"ts": list(range(10)), "account_id": ["a"] * 10,
                  "prompt": ["p"] * 10}).write_parquet(d / "a.parquet")
    assert auto_partitions(d, per_partition=4) == 3      # 10 rows from the footer
    assert auto_partitions(d, per_partition=10) == 1
    (d / "b.jsonl").write_text("x" * 5000)               # ~1 KB per record: 5 more
    assert auto_partitions(d, per_partition=5) == 3


@pytest.mark.parametrize("min_prune", [10, 500_000])
def test_sample_drawn_while_reading_equals_the_two_pass_sample(tmp_path, monkeypatch, min_prune):
    """read_log(sample_seed=) keeps, per account, the rows sample_prompts picks from the cache
    (smallest hash first, ties in input order), with the pruning and cut-offs exercised over
    many small batches; its cache then holds no prompt text."""
    from distillguard import read as R
    from distillguard.content_signals import sample_prompts

    monkeypatch.setattr(R._BottomK, "min_prune", min_prune)
    recs = []
    for i in range(900):
        acct = f"acct_{i % 11}" if i % 3 else f"heavy_{i % 2}"  # two accounts far above k
        rec = {"ts": 1_700_000_000 + i // 4, "account_id": acct,
               "prompt": f"task {i % 37} " + "x" * (i % 90),
               "system": None if i % 5 else f"sys {i % 3}",
               "tools": [{"name": f"t{i % 4}"}] if i % 7 == 0 else None}
        recs.append(rec)
        if i % 50 == 0:
            recs.append(dict(rec))  # an exact replay: same hash, kept in input order
    p = tmp_path / "log.jsonl"
    p.write_bytes(b"\n".join(orjson.dumps(r) for r in recs) + b"\n")
    k = 9
    with read_log(p, batch_rows=37) as plain, \
            read_log(p, batch_rows=37, sample_seed=3, sample_max=k, partitions=2) as drawn:
        want = sample_prompts(plain.parts, max_prompts=k, seed=3, keep_hash=True)
        got = drawn.sample
        assert got.columns == want.columns
        as_text = [pl.col("prompt").cast(pl.String), pl.col("system").cast(pl.String)]
        assert got.with_columns(as_text).equals(want.with_columns(as_text))
        assert got.group_by("account_id").len()["len"].max() == k
        assert len(got) < len(recs)
        cache = drawn.events.collect()
        assert len(cache) == len(recs) and cache["prompt"].null_count() == len(recs)
        assert cache["system_hash"].null_count() < len(recs)


def test_features_refuse_a_read_time_sample_of_other_settings(tmp_path):
    """The cache of a log read with sample_seed holds no prompt text, so features with
    another seed or cap cannot resample it: a clear error, not empty prompts."""
    from distillguard.detect import build_features
    from distillguard.signals import load_signals

    recs = [{"ts": 1_700_000_000 + i, "account_id": f"acct_{i % 5}", "prompt": f"p{i}"}
            for i in range(40)]
    p = tmp_path / "log.jsonl"
    p.write_bytes(b"\n".join(orjson.dumps(r) for r in recs) + b"\n")
    with read_log(p, sample_seed=0, sample_max=8) as log:
        with pytest.raises(ValueError, match="sample_seed=1, sample_max=8"):
            build_features(log, load_signals(None), max_prompts=8, seed=1)
