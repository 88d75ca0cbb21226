"""Plain ASGI middleware that enforces distillguard decisions in a Starlette/FastAPI gateway.

For each ``POST`` to one of ``paths`` it reads the JSON body, builds a contract record
(account from ``account_header``, client IP, user agent, and the gateway's own account
metadata from ``account_info(account_id) -> dict``, never from the client), asks the
:class:`~distillguard.serve.engine.DecisionEngine`, and enforces the action:

- ``block`` and ``throttle`` over the account's rate: 429 with ``Retry-After``;
- ``step_up``: 403 ``{"error": "verification_required"}``;
- ``withhold_reasoning``: reasoning options are removed from the request and reasoning
  content from the response (JSON, and each ``data:`` event of a server-sent stream);
- ``allow`` / ``monitor``: passed through. The decision is set as ``X-Distillguard-Action``.
"""

from __future__ import annotations

import json

from .engine import DecisionEngine
from .enforce import record_from_request, strip_reasoning, strip_reasoning_request


class DistillguardMiddleware:
    def __init__(self, app, engine: DecisionEngine, *, account_header: str = "x-account-id",
                 paths=("/v1/chat/completions", "/v1/completions", "/v1/messages",
                        "/chat/completions"), account_info=None) -> None:
        self.app = app
        self.account_info = account_info
        self.engine = engine
        self.account_header = account_header.lower().encode()
        self.paths = tuple(paths)

    async def __call__(self, scope, receive, send):
        if (scope["type"] != "http" or scope.get("method") != "POST"
                or not scope.get("path", "").startswith(self.paths)):
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers") or [])
        account = headers.get(self.account_header, b"").decode() or None
        chunks, more = [], True
        while more:
            msg = await receive()
            chunks.append(msg.get("body", b""))
            more = msg.get("more_body", False)
        raw = b"".join(chunks)
        try:
            body = json.loads(raw or b"{}")
        except ValueError:
            body = None
        if account is None or not isinstance(body, dict):
            return await _json(send, 400, {"error": "distillguard: need a JSON body and the "
                                                    f"{self.account_header.decode()} header"})
        client = scope.get("client")
        rec = record_from_request(body, account_id=account,
                                  ip=client[0] if client else None,
                                  user_agent=headers.get(b"user-agent", b"").decode() or None)
        if self.account_info is not None:      # trusted account metadata (tier, verified …)
            rec.update(self.account_info(account) or {})
        d = self.engine.decide(rec)
        act = d.action
        if act == "throttle" and self.engine.buckets.allow(account, d.rate_per_minute):
            act = "allow"
        if act in ("block", "throttle"):
            retry = "3600" if act == "block" else str(max(1, int(60 / d.rate_per_minute)))
            return await _json(send, 429, {"error": f"distillguard: {d.action}",
                                           "rule": d.rule}, [(b"retry-after", retry.encode())])
        if act == "step_up":
            return await _json(send, 403, {"error": "verification_required", "rule": d.rule})
        withhold = act == "withhold_reasoning"
        if withhold:
            raw = json.dumps(strip_reasoning_request(body)).encode()
        sent = False

        async def replay():
            nonlocal sent
            if sent:                   # body already given: wait for the real disconnect
                return await receive()
            sent = True
            return {"type": "http.request", "body": raw, "more_body": False}

        tag = (b"x-distillguard-action", d.action.encode())
        if not withhold:
            async def send_tagged(msg):
                if msg["type"] == "http.response.start":
                    msg = {**msg, "headers": list(msg.get("headers", [])) + [tag]}
                await send(msg)
            return await self.app(_with_len(scope, len(raw)), replay, send_tagged)
        await self.app(_with_len(scope, len(raw)), replay, _Stripper(send, tag))


def _with_len(scope, n: int):
    hs = [(k, v) for k, v in scope.get("headers", []) if k != b"content-length"]
    return {**scope, "headers": hs + [(b"content-length", str(n).encode())]}


class _Stripper:
    """Send wrapper that removes reasoning content from JSON or SSE responses."""

    def __init__(self, send, tag) -> None:
        self.send, self.tag = send, tag
        self.start = None
        self.buf: list[bytes] = []
        self.sse = False

    async def __call__(self, msg):
        if msg["type"] == "http.response.start":
            hs = [(k, v) for k, v in msg.get("headers", []) if k != b"content-length"]
            ctype = dict(hs).get(b"content-type", b"")
            self.sse = b"event-stream" in ctype
            self.start = {**msg, "headers": hs + [self.tag]}
            if self.sse:
                await self.send(self.start)
            return
        if msg["type"] != "http.response.body":
            return await self.send(msg)
        body, more = msg.get("body", b""), msg.get("more_body", False)
        if self.sse:
            return await self.send({**msg, "body": _strip_sse(body)})
        self.buf.append(body)
        if more:
            return
        data = b"".join(self.buf)
        try:
            data = json.dumps(strip_reasoning(json.loads(data))).encode()
        except ValueError:
            pass
        self.start["headers"].append((b"content-length", str(len(data)).encode()))
        await self.send(self.start)
        await self.send({"type": "http.response.body", "body": data})


def _strip_sse(chunk: bytes) -> bytes:
    out = []
    for line in chunk.split(b"\n"):
        if line.startswith(b"data:") and line[5:].strip() not in (b"", b"[DONE]"):
            try:
                line = b"data: " + json.dumps(strip_reasoning(json.loads(line[5:]))).encode()
            except ValueError:
                pass
        out.append(line)
    return b"\n".join(out)


async def _json(send, status: int, obj: dict, extra=()) -> None:
    body = json.dumps(obj).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode()), *extra]})
    await send({"type": "http.response.body", "body": body})
