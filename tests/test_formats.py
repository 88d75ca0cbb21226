"""Source formats (LiteLLM, OTel GenAI OTLP JSON, OpenAI / Anthropic batch files).

The round-trip tests convert the simulator's demo log to each format (OTel spans through the
real opentelemetry-sdk), read it back, and compare the normalised events, and the detector's
accounts.csv, with those of the contract form restricted to the fields the format carries.
"""

from __future__ import annotations

import json
import os
from datetime import datetime, timezone
from pathlib import Path

import polars as pl
import pytest
from click.testing import CliRunner
from polars.testing import assert_frame_equal

from distillguard.cli import cli
from distillguard.errors import ConfigError, InputError
from distillguard.formats import get_path, sniff
from distillguard.formats.convert import convert
from distillguard.read import read_log
from distillguard.schema import EVENT_SCHEMA
from distillguard.validate import validate

# --------------------------------------------------------------------------------------------
# contract -> source format converters (test side)
# --------------------------------------------------------------------------------------------


def _epoch(ts: datetime) -> float:
    return ts.timestamp()


def _msgs(r: dict) -> list[dict]:
    """OpenAI-style messages with the system field as a leading system message."""
    msgs = [dict(m) for m in (r["messages"] or [])]
    if r["system"] is not None:
        msgs.insert(0, {"role": "system", "content": r["system"]})
    return msgs


def _openai_tools(tools):
    if tools is None:
        return None
    return [{"type": "function", "function": {"name": t["name"], "description": t["description"],
                                              "parameters": json.loads(t["parameters"])}}
            for t in tools]


def _thinking(n):
    if n is None:
        return None
    return {"type": "disabled"} if n == 0 else (
        {"type": "enabled", "budget_tokens": n} if n > 1 else {"type": "enabled"})


def to_litellm(rows: list[dict]) -> list[dict]:
    out = []
    for r in rows:
        mp = {k: v for k, v in {
            "max_tokens": r["max_tokens"], "temperature": r["temperature"],
            "tools": _openai_tools(r["tools"]), "thinking": _thinking(r["thinking"]),
            "logprobs": None if r["logprobs"] is None else r["logprobs"] > 0,
            "top_logprobs": r["logprobs"] if (r["logprobs"] or 0) > 1 else None,
        }.items() if v is not None}
        ok = r["status"] == 200
        out.append({
            "id": r["request_id"], "litellm_call_id": r["request_id"], "call_type": "acompletion",
            "status": "success" if ok else "failure",
            "error_information": None if ok else {"error_code": str(r["status"])},
            "startTime": _epoch(r["ts"]), "endTime": _epoch(r["ts"]) + 1.0,
            "model": "openai/" + r["model"], "model_group": r["model"],
            "metadata": {"user_api_key_team_id": r["account_id"],
                         "user_api_key_hash": r["api_key_id"],
                         "requester_ip_address": r["ip"], "user_agent": r["user_agent"]},
            "requester_ip_address": r["ip"], "user_agent": r["user_agent"],
            "messages": _msgs(r), "response": None,
            "prompt_tokens": r["input_tokens"], "completion_tokens": r["output_tokens"],
            "model_parameters": mp,
        })
    return out


def _otel_parts(m: dict) -> dict:
    if m["role"] == "tool":
        return {"role": "tool", "parts": [{"type": "tool_call_response", "id": "t",
                                           "response": m["content"]}]}
    return {"role": m["role"], "parts": [{"type": "text", "content": m["content"]}]}


def to_otel_lines(rows: list[dict], per_line: int = 1000) -> list[str]:
    """OTLP JSON lines of spans made by the real opentelemetry-sdk (in-memory exporter)."""
    from google.protobuf.json_format import MessageToJson
    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import (
        InMemorySpanExporter,
    )
    from opentelemetry.trace import SpanKind

    exporter = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": "llm-gateway"}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("distillguard-test")
    lines = []
    for i, r in enumerate(rows):
        attrs = {
            "gen_ai.operation.name": "chat", "gen_ai.provider.name": "helix",
            "gen_ai.request.model": r["model"], "gen_ai.response.id": r["request_id"],
            "gen_ai.input.messages": json.dumps([_otel_parts(m) for m in r["messages"]]),
            "gen_ai.system_instructions": None if r["system"] is None else json.dumps(
                [{"type": "text", "content": r["system"]}]),
            "gen_ai.tool.definitions": None if r["tools"] is None else json.dumps(
                [{"type": "function", "name": t["name"], "description": t["description"],
                  "parameters": json.loads(t["parameters"])} for t in r["tools"]]),
            "gen_ai.usage.input_tokens": r["input_tokens"],
            "gen_ai.usage.output_tokens": r["output_tokens"],
            "gen_ai.request.max_tokens": r["max_tokens"],
            "gen_ai.request.temperature": r["temperature"],
            "http.response.status_code": r["status"], "enduser.id": r["account_id"],
            "client.address": r["ip"], "user_agent.original": r["user_agent"],
            "geo.country.iso_code": r["country"],
        }
        start = int(r["ts"].timestamp()) * 10**9 + r["ts"].microsecond * 1000
        span = tracer.start_span(f"chat {r['model']}", kind=SpanKind.SERVER, start_time=start,
                                 attributes={k: v for k, v in attrs.items() if v is not None})
        span.end(end_time=start + 10**9)
        if (i + 1) % per_line == 0 or i == len(rows) - 1:
            spans = exporter.get_finished_spans()
            exporter.clear()
            lines.append(MessageToJson(encode_spans(spans), indent=None))
    return lines


def to_openai_batch(rows: list[dict]) -> list[dict]:
    out = []
    for r in rows:
        body = {"model": r["model"], "messages": _msgs(r), "max_tokens": r["max_tokens"],
                "temperature": r["temperature"], "tools": _openai_tools(r["tools"]),
                "metadata": {"account_id": r["account_id"], "ts": r["ts"].isoformat()}}
        if r["logprobs"] is not None:
            body["logprobs"] = r["logprobs"] > 0
            if r["logprobs"] > 1:
                body["top_logprobs"] = r["logprobs"]
        out.append({"custom_id": r["request_id"], "method": "POST",
                    "url": "/v1/chat/completions",
                    "body": {k: v for k, v in body.items() if v is not None}})
    return out


def _anthropic_msg(m: dict) -> dict:
    if m["role"] == "tool":
        return {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t",
                                             "content": m["content"]}]}
    return {"role": m["role"], "content": m["content"]}


def to_anthropic_batch(rows: list[dict]) -> list[dict]:
    out = []
    for r in rows:
        sys_msgs = [m["content"] for m in r["messages"] if m["role"] == "system"]
        params = {
            "model": r["model"], "max_tokens": r["max_tokens"],
            "system": r["system"] if r["system"] is not None else (
                "\n".join(sys_msgs) if sys_msgs else None),
            "messages": [_anthropic_msg(m) for m in r["messages"] if m["role"] != "system"],
            "tools": None if r["tools"] is None else [
                {"name": t["name"], "description": t["description"],
                 "input_schema": json.loads(t["parameters"])} for t in r["tools"]],
            "temperature": r["temperature"], "thinking": _thinking(r["thinking"]),
            "metadata": {"user_id": r["account_id"]},
        }
        out.append({"custom_id": r["request_id"],
                    "params": {k: v for k, v in params.items() if v is not None}})
    return out


def _write_jsonl(path: Path, recs) -> Path:
    with open(path, "w") as fh:
        for rec in recs:
            fh.write(rec if isinstance(rec, str) else json.dumps(rec))
            fh.write("\n")
    return path


# --------------------------------------------------------------------------------------------
# the demo in every format
# --------------------------------------------------------------------------------------------

try:
    import opentelemetry.exporter.otlp.proto.common  # noqa: F401
    import opentelemetry.sdk  # noqa: F401

    _HAS_OTEL = True
except ImportError:
    _HAS_OTEL = False
_NO_OTEL = "opentelemetry-sdk / opentelemetry-exporter-otlp-proto-common not installed"

CONST_TS = "2026-01-05T12:00:00+00:00"
#: raw contract fields each format cannot carry (nulled in the reference), and ts overrides
NOT_CARRIED = {
    "litellm": ("asn", "country", "tls_fingerprint"),
    "otel": ("api_key_id", "thinking", "logprobs", "asn", "tls_fingerprint"),
    "openai-batch": ("api_key_id", "input_tokens", "output_tokens", "status", "ip", "asn",
                     "country", "user_agent", "tls_fingerprint", "thinking"),
    "anthropic-batch": ("api_key_id", "input_tokens", "output_tokens", "status", "ip", "asn",
                        "country", "user_agent", "tls_fingerprint", "logprobs"),
}
READ_OPTS = {
    "litellm": {},
    "otel": {},
    "openai-batch": {"account_from": "body.metadata.account_id", "ts_from": "body.metadata.ts"},
    "anthropic-batch": {"account_from": "params.metadata.user_id", "ts_from": f"const:{CONST_TS}"},
}


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    from distillguard.simulate import simulate

    root = tmp_path_factory.mktemp("demo")
    simulate("demo", scale=0.05, seed=3, out=root / "sim")
    raw = pl.read_parquet(root / "sim" / "events")
    rows = raw.to_dicts()
    files = {
        "litellm": _write_jsonl(root / "litellm.jsonl", to_litellm(rows)),
        "otel": _write_jsonl(root / "otel.json", to_otel_lines(rows)) if _HAS_OTEL else None,
        "openai-batch": _write_jsonl(root / "openai_batch.jsonl", to_openai_batch(rows)),
        "anthropic-batch": _write_jsonl(root / "anthropic_batch.jsonl",
                                        to_anthropic_batch(rows)),
    }
    return root, raw, files


def _reference(root: Path, raw: pl.DataFrame, fmt: str) -> Path:
    ref = raw.with_columns(pl.lit(None).cast(raw.schema[c]).alias(c) for c in NOT_CARRIED[fmt])
    if fmt == "anthropic-batch":
        ref = ref.with_columns(ts=pl.lit(datetime.fromisoformat(CONST_TS)).cast(raw.schema["ts"]))
    path = root / f"ref-{fmt}" / "events.parquet"
    path.parent.mkdir(exist_ok=True)
    ref.write_parquet(path)
    return path


@pytest.mark.parametrize("fmt", list(NOT_CARRIED))
def test_demo_round_trip_same_events_and_detections(demo, fmt):
    root, raw, files = demo
    if files[fmt] is None:
        pytest.skip(_NO_OTEL)
    ref = _reference(root, raw, fmt)
    with read_log(ref) as a, read_log(files[fmt], **READ_OPTS[fmt]) as b:
        want, got = a.events.collect(), b.events.collect()
    assert got.columns == list(EVENT_SCHEMA)
    assert len(got) == len(raw)
    assert_frame_equal(got, want)
    # the columns the format carries are really filled (not null on both sides)
    for col in ("ts", "account_id", "request_id", "model", "prompt", "n_turns", "tool_names"):
        assert got[col].null_count() == 0 or col == "prompt"
    assert got["tool_names"].list.len().sum() > 0
    from distillguard.detect import detect

    d_ref = detect([ref], out=root / f"det-ref-{fmt}", accounts=root / "sim" / "accounts.csv",
                   releases=root / "sim" / "releases.csv")
    # the detector reads the source format through the reader's auto detection ...
    opts = READ_OPTS[fmt]
    if not opts:
        d_src = detect([files[fmt]], out=root / f"det-{fmt}",
                       accounts=root / "sim" / "accounts.csv",
                       releases=root / "sim" / "releases.csv")
        src_csv = d_src.out / "accounts.csv"
    else:  # ... or, when options are needed, through the CLI (which converts first)
        res = CliRunner().invoke(cli, [
            "detect", str(files[fmt]), "--out", str(root / f"det-{fmt}"), "-q",
            "--accounts", str(root / "sim" / "accounts.csv"),
            "--releases", str(root / "sim" / "releases.csv"),
            "--account-from", opts["account_from"], "--ts-from", opts["ts_from"]])
        assert res.exit_code == 0, res.output
        src_csv = root / f"det-{fmt}" / "accounts.csv"
    assert d_ref.n_events == len(raw)
    assert src_csv.read_text() == (d_ref.out / "accounts.csv").read_text()


def test_demo_convert_to_contract_round_trips(demo, tmp_path):
    _, raw, files = demo
    res = convert([files["litellm"]], tmp_path / "c.parquet")
    assert res.n_events == len(raw) and set(res.files.values()) == {"litellm"}
    with read_log(files["litellm"]) as a, read_log(res.out) as b:
        assert_frame_equal(b.events.collect(), a.events.collect())
    if files["otel"] is None:
        pytest.skip(_NO_OTEL)
    # the CLI writes the same file
    out = tmp_path / "cli.parquet"
    r = CliRunner().invoke(cli, ["convert", str(files["otel"]), "--to", "contract", "--out",
                                 str(out)])
    assert r.exit_code == 0, r.output
    assert "(otel)" in r.output
    with read_log(files["otel"]) as a, read_log(out) as b:
        assert_frame_equal(b.events.collect(), a.events.collect())


# --------------------------------------------------------------------------------------------
# detection by content, errors and options
# --------------------------------------------------------------------------------------------

LITELLM_REC = {
    "id": "chatcmpl-1", "litellm_call_id": "c1", "call_type": "acompletion", "status": "success",
    "startTime": 1767225600.5, "model": "openai/m", "model_group": "m",
    "metadata": {"user_api_key_hash": "h1", "user_api_key_team_id": "team-a",
                 "user_api_key_org_id": None},
    "messages": [{"role": "user", "content": "hi"}],
    "response": {"choices": [{"message": {"role": "assistant", "content": "hello"}}]},
    "prompt_tokens": 3, "completion_tokens": 2, "model_parameters": {"max_tokens": 9},
    "requester_ip_address": "10.0.0.7", "user_agent": "ua/1",
}
OAI_REC = {"custom_id": "r1", "method": "POST", "url": "/v1/chat/completions",
           "body": {"model": "m", "messages": [{"role": "user", "content": "hi"}]}}
ANT_REC = {"custom_id": "r1", "params": {"model": "m", "max_tokens": 5,
                                         "messages": [{"role": "user", "content": "hi"}]}}


def test_sniff_each_format():
    assert sniff(LITELLM_REC) == "litellm"
    assert sniff(OAI_REC) == "openai-batch"
    assert sniff(ANT_REC) == "anthropic-batch"
    assert sniff({"resourceSpans": []}) == "otel"
    assert sniff({"ts": 1, "account_id": "a", "prompt": "x"}) == "contract"
    assert sniff([1, 2]) == "contract"


def test_get_path_keys_indices_and_dotted_keys():
    rec = {"a": {"b": [{"c": 1}], "x.y": 2}, "enduser.id": "u"}
    assert get_path(rec, "a.b.0.c") == 1
    assert get_path(rec, "a.x.y") == 2
    assert get_path(rec, "enduser.id") == "u"
    assert get_path(rec, "a.b.5.c") is None and get_path(rec, "a.nope") is None


def test_litellm_mapping(tmp_path):
    p = _write_jsonl(tmp_path / "l.jsonl", [LITELLM_REC])
    with read_log(p) as log:
        e = log.events.collect().row(0, named=True)
    assert e["account_id"] == "team-a" and e["api_key_id"] == "h1"
    assert e["request_id"] == "c1" and e["model"] == "m" and e["response"] == "hello"
    assert e["ts"] == datetime(2026, 1, 1, 0, 0, 0, 500000, tzinfo=timezone.utc)
    assert (e["input_tokens"], e["output_tokens"], e["max_tokens"], e["status"]) == (3, 2, 9, 200)
    assert (e["ip"], e["ip_prefix"], e["user_agent"]) == ("10.0.0.7", "10.0.0.0/24", "ua/1")
    # the organisation wins over the team
    rec = json.loads(json.dumps(LITELLM_REC))
    rec["metadata"]["user_api_key_org_id"] = "org-1"
    with read_log(_write_jsonl(tmp_path / "o.jsonl", [rec])) as log:
        assert log.events.collect()["account_id"].to_list() == ["org-1"]


def test_missing_account_names_field_and_option(tmp_path):
    rec = json.loads(json.dumps(LITELLM_REC))
    rec["metadata"]["user_api_key_team_id"] = None
    p = _write_jsonl(tmp_path / "l.jsonl", [LITELLM_REC, rec])
    with pytest.raises(InputError) as ei:
        validate([p])
    msg = str(ei.value)
    assert msg.startswith(f"{p}:2: field 'account_id'")
    assert "metadata.user_api_key_team_id" in msg and "--account-from" in msg
    r = CliRunner().invoke(cli, ["validate", str(p)])
    assert r.exit_code == 2 and "Traceback" not in r.output and "--account-from" in r.output
    # the option supplies it; a path that is absent is an error naming the path
    s = validate([p], account_from="metadata.user_api_key_hash")
    assert s.records == 2 and s.accounts == 1
    with pytest.raises(InputError, match="'metadata.nope' named by --account-from"):
        validate([p], account_from="metadata.nope")
    s = validate([p], skip_invalid=True)
    assert s.records == 1 and s.invalid == {"missing_account_id": 1}


@pytest.mark.parametrize("rec,fmt", [(OAI_REC, "OpenAI"), (ANT_REC, "Anthropic")])
def test_batch_files_need_account_and_time(tmp_path, rec, fmt):
    p = _write_jsonl(tmp_path / "b.jsonl", [rec, rec | {"custom_id": "r2"}])
    r = CliRunner().invoke(cli, ["validate", str(p)])
    assert r.exit_code == 2 and "Traceback" not in r.output
    assert f"{fmt} batch files name no account" in r.output and "--account-from" in r.output
    r = CliRunner().invoke(cli, ["validate", str(p), "--account-from", "const:acct_9"])
    assert r.exit_code == 2 and "field 'ts'" in r.output and "--ts-from mtime" in r.output
    os.utime(p, (1767225600, 1767225600))
    with read_log(p, account_from="const:acct_9", ts_from="mtime") as log:
        ev = log.events.collect()
    assert ev["account_id"].to_list() == ["acct_9"] * 2
    assert ev["request_id"].to_list() == ["r1", "r2"]
    assert ev["ts"].to_list() == [datetime(2026, 1, 1, tzinfo=timezone.utc)] * 2


def test_batch_output_files_are_rejected_with_a_reason(tmp_path):
    out_line = {"id": "batch_req_1", "custom_id": "r1", "error": None,
                "response": {"status_code": 200, "body": {"choices": []}}}
    p = _write_jsonl(tmp_path / "out.jsonl", [out_line])
    with pytest.raises(InputError, match="output .results. line holds no request"):
        validate([p], account_from="const:a", ts_from="mtime")
    p = _write_jsonl(tmp_path / "res.jsonl", [{"custom_id": "r1", "result": {"type": "x"}}])
    with pytest.raises(InputError, match="result line holds no request"):
        validate([p], account_from="const:a", ts_from="mtime")


def test_otel_skips_non_genai_spans_and_reads_legacy_attributes(tmp_path):
    def kv(k, v):
        key = {str: "stringValue", int: "intValue", float: "doubleValue"}[type(v)]
        return {"key": k, "value": {key: str(v) if type(v) is int else v}}

    spans = [
        {"name": "GET /", "startTimeUnixNano": "1767225600000000000",
         "attributes": [kv("http.request.method", "GET")]},
        {"name": "chat m", "startTimeUnixNano": "1767225601123456789",
         "attributes": [kv("gen_ai.request.model", "m"), kv("gen_ai.prompt.0.role", "user"),
                        kv("gen_ai.prompt.0.content", "legacy hi"),
                        kv("gen_ai.completion.0.content", "yo"),
                        kv("gen_ai.usage.input_tokens", 4)]},
        {"name": "embeddings m", "startTimeUnixNano": "1767225602000000000",
         "attributes": [kv("gen_ai.operation.name", "embeddings"),
                        kv("gen_ai.request.model", "m")]},
    ]
    doc = {"resourceSpans": [{"resource": {"attributes": [kv("user.id", "acct-7")]},
                              "scopeSpans": [{"scope": {"name": "x"}, "spans": spans}]}]}
    p = _write_jsonl(tmp_path / "t.json", [doc])
    with read_log(p) as log:
        ev = log.events.collect()
    assert len(ev) == 1
    e = ev.row(0, named=True)
    assert (e["account_id"], e["prompt"], e["response"], e["input_tokens"]) == (
        "acct-7", "legacy hi", "yo", 4)
    assert e["ts"] == datetime(2026, 1, 1, 0, 0, 1, 123456, tzinfo=timezone.utc)
    # without a user attribute: the error names the option; with it, any attribute works
    doc["resourceSpans"][0]["resource"]["attributes"] = [kv("service.name", "gw")]
    p = _write_jsonl(tmp_path / "u.json", [doc])
    with pytest.raises(InputError, match="enduser.id or user.id.*--account-from"):
        validate([p])
    assert validate([p], account_from="service.name").accounts == 1


def test_explicit_format_and_bad_options(tmp_path):
    p = _write_jsonl(tmp_path / "l.jsonl", [LITELLM_REC])
    with pytest.raises(InputError, match="field 'ts'"):  # read as contract: no ts field
        validate([p], format="contract")
    assert validate([p], format="litellm").records == 1
    with pytest.raises(ConfigError):
        validate([p], format="nope")
    pq_path = tmp_path / "x.parquet"
    pl.DataFrame({"ts": [1], "account_id": ["a"], "prompt": ["x"]}).write_parquet(pq_path)
    with pytest.raises(InputError, match="JSON Lines only"):
        validate([pq_path], format="litellm")
    # *.json files are taken from directories only with an explicit format
    d = tmp_path / "d"
    d.mkdir()
    _write_jsonl(d / "a.json", [LITELLM_REC])
    with pytest.raises(InputError, match="no log file"):
        validate([d])
    assert validate([d], format="litellm").records == 1


def test_malformed_line_in_a_format_file_is_located(tmp_path):
    p = tmp_path / "l.jsonl"
    p.write_text(json.dumps(LITELLM_REC) + "\n{oops\n")
    with pytest.raises(InputError, match=r"l.jsonl:2: malformed JSON"):
        validate([p])
    assert validate([p], skip_invalid=True).invalid == {"malformed_json": 1}
