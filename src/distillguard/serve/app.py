"""The decision service: ``POST /v1/decide``, ``/healthz``, ``/metrics``, ``/openapi.json``.

``create_app`` builds a plain ASGI application around a :class:`DecisionEngine`;
``distillguard serve`` runs it with uvicorn (uvloop + httptools when installed) on
127.0.0.1. The three service routes are answered directly, without a web framework on the
request path: the body is read under the size limit (413 beyond ``max_body_bytes``),
parsed with orjson, checked against the :class:`DecideRequest` schema with msgspec (422
naming the field) and handed to the engine, whose answer is encoded with msgspec. Every
route but ``/healthz`` and the documentation needs ``Authorization: Bearer <token>`` when a
token is set. The OpenAPI 3.1 spec (built from the same msgspec types) is at
``/openapi.json``, with FastAPI's interactive page at ``/docs``.
"""

from __future__ import annotations

import asyncio
import gc
import hmac
import sys
from typing import Annotated, Any

import msgspec
import orjson

from .. import __version__
from ..errors import InputError
from .engine import DecisionEngine


class ThinkingConfig(msgspec.Struct, kw_only=True):
    """Anthropic's form of ``thinking``: ``{"type": "enabled", "budget_tokens": N}`` (or
    ``{"type": "disabled"}``); the contract reader counts it as the budget (0 if disabled)."""

    type: Annotated[str, msgspec.Meta(description="enabled | disabled")]
    budget_tokens: Annotated[int, msgspec.Meta(ge=0)] | None = None


class DecideRequest(msgspec.Struct, kw_only=True):
    """One request's metadata (contract.md §1 fields); ``prompt`` / ``messages`` optional.
    Other fields (e.g. inline account fields such as ``verified``) are passed on as sent."""

    account_id: Annotated[str, msgspec.Meta(min_length=1, max_length=256)]
    ts: Annotated[str | float | None,
                  msgspec.Meta(description="RFC 3339 or epoch seconds; default now")] = None
    request_id: str | None = None
    api_key_id: str | None = None
    model: str | None = None
    prompt: str | None = None
    messages: list[dict[str, Any]] | None = None
    system: str | None = None
    tools: list[dict[str, Any]] | None = None
    max_tokens: int | None = None
    temperature: float | None = None
    thinking: bool | int | ThinkingConfig | None = None
    logprobs: bool | int | None = None
    ip: str | None = None
    asn: int | None = None
    country: str | None = None
    user_agent: str | None = None
    tls_fingerprint: str | None = None
    tier: str | None = None


class DecideResponse(msgspec.Struct, kw_only=True):
    """The action for the request and the account state it was decided from."""

    account_id: str
    action: Annotated[str, msgspec.Meta(description="allow | monitor | step_up | throttle | "
                                                    "withhold_reasoning | block")]
    rate_per_minute: float | None
    score: float
    verdict: str
    reasons: list[str]
    cluster_id: str | None
    exchanges_seen: int | None
    rule: str
    policy_id: str
    policy_version: int


def openapi_spec() -> dict:
    """OpenAPI 3.1 document of the service, schemas generated from the msgspec types."""
    (req, resp), components = msgspec.json.schema_components(
        [DecideRequest, DecideResponse], ref_template="#/components/schemas/{name}")
    err = {"description": "error", "content": {"application/json": {"schema": {
        "type": "object", "properties": {"detail": {"type": "string"}}}}}}
    secured = [{"bearer": []}]
    return {
        "openapi": "3.1.0",
        "info": {"title": "distillguard decision service", "version": __version__,
                 "description": "Decide per request whether to serve, slow, step up, strip "
                                "reasoning from, or block an account's traffic."},
        "paths": {
            "/v1/decide": {"post": {
                "summary": "Learn the request into the online state and return the action",
                "operationId": "decide", "security": secured,
                "requestBody": {"required": True,
                                "content": {"application/json": {"schema": req}}},
                "responses": {"200": {"description": "the decision",
                                      "content": {"application/json": {"schema": resp}}},
                              "401": err, "413": err, "422": err}}},
            "/healthz": {"get": {"summary": "Liveness, policy in force, accounts in the state",
                                 "operationId": "healthz",
                                 "responses": {"200": {"description": "ok"},
                                               "503": {"description": "learner down"}}}},
            "/metrics": {"get": {"summary": "Prometheus text exposition",
                                 "operationId": "metrics", "security": secured,
                                 "responses": {"200": {"description": "metrics",
                                                       "content": {"text/plain": {}}},
                                               "401": err}}},
        },
        "components": {"schemas": components,
                       "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
    }


_JSON = [(b"content-type", b"application/json")]
_decode_request = msgspec.json.Decoder()
_encode = msgspec.json.Encoder()


class _TooLarge(Exception):
    pass


async def _respond(send, status: int, body: bytes, headers=_JSON) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [*headers, (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


def _error(status: int, detail: str) -> tuple[int, bytes]:
    return status, orjson.dumps({"detail": detail})


class DecisionService:
    """The ASGI application (see the module docstring)."""

    def __init__(self, engine: DecisionEngine, *, token: str | None, max_body_bytes: int):
        self.engine = engine
        self.token = token.encode() if token is not None else None
        self.max_body_bytes = max_body_bytes
        self.spec = openapi_spec()
        self._docs = None

    async def __call__(self, scope, receive, send):
        kind = scope["type"]
        if kind == "lifespan":
            return await self._lifespan(receive, send)
        if kind != "http":
            return
        path, method = scope["path"], scope["method"]
        if path == "/v1/decide" and method == "POST":
            status, body = await self._decide(scope, receive)
            if status == 401:
                return await _respond(send, 401, body,
                                      [*_JSON, (b"www-authenticate", b"Bearer")])
            return await _respond(send, status, body)
        if path == "/healthz" and method == "GET":
            eng = self.engine
            return await _respond(send, 503 if eng.learner_error else 200, orjson.dumps({
                "status": "error" if eng.learner_error else "ok",
                "policy": {"id": eng.policy.id, "version": eng.policy.version},
                "accounts": eng.n_accounts, "learner": eng.learner_error or eng.learner}))
        if path == "/metrics" and method == "GET":
            if not self._authorised(scope):
                return await _respond(send, *_error(401, "missing or wrong bearer token"),
                                      [*_JSON, (b"www-authenticate", b"Bearer")])
            return await _respond(send, 200, self.engine.metrics_text().encode(),
                                  [(b"content-type",
                                    b"text/plain; version=0.0.4; charset=utf-8")])
        if path == "/openapi.json" and method == "GET":
            return await _respond(send, 200, orjson.dumps(self.spec))
        if path in ("/v1/decide", "/healthz", "/metrics"):
            return await _respond(send, *_error(405, "method not allowed"))
        if path.startswith("/docs"):
            return await self._docs_app()(scope, receive, send)
        return await _respond(send, *_error(404, "not found"))

    def _authorised(self, scope) -> bool:
        if self.token is None:
            return True
        for k, v in scope["headers"]:
            if k == b"authorization":
                scheme, _, cred = v.partition(b" ")
                return scheme.lower() == b"bearer" and hmac.compare_digest(cred.strip(),
                                                                           self.token)
        return False

    async def _body(self, scope, receive) -> bytes:
        for k, v in scope["headers"]:
            if k == b"content-length" and v.isdigit() and int(v) > self.max_body_bytes:
                raise _TooLarge
        chunks, seen, more = [], 0, True
        while more:
            msg = await receive()
            if msg["type"] != "http.request":
                break
            chunk = msg.get("body", b"")
            seen += len(chunk)
            if seen > self.max_body_bytes:
                raise _TooLarge
            chunks.append(chunk)
            more = msg.get("more_body", False)
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    async def _decide(self, scope, receive) -> tuple[int, bytes]:
        eng = self.engine
        if not self._authorised(scope):
            eng.errors += 1
            return _error(401, "missing or wrong bearer token")
        try:
            raw = await self._body(scope, receive)
        except _TooLarge:
            eng.errors += 1
            return _error(413, "request body too large")
        try:
            rec = _decode_request.decode(raw)
            if not isinstance(rec, dict):
                raise msgspec.ValidationError("Expected `object` - at `$`")
            msgspec.convert(rec, DecideRequest, strict=False)     # types and constraints
            rec = {k: v for k, v in rec.items() if v is not None}
            d = (await asyncio.to_thread(eng.decide, rec)) if eng.sync else eng.decide(rec)
        except (msgspec.ValidationError, msgspec.DecodeError, InputError) as err:
            eng.errors += 1
            return _error(422, str(err))
        return 200, _encode.encode(DecideResponse(
            account_id=d.account_id, action=d.action, rate_per_minute=d.rate_per_minute,
            score=d.score, verdict=d.verdict, reasons=list(d.reasons),
            cluster_id=d.cluster_id, exchanges_seen=d.exchanges_seen, rule=d.rule,
            policy_id=d.policy_id, policy_version=d.policy_version))

    def _docs_app(self):
        """FastAPI's Swagger UI page for the spec (built on first request)."""
        if self._docs is None:
            from fastapi import FastAPI

            app = FastAPI(openapi_url="/openapi.json", docs_url="/docs", redoc_url=None)
            app.openapi = lambda: self.spec
            self._docs = app
        return self._docs

    async def _lifespan(self, receive, send) -> None:
        while True:
            msg = await receive()
            if msg["type"] == "lifespan.startup":
                self.engine.start()
                await send({"type": "lifespan.startup.complete"})
            elif msg["type"] == "lifespan.shutdown":
                self.engine.stop()
                await send({"type": "lifespan.shutdown.complete"})
                return


def quiet_runtime(switch_interval_s: float = 0.001) -> None:
    """Tail-latency settings for a serving process, once everything is imported: the
    objects alive now move to the garbage collector's permanent generation (``gc.freeze``:
    a full collection no longer walks the hundreds of thousands of objects of the imported
    libraries, a pause of tens of ms), and a background thread (the learner's sender and
    receiver) holds the GIL at most ``switch_interval_s`` before the event loop gets it back
    (Python's default: 5 ms)."""
    gc.collect()
    gc.freeze()
    sys.setswitchinterval(switch_interval_s)


def create_app(engine: DecisionEngine | None = None, *, token: str | None = None,
               max_body_bytes: int = 256 * 1024) -> DecisionService:
    """The ASGI app around ``engine`` (a default one if None). ``token=None``: no auth."""
    return DecisionService(engine or DecisionEngine(), token=token,
                           max_body_bytes=max_body_bytes)
