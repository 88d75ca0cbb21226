"""Open-loop load test of the decision service from other processes on loopback.

    python bench/loadtest_decide.py --rates 500,1000,2000 --seconds 20 [--procs 2]
    python bench/loadtest_decide.py --rates 2000 --url http://127.0.0.1:8787 --token-env T

Without ``--url`` it starts ``distillguard serve --no-auth`` (plus ``--serve-args``) on a free
127.0.0.1 port in its own process. The requests are a realistic mix: the decision-request
fields (``response``, ``output_tokens`` and ``status`` dropped; the prompt messages, system
prompt, tools, IP, user agent, TLS fingerprint … kept) of a simulated log (``distillguard
simulate demo``, seed ``--seed``: about 2,200 accounts, benign and campaign) in time order,
so the service learns real traffic and its campaign accounts get throttled / blocked as
they are detected.

For each rate, ``--procs`` generator processes (asyncio, uvloop when installed) each send
their share of the requests on a fixed schedule (open loop: a send never waits for an
earlier answer), each over a pool of keep-alive HTTP/1.1 connections (a new connection is
opened when none is idle, up to ``--max-conns``; beyond that a request waits, and the wait
counts in its latency). Latency is measured from the **scheduled** send time to the end
of the response, so a server that falls behind is charged for the queueing (no coordinated
omission); ``send_lag`` says how late the generator itself started each request (its own
timer slack and CPU share, which are in the latency figures too). The client is a minimal HTTP/1.1 writer/reader (an
asyncio ``Protocol`` per connection, callbacks instead of a task per request): the generators
share the 2 cores with the server, so the client must cost little CPU per request (httpx
costs several times more, asyncio streams about 3x). Successive rates continue through
the log where the previous one stopped; the service keeps its state between them.

Prints one JSON object per rate (achieved rate, errors, status counts, latency p50/p95/p99/max
in ms, send lag, CPU time per request of the server process, of its children (the learner)
and of the generators, and the load average) and, with ``--out``, writes them all to a JSON
file. A request still unanswered 10 s after the last send counts as an error (status 0).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import multiprocessing as mp
import os
import resource
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import orjson

DROP = ("response", "output_tokens", "status")
KEEPALIVE_S = 4.0      # reuse an idle connection only this long (uvicorn closes after 5 s)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def request_bodies(seed: int, work: Path) -> list[bytes]:
    """JSON bodies of the simulated demo log's exchanges, in time order."""
    import polars as pl

    from distillguard.simulate import simulate

    sim = work / f"sim-demo-{seed}"
    if not (sim / "labels.csv").exists():
        simulate("demo", scale=1.0, seed=seed, out=sim)
    ev = pl.read_parquet(sim / "events").sort("ts")
    ev = ev.drop([c for c in DROP if c in ev.columns]).with_columns(
        pl.col("ts").dt.strftime("%Y-%m-%dT%H:%M:%S%.6fZ"))
    return [orjson.dumps({k: v for k, v in r.items() if v is not None})
            for r in ev.iter_rows(named=True)]


def cpu_seconds(pid: int) -> tuple[float, float]:
    """User + system CPU seconds of a process (all its threads) and of its live children
    (the learner process), from /proc."""
    def one(p: int) -> float:
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return 0.0
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    kids = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return one(pid), sum(one(int(k)) for k in kids)


# -- one generator process ------------------------------------------------------------------

class _Conn(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection: one request in flight at a time; the response is
    complete when its head and ``content-length`` bytes of body are in."""

    def __init__(self, gen: _Gen) -> None:
        self.gen, self.buf, self.k, self.t = gen, b"", -1, None
        self.last = 0.0          # when it last answered (idle connections age out)

    def connection_made(self, transport) -> None:
        self.t = transport

    def data_received(self, data: bytes) -> None:
        self.buf += data
        h = self.buf.find(b"\r\n\r\n")
        if h < 0 or self.k < 0:
            return
        head = self.buf[:h].lower()
        i, n = head.find(b"content-length:"), 0
        if i >= 0:
            j = head.find(b"\r\n", i)
            n = int(head[i + 15:j if j >= 0 else h])
        if len(self.buf) < h + 4 + n:
            return
        k, self.k = self.k, -1
        self.buf = self.buf[h + 4 + n:]
        self.gen.finish(self, k, int(head[9:12]))

    def connection_lost(self, exc) -> None:
        self.t = None
        if self.k >= 0:
            k, self.k = self.k, -1
            self.gen.finish(None, k, -1, type(exc).__name__ if exc else "ConnectionClosed")


class _Gen:
    """Open-loop sender: at each scheduled time the request goes out on an idle connection,
    else on a new one (up to ``max_conns``), else it waits for the next free connection."""

    def __init__(self, host, port, path, headers, bodies, n, max_conns) -> None:
        self.host, self.port, self.bodies, self.max_conns = host, port, bodies, max_conns
        self.head = (f"POST {path} HTTP/1.1\r\nhost: {host}:{port}\r\n"
                     f"content-type: application/json\r\n").encode() + headers
        self.idle: list[_Conn] = []
        self.waiting: collections.deque[int] = collections.deque()
        self.open = self.outstanding = 0
        self.failures: dict[str, int] = {}
        self.due_at, self.began_at = np.zeros(n), np.zeros(n)
        self.done_at = np.full(n, np.nan)
        self.status = np.zeros(n, dtype=np.int32)

    def dispatch(self, k: int) -> None:
        self.began_at[k] = time.monotonic()
        self.outstanding += 1
        now = self.began_at[k]
        while self.idle:      # skip connections the server may have closed (keep-alive 5 s)
            c = self.idle.pop()
            if c.t is not None and now - c.last < KEEPALIVE_S:
                return self._send(c, k)
            if c.t is not None:
                c.t.close()
            self.open -= 1
        if self.open < self.max_conns:
            self.open += 1
            asyncio.ensure_future(self._connect(k))
        else:
            self.waiting.append(k)

    async def _connect(self, k: int) -> None:
        loop = asyncio.get_running_loop()
        try:
            _, c = await loop.create_connection(lambda: _Conn(self), self.host, self.port)
        except OSError as err:
            return self.finish(None, k, -1, type(err).__name__)
        self._send(c, k)

    def _send(self, c: _Conn, k: int) -> None:
        body = self.bodies[k % len(self.bodies)]
        c.k = k
        c.t.write(self.head + b"content-length: %d\r\n\r\n" % len(body) + body)

    def finish(self, c: _Conn | None, k: int, status: int, failure: str | None = None) -> None:
        self.done_at[k] = now = time.monotonic()
        self.status[k] = status
        self.outstanding -= 1
        if failure is not None:
            self.failures[failure] = self.failures.get(failure, 0) + 1
        if c is None:                       # the connection failed or was closed
            self.open -= 1
            if self.waiting and self.open < self.max_conns:
                self.open += 1
                asyncio.ensure_future(self._connect(self.waiting.popleft()))
            return
        c.last = now
        if self.waiting:
            self._send(c, self.waiting.popleft())
        else:
            self.idle.append(c)


async def _generate(host: str, port: int, path: str, headers: bytes, bodies: list[bytes],
                    rate: float, start: float, seconds: float, max_conns: int):
    n = int(rate * seconds)
    g = _Gen(host, port, path, headers, bodies, n, max_conns)
    for k in range(n):
        due = g.due_at[k] = start + k / rate
        wait = due - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)
        g.dispatch(k)
    deadline = time.monotonic() + 10
    while g.outstanding and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    for c in g.idle:
        if c.t is not None:
            c.t.close()
    return g.due_at, g.began_at, g.done_at, g.status, g.failures


def _worker(args, conn) -> None:
    try:
        import uvloop
        run = uvloop.run
    except ImportError:
        run = asyncio.run
    res = run(_generate(*args))
    ru = resource.getrusage(resource.RUSAGE_SELF)     # this generator's own CPU
    conn.send((*res, ru.ru_utime + ru.ru_stime))
    conn.close()


# -- one rate --------------------------------------------------------------------------------

def run_rate(url: str, token: str | None, bodies: list[bytes], rate: float, seconds: float,
             procs: int, server_pid: int | None, max_conns: int = 128) -> dict:
    host, port = url.split("://", 1)[1].rsplit(":", 1)
    headers = f"authorization: Bearer {token}\r\n".encode() if token else b""
    start = time.monotonic() + 1.0
    ctx = mp.get_context("fork")
    pipes, ps = [], []
    for w in range(procs):
        parent, child = ctx.Pipe(duplex=False)
        share = bodies[w::procs]
        p = ctx.Process(target=_worker, args=((host, int(port), "/v1/decide", headers, share,
                                               rate / procs, start, seconds, max_conns),
                                              child))
        p.start()
        pipes.append(parent)
        ps.append(p)
    cpu0 = cpu_seconds(server_pid) if server_pid else None
    parts = [p.recv() for p in pipes]
    for p in ps:
        p.join()
    cpu1 = cpu_seconds(server_pid) if server_pid else None
    per_req = lambda i: (round((cpu1[i] - cpu0[i]) / len(status) * 1e6, 1)  # noqa: E731
                         if server_pid else None)
    due, began, done, status = (np.concatenate([x[i] for x in parts]) for i in range(4))
    gen_cpu = sum(x[5] for x in parts)
    failures: dict[str, int] = {}
    for x in parts:
        for k, v in x[4].items():
            failures[k] = failures.get(k, 0) + v
    ok = status == 200
    lat = (done - due)[~np.isnan(done)] * 1000
    lag = (began - due)[began > 0] * 1000
    span = np.nanmax(done) - due.min()
    pct = lambda x, q: round(float(np.percentile(x, q)), 3) if len(x) else None  # noqa: E731
    codes, counts = np.unique(status, return_counts=True)
    return {"target_rate": rate, "achieved_rate": round(int(ok.sum()) / span, 1),
            "requests": int(len(status)), "errors": int((~ok).sum()),
            "status": {str(c): int(n) for c, n in zip(codes.tolist(), counts.tolist())},
            "failures": failures,
            "p50_ms": pct(lat, 50), "p95_ms": pct(lat, 95), "p99_ms": pct(lat, 99),
            "max_ms": round(float(lat.max()), 3) if len(lat) else None,
            "send_lag_p50_ms": pct(lag, 50), "send_lag_p99_ms": pct(lag, 99),
            "server_cpu_us_per_request": per_req(0),
            "children_cpu_us_per_request": per_req(1),
            "generator_cpu_us_per_request": round(gen_cpu / len(status) * 1e6, 1),
            "loadavg": os.getloadavg(), "procs": procs, "seconds": seconds}


async def floor_app(scope, receive, send) -> None:
    """``--floor``: a do-nothing ASGI app (reads the body, answers a fixed decision) under
    the same uvicorn, to show what the machine, uvicorn and the generator alone cost."""
    if scope["type"] == "lifespan":
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        return await send({"type": "lifespan.shutdown.complete"})
    more = True
    while more:
        more = (await receive()).get("more_body", False)
    body = b'{"action":"allow"}'
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rates", default="500,1000,2000",
                    help="comma-separated target decisions/s, run one after the other")
    ap.add_argument("--seconds", type=float, default=20.0, help="duration of each rate")
    ap.add_argument("--procs", type=int, default=2, help="generator processes")
    ap.add_argument("--max-conns", type=int, default=128,
                    help="connections per generator process at most (then requests wait)")
    ap.add_argument("--seed", type=int, default=1, help="simulated log (demo scenario) seed")
    ap.add_argument("--work", type=Path, default=Path("/tmp/dg-loadtest"))
    ap.add_argument("--url", default=None, help="test a running service instead")
    ap.add_argument("--token-env", default=None, help="variable holding its bearer token")
    ap.add_argument("--server-pid", type=int, default=None,
                    help="with --url: the service's process id, for its CPU time")
    ap.add_argument("--serve-args", default="", help="extra arguments for distillguard serve")
    ap.add_argument("--floor", action="store_true",
                    help="serve the do-nothing floor_app instead of distillguard")
    ap.add_argument("--out", type=Path, default=None, help="also write the results here")
    a = ap.parse_args()
    bodies = request_bodies(a.seed, a.work)
    srv = None
    url, token = a.url, os.environ.get(a.token_env) if a.token_env else None
    if url is None:
        port = free_port()
        cmd = ([sys.executable, "-m", "uvicorn", "--app-dir", str(Path(__file__).parent),
                "loadtest_decide:floor_app", "--no-access-log", "--log-level", "warning"]
               if a.floor else
               [sys.executable, "-m", "distillguard", "serve", "--no-auth", *a.serve_args.split()])
        srv = subprocess.Popen([*cmd, "--port", str(port)])
        url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(300):
            try:
                with urllib.request.urlopen(url + "/healthz", timeout=1) as r:
                    if r.status == 200:
                        break
            except OSError:
                time.sleep(0.1)
        results, cursor = [], 0
        for rate in (float(x) for x in a.rates.split(",")):
            res = run_rate(url, token, bodies[cursor:] + bodies[:cursor], rate, a.seconds,
                           a.procs, srv.pid if srv else a.server_pid, a.max_conns)
            cursor = (cursor + res["requests"]) % len(bodies)
            res["serve_args"] = "floor_app" if a.floor else a.serve_args
            print(json.dumps(res), flush=True)
            results.append(res)
        if a.out:
            a.out.write_text(json.dumps(results, indent=1) + "\n")
    finally:
        if srv is not None:
            srv.terminate()
            srv.wait(timeout=10)


if __name__ == "__main__":
    main()
