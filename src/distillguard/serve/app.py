"""The decision service (FastAPI): ``POST /v1/decide``, ``/healthz``, ``/metrics``.

``create_app`` builds the application around a :class:`DecisionEngine`; ``distillguard
serve`` runs it with uvicorn on 127.0.0.1. Every route but ``/healthz`` needs
``Authorization: Bearer <token>`` when a token is set; bodies over ``max_body_bytes`` get 413.
The OpenAPI spec is at ``/openapi.json``.
"""

from __future__ import annotations

import hmac
from contextlib import asynccontextmanager
from typing import Any

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse, PlainTextResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict, Field

from .. import __version__
from ..errors import InputError
from .engine import DecisionEngine


class DecideRequest(BaseModel):
    """One request's metadata (contract.md §1 fields); ``prompt`` / ``messages`` optional."""

    model_config = ConfigDict(extra="allow")
    account_id: str = Field(min_length=1, max_length=256)
    ts: str | float | None = Field(None, description="RFC 3339 or epoch seconds; default now")
    request_id: str | None = None
    api_key_id: str | None = None
    model: str | None = None
    prompt: str | None = None
    messages: list[dict[str, Any]] | None = None
    system: str | None = None
    tools: list[dict[str, Any]] | None = None
    max_tokens: int | None = None
    temperature: float | None = None
    thinking: bool | int | None = None
    logprobs: bool | int | None = None
    ip: str | None = None
    asn: int | None = None
    country: str | None = None
    user_agent: str | None = None
    tls_fingerprint: str | None = None
    tier: str | None = None


class DecideResponse(BaseModel):
    account_id: str
    action: str = Field(description="allow | monitor | step_up | throttle | "
                                    "withhold_reasoning | block")
    rate_per_minute: float | None = None
    score: float
    verdict: str
    reasons: list[str]
    cluster_id: str | None
    exchanges_seen: int | None
    rule: str
    policy_id: str
    policy_version: int


class _BodyLimit:
    """ASGI wrapper: 413 for bodies over ``limit`` bytes (declared or streamed)."""

    def __init__(self, app, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        for k, v in scope.get("headers", []):
            if k == b"content-length" and v.isdigit() and int(v) > self.limit:
                return await _too_large(send)
        seen = 0

        async def limited():
            nonlocal seen
            msg = await receive()
            if msg["type"] == "http.request":
                seen += len(msg.get("body", b""))
                if seen > self.limit:
                    raise _TooLarge
            return msg
        try:
            await self.app(scope, limited, send)
        except _TooLarge:
            await _too_large(send)


class _TooLarge(Exception):
    pass


async def _too_large(send) -> None:
    body = b'{"detail":"request body too large"}'
    await send({"type": "http.response.start", "status": 413,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


def create_app(engine: DecisionEngine | None = None, *, token: str | None = None,
               max_body_bytes: int = 256 * 1024):
    """The ASGI app (FastAPI wrapped in a body-size limit). ``token=None`` disables auth."""
    engine = engine or DecisionEngine()

    @asynccontextmanager
    async def lifespan(app):
        engine.start()
        yield
        engine.stop()

    app = FastAPI(title="distillguard decision service", version=__version__,
                  lifespan=lifespan,
                  description="Decide per request whether to serve, slow, step up, strip "
                              "reasoning from, or block an account's traffic.")
    bearer = HTTPBearer(auto_error=False)

    def auth(cred: HTTPAuthorizationCredentials | None = Depends(bearer)) -> None:
        if token is None:
            return
        if cred is None or not hmac.compare_digest(cred.credentials.encode(), token.encode()):
            engine.errors += 1
            raise HTTPException(401, "missing or wrong bearer token",
                                headers={"WWW-Authenticate": "Bearer"})

    @app.post("/v1/decide", response_model=DecideResponse, dependencies=[Depends(auth)])
    def decide(req: DecideRequest) -> DecideResponse:
        """Learn the request into the online state and return the action for it."""
        rec = req.model_dump(exclude_none=True)
        try:
            d = engine.decide(rec)
        except InputError as err:
            engine.errors += 1
            raise HTTPException(422, str(err)) from None
        return DecideResponse(account_id=d.account_id, action=d.action,
                              rate_per_minute=d.rate_per_minute, score=d.score,
                              verdict=d.verdict, reasons=list(d.reasons),
                              cluster_id=d.cluster_id, exchanges_seen=d.exchanges_seen,
                              rule=d.rule, policy_id=d.policy_id,
                              policy_version=d.policy_version)

    @app.get("/healthz")
    def healthz() -> dict:
        return {"status": "ok", "policy": {"id": engine.policy.id,
                                           "version": engine.policy.version},
                "accounts": getattr(engine.detector, "n_accounts_", 0)}

    @app.get("/metrics", response_class=PlainTextResponse, dependencies=[Depends(auth)])
    def metrics() -> PlainTextResponse:
        return PlainTextResponse(engine.metrics_text(),
                                 media_type="text/plain; version=0.0.4; charset=utf-8")

    @app.exception_handler(InputError)
    async def input_error(request: Request, err: InputError):
        return JSONResponse({"detail": str(err)}, status_code=422)

    app.state.engine = engine
    wrapped = _BodyLimit(app, max_body_bytes)
    wrapped.fastapi = app
    return wrapped
