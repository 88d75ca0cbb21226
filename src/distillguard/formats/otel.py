"""OTLP JSON traces with OpenTelemetry GenAI semantic-convention attributes.

One ``ExportTraceServiceRequest`` JSON document per line (the collector's file exporter,
``MessageToJson`` of the protobuf): ``resourceSpans[].scopeSpans[].spans[]`` with
``attributes`` as ``[{key, value: {stringValue|intValue|doubleValue|boolValue|arrayValue|
kvlistValue}}]`` (snake_case keys are accepted too). Each GenAI inference span (``chat``,
``text_completion``, ``generate_content``, or no ``gen_ai.operation.name`` but a
``gen_ai.request.model``) is one exchange; other spans (HTTP, embeddings, tool execution,
agent wrappers) are not exchanges and are passed over.

Mapping (docs/formats/otel.md): ``startTimeUnixNano`` → ts; ``enduser.id``, else ``user.id``
(span, then resource attributes) → account_id; ``gen_ai.response.id`` → request_id;
``gen_ai.request.model`` → model; ``gen_ai.input.messages`` (parts, JSON string or list) →
messages; ``gen_ai.system_instructions`` → system; ``gen_ai.tool.definitions`` → tools;
``gen_ai.output.messages`` → response; ``gen_ai.usage.input_tokens`` / ``output_tokens``;
``gen_ai.request.max_tokens`` / ``temperature``; ``http.response.status_code`` → status;
``client.address`` → ip; ``user_agent.original``; ``geo.country.iso_code`` → country;
``tls.client.ja4`` / ``tls.client.ja3`` → tls_fingerprint. Legacy OpenLLMetry attributes
``gen_ai.prompt.N.role/content`` and ``gen_ai.completion.N.content`` are read too.
"""

from __future__ import annotations

from collections.abc import Iterator

import orjson

from ._base import RecordError, iso_from_ns

ACCOUNT_HINT = ("the span has no enduser.id or user.id attribute (span or resource); name the "
                "attribute that identifies the account with --account-from ATTRIBUTE (e.g. "
                "--account-from service.name or --account-from tenant.id)")
TS_HINT = "the span has no startTimeUnixNano; name a field with --ts-from FIELD"

_INFERENCE_OPS = frozenset(("chat", "text_completion", "generate_content"))
_IMAGE = frozenset(("image",))


def sniff(rec: dict) -> bool:
    return "resourceSpans" in rec or "resource_spans" in rec


def _g(d: dict, camel: str, snake: str) -> object:
    v = d.get(camel)
    return d.get(snake) if v is None else v


def _any(v: object) -> object:
    """Python value of an OTLP ``AnyValue``."""
    if type(v) is not dict:
        return None
    for k, val in v.items():
        if k in ("stringValue", "string_value", "boolValue", "bool_value", "doubleValue",
                 "double_value", "bytesValue", "bytes_value"):
            return val
        if k in ("intValue", "int_value"):
            return int(val)
        if k in ("arrayValue", "array_value"):
            return [_any(x) for x in (val or {}).get("values", [])]
        if k in ("kvlistValue", "kvlist_value"):
            return _attrs((val or {}).get("values", []))
    return None


def _attrs(kvs: object) -> dict:
    if not kvs:
        return {}
    if type(kvs) is not list:
        raise RecordError("bad_type:attributes", "attributes", "expected a key/value list")
    return {kv.get("key"): _any(kv.get("value")) for kv in kvs if type(kv) is dict}


def _json(v: object, name: str) -> object:
    if type(v) is str:
        try:
            return orjson.loads(v)
        except orjson.JSONDecodeError:
            raise RecordError(f"bad_type:{name}", name, "invalid JSON string") from None
    return v


def _part(p: object) -> object:
    """An OTel GenAI message part as a contract content part."""
    if type(p) is not dict:
        return p
    kind = p.get("type")
    if kind == "text":
        return {"type": "text", "text": p.get("content")}
    if kind == "tool_call_response":
        return {"type": "tool_result", "tool_use_id": p.get("id")}
    if kind == "tool_call":
        return {"type": "tool_use", "id": p.get("id"), "name": p.get("name")}
    if kind in ("blob", "uri", "file") and p.get("modality") in _IMAGE:
        return {"type": "image"}
    return p


def _messages(msgs: object) -> object:
    """GenAI ``{role, parts}`` messages as contract ``{role, content}`` messages."""
    if type(msgs) is not list:
        return msgs
    out = []
    for m in msgs:
        if type(m) is dict and "parts" in m and "content" not in m:
            parts = m.get("parts")
            m = {"role": m.get("role"),
                 "content": [_part(p) for p in parts] if type(parts) is list else parts}
        out.append(m)
    return out


def _parts_text(v: object) -> str | None:
    if v is None or type(v) is str:
        return v
    if type(v) is list:
        t = [p.get("content") for p in v if type(p) is dict and p.get("type") == "text"
             and type(p.get("content")) is str]
        return "\n".join(t) if t else None
    return None


def _output_text(v: object) -> str | None:
    if type(v) is not list:
        return v if type(v) is str else None
    texts = [_parts_text(m.get("parts")) for m in v if type(m) is dict]
    texts = [t for t in texts if t]
    return "\n".join(texts) if texts else None


def _legacy(a: dict, prefix: str) -> list[dict]:
    """OpenLLMetry indexed attributes ``gen_ai.prompt.N.role`` / ``.content``."""
    rows: dict[int, dict] = {}
    for k, v in a.items():
        if k.startswith(prefix):
            i, _, f = k[len(prefix):].partition(".")
            if i.isdigit() and f in ("role", "content"):
                rows.setdefault(int(i), {})[f] = v
    return [rows[i] for i in sorted(rows)]


def _span(span: dict, res: dict) -> tuple[dict, dict] | None:
    a = _attrs(span.get("attributes"))
    op = a.get("gen_ai.operation.name")
    if not (op in _INFERENCE_OPS or (op is None and "gen_ai.request.model" in a)):
        return None
    view = {**res, **a, **{k: v for k, v in span.items() if k != "attributes"}}
    start = _g(span, "startTimeUnixNano", "start_time_unix_nano")
    ts = None
    if start is not None:
        try:
            ts = iso_from_ns(int(start))
        except (TypeError, ValueError):
            raise RecordError("bad_ts", "ts", f"bad startTimeUnixNano {start!r}") from None
    msgs = a.get("gen_ai.input.messages")
    if msgs is not None:
        msgs = _messages(_json(msgs, "gen_ai.input.messages"))
    else:
        msgs = _legacy(a, "gen_ai.prompt.") or None
    out_msgs = a.get("gen_ai.output.messages")
    if out_msgs is not None:
        response = _output_text(_json(out_msgs, "gen_ai.output.messages"))
    else:
        comp = _legacy(a, "gen_ai.completion.")
        response = "\n".join(str(c["content"]) for c in comp if c.get("content")) or None
    system = a.get("gen_ai.system_instructions")
    if system is not None:
        system = _json(system, "gen_ai.system_instructions") if system[:1] in "[{" else system
        system = _parts_text(system) if type(system) is list else system
    tools = a.get("gen_ai.tool.definitions")
    if tools is not None:
        tools = _json(tools, "gen_ai.tool.definitions")
    acc = a.get("enduser.id") or a.get("user.id") or res.get("enduser.id") or res.get("user.id")
    return {
        "ts": ts,
        "account_id": acc,
        "request_id": a.get("gen_ai.response.id"),
        "model": a.get("gen_ai.request.model") or a.get("gen_ai.response.model"),
        "messages": msgs,
        "system": system,
        "tools": tools,
        "response": response,
        "input_tokens": a.get("gen_ai.usage.input_tokens", a.get("gen_ai.usage.prompt_tokens")),
        "output_tokens": a.get("gen_ai.usage.output_tokens",
                               a.get("gen_ai.usage.completion_tokens")),
        "max_tokens": a.get("gen_ai.request.max_tokens"),
        "temperature": a.get("gen_ai.request.temperature"),
        "status": a.get("http.response.status_code"),
        "ip": a.get("client.address") or res.get("client.address"),
        "user_agent": a.get("user_agent.original") or res.get("user_agent.original"),
        "country": a.get("geo.country.iso_code") or a.get("client.geo.country.iso_code"),
        "tls_fingerprint": a.get("tls.client.ja4") or a.get("tls.client.ja3"),
    }, view


def records(rec: dict) -> Iterator[tuple[dict, dict] | RecordError]:
    rss = _g(rec, "resourceSpans", "resource_spans")
    if type(rss) is not list:
        raise RecordError("bad_type:resourceSpans", "resourceSpans", "expected a list")
    for rs in rss:
        if type(rs) is not dict:
            raise RecordError("bad_type:resourceSpans", "resourceSpans", "expected objects")
        res = _attrs((rs.get("resource") or {}).get("attributes"))
        for ss in _g(rs, "scopeSpans", "scope_spans") or ():
            for span in (ss or {}).get("spans") or ():
                if type(span) is not dict:
                    raise RecordError("bad_type:spans", "spans", "expected span objects")
                try:
                    r = _span(span, res)
                except RecordError as e:
                    yield e
                    continue
                if r is not None:
                    yield r
