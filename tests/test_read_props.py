"""Property tests: random valid records read back the same from JSONL and Parquet."""

from __future__ import annotations

import ipaddress
from datetime import datetime, timedelta, timezone

import orjson
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from distillguard.read import iter_event_batches, stable_hash64
from distillguard.schema import EVENT_SCHEMA

EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
text = st.text(max_size=12)
maybe = lambda s: st.none() | s  # noqa: E731
message = st.fixed_dictionaries({
    "role": st.sampled_from(["user", "assistant", "system", "tool", "developer"]),
    "content": maybe(text),
})
tool = st.fixed_dictionaries({"name": maybe(st.sampled_from(["a", "b", "c", ""])),
                              "description": text, "parameters": st.just("{}")})
i64 = st.integers(min_value=0, max_value=2**40)


@st.composite
def record(draw):
    us = draw(st.integers(min_value=0, max_value=4_000_000_000 * 10**6))
    msgs = draw(maybe(st.lists(message, max_size=5)))
    prompt = draw(maybe(text))
    if not prompt and not msgs:
        prompt = draw(st.text(min_size=1, max_size=8))
    return {
        "ts": EPOCH + timedelta(microseconds=us),
        "account_id": draw(st.text(min_size=1, max_size=6)),
        "model": draw(maybe(st.sampled_from(["m1", "m2"]))),
        "messages": msgs,
        "prompt": prompt,
        "system": draw(maybe(text)),
        "tools": draw(maybe(st.lists(tool, max_size=4))),
        "input_tokens": draw(maybe(i64)),
        "temperature": draw(maybe(st.floats(0, 2, allow_nan=False))),
        "thinking": draw(maybe(st.booleans())),
        "logprobs": draw(maybe(st.integers(0, 20))),
        "ip": draw(maybe(st.ip_addresses().map(str))),
        "verified": draw(maybe(st.booleans())),
    }


PARQUET_SCHEMA = pa.schema([
    ("ts", pa.timestamp("us", "UTC")), ("account_id", pa.string()), ("model", pa.string()),
    ("messages", pa.list_(pa.struct([("role", pa.string()), ("content", pa.string())]))),
    ("prompt", pa.string()), ("system", pa.string()),
    ("tools", pa.list_(pa.struct([("name", pa.string()), ("description", pa.string()),
                                  ("parameters", pa.string())]))),
    ("input_tokens", pa.int64()), ("temperature", pa.float64()), ("thinking", pa.bool_()),
    ("logprobs", pa.int32()), ("ip", pa.string()), ("verified", pa.bool_()),
])


def expected(rec: dict) -> dict:
    """Independent, plain-Python statement of the documented normalisation."""
    msgs = rec["messages"] or []
    non_sys = [m for m in msgs if m["role"] not in ("system", "developer")]
    users = [m for m in msgs if m["role"] == "user"]
    user_texts = [m["content"] for m in users if m["content"] is not None]
    sys_texts = [m["content"] for m in msgs
                 if m["role"] in ("system", "developer") and m["content"] is not None]
    system = rec["system"] if rec["system"] is not None else (
        "\n".join(sys_texts) if sys_texts else None)
    ip = rec["ip"] and ipaddress.ip_address(rec["ip"])
    if ip and ip.version == 6 and ip.ipv4_mapped:
        ip = ip.ipv4_mapped
    prefix = ip and str(ipaddress.ip_network(f"{ip}/{24 if ip.version == 4 else 48}",
                                             strict=False))
    names = sorted({t["name"] for t in rec["tools"] or [] if t["name"]})
    return {
        "ts": rec["ts"], "account_id": rec["account_id"],
        "prompt": rec["prompt"] if rec["prompt"] else (user_texts[-1] if user_texts else None),
        "system": system,
        "system_hash": None if system is None else stable_hash64(system),
        "n_turns": len(non_sys) if msgs else 1, "n_user_turns": len(users) if msgs else 1,
        "tool_names": names,
        "tools_hash": stable_hash64("\x1f".join(names)) if names else None,
        "has_tool_results": any(m["role"] == "tool" for m in msgs),
        "thinking": None if rec["thinking"] is None else int(rec["thinking"]),
        "logprobs": rec["logprobs"], "input_tokens": rec["input_tokens"],
        "temperature": rec["temperature"], "ip_prefix": prefix, "verified": rec["verified"],
    }


def _read(path) -> pl.DataFrame:
    frames = list(iter_event_batches(path, batch_rows=7))
    return pl.concat(frames, how="diagonal_relaxed")


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(recs=st.lists(record(), min_size=1, max_size=15))
def test_jsonl_and_parquet_agree_with_spec(tmp_path_factory, recs):
    d = tmp_path_factory.mktemp("p")
    js = d / "e.jsonl"
    js.write_bytes(b"".join(
        orjson.dumps({k: v for k, v in r.items() if v is not None},
                     option=orjson.OPT_UTC_Z) + b"\n" for r in recs))
    pq.write_table(pa.Table.from_pylist(recs, schema=PARQUET_SCHEMA), d / "e.parquet",
                   row_group_size=5)
    a, b = _read(js), _read(d / "e.parquet")
    ev = list(EVENT_SCHEMA)
    assert a.select(ev).schema == pl.Schema(EVENT_SCHEMA)
    assert a.select(ev).equals(b.select(ev))
    rows = a.to_dicts()
    for rec, row in zip(recs, rows, strict=True):
        for k, v in expected(rec).items():
            assert row.get(k) == v, (k, rec)  # account fields only when given
