"""Shared test harness: a real LiteLLM proxy (subprocess, offline, loopback) in front of a
fake OpenAI-compatible server run by the test."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

MASTER_KEY = "sk-master-5f1d2c3b4a5968778695a4b3c2d1e0f1"


class FakeOpenAI(BaseHTTPRequestHandler):
    """``/v1/chat/completions`` answering ``echo: <last message>`` with fixed usage; with
    ``reasoning`` set on the server, also ``reasoning_content`` (whole or streamed)."""

    def do_POST(self):
        n = int(self.headers.get("content-length", 0))
        body = json.loads(self.rfile.read(n))
        srv = self.server
        with srv.lock:
            srv.counter += 1
            k = srv.counter
            srv.requests.append(body)
        last = body["messages"][-1]["content"]
        msg = {"role": "assistant", "content": "echo: " + last}
        if srv.reasoning:
            msg["reasoning_content"] = "secret chain of thought: " + last
        usage = {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18}
        if body.get("stream"):
            self.send_response(200)
            self.send_header("content-type", "text/event-stream")
            self.end_headers()
            base = {"id": f"chatcmpl-{k}", "object": "chat.completion.chunk",
                    "created": int(time.time()), "model": body["model"]}
            deltas = [{"role": "assistant", "content": ""}]
            if srv.reasoning:
                deltas.append({"reasoning_content": msg["reasoning_content"]})
            deltas.append({"content": msg["content"]})
            for i, d in enumerate(deltas):
                ch = {**base, "choices": [{"index": 0, "delta": d, "finish_reason": None}]}
                self.wfile.write(b"data: " + json.dumps(ch).encode() + b"\n\n")
            end = {**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
                   "usage": usage}
            self.wfile.write(b"data: " + json.dumps(end).encode() + b"\n\ndata: [DONE]\n\n")
            self.wfile.flush()
            return
        out = {"id": f"chatcmpl-{k}", "object": "chat.completion",
               "created": int(time.time()), "model": body["model"],
               "choices": [{"index": 0, "finish_reason": "stop", "message": msg}],
               "usage": usage}
        data = json.dumps(out).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@contextlib.contextmanager
def fake_openai(*, reasoning: bool = False):
    """A running fake upstream on 127.0.0.1; ``.requests`` holds the bodies it received."""
    srv = ThreadingHTTPServer(("127.0.0.1", 0), FakeOpenAI)
    srv.reasoning, srv.counter, srv.requests, srv.lock = reasoning, 0, [], threading.Lock()
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        yield srv
    finally:
        srv.shutdown()
        srv.server_close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def post(port: int, key: str, payload: dict, ua: str = "test-client/1.0",
         *, raw: bool = False):
    """POST a chat completion; returns the JSON answer (raises HTTPError on errors), or
    with ``raw`` (status, headers, body bytes) without raising."""
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}/v1/chat/completions", data=json.dumps(payload).encode(),
        headers={"Authorization": f"Bearer {key}", "content-type": "application/json",
                 "user-agent": ua})
    try:
        with _OPENER.open(req, timeout=20) as r:
            data, status, headers = r.read(), r.status, dict(r.headers)
    except urllib.error.HTTPError as e:
        if not raw:
            raise
        return e.code, dict(e.headers), e.read()
    return (status, headers, data) if raw else json.loads(data)


@contextlib.contextmanager
def litellm_proxy(root: Path, config: str, *, files: dict[str, str] | None = None,
                  env: dict[str, str] | None = None, start_timeout: float = 45):
    """Write ``config.yaml`` (+ ``files``) into ``root`` and run ``litellm`` on a free
    loopback port until the block ends; yields the port. Offline: the local cost map."""
    for name, text in (files or {}).items():
        (root / name).write_text(text)
    (root / "config.yaml").write_text(config)
    port = free_port()
    penv = {k: v for k, v in os.environ.items() if k.lower() not in (
        "http_proxy", "https_proxy", "all_proxy")}
    penv.update(LITELLM_LOCAL_MODEL_COST_MAP="True", NO_PROXY="127.0.0.1,localhost",
                PYTHONPATH=str(root), LITELLM_LOG="ERROR", **(env or {}))
    logf = root / "proxy.log"
    log = open(logf, "w")  # noqa: SIM115 (held for the life of the proxy)
    proc = subprocess.Popen(
        [sys.executable, "-c", "from litellm.proxy.proxy_cli import run_server; run_server()",
         "--config", str(root / "config.yaml"), "--host", "127.0.0.1", "--port", str(port)],
        cwd=root, env=penv, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + start_timeout
        while True:
            try:
                with _OPENER.open(f"http://127.0.0.1:{port}/health/liveliness", timeout=2):
                    break
            except (urllib.error.URLError, ConnectionError, OSError):
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail("LiteLLM proxy did not start:\n" + logf.read_text()[-3000:])
                time.sleep(0.3)
        yield port
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
