"""Load test of the decision service from a second process on loopback.

    python bench/loadtest_decide.py --rate 2000 --seconds 20 --workers 8

Starts ``distillguard serve --no-auth`` on a free 127.0.0.1 port (its own process), sends
``POST /v1/decide`` at a fixed open-loop rate from ``--workers`` threads with keep-alive
connections (accounts drawn from a pool, prompts varied), and prints the achieved rate and
latency percentiles (ms) as JSON. Latency is measured from the scheduled send time, so a
server that falls behind is charged for the queueing (no coordinated omission).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import threading
import time

import httpx
import numpy as np


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rate", type=float, default=2000.0, help="target decisions/s in total")
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--workers", type=int, default=8)
    ap.add_argument("--accounts", type=int, default=5000)
    a = ap.parse_args()
    port = free_port()
    srv = subprocess.Popen([sys.executable, "-m", "distillguard", "serve", "--no-auth",
                            "--port", str(port)], env={**os.environ})
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(200):
            try:
                if httpx.get(url + "/healthz").status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        lat: list[list[float]] = [[] for _ in range(a.workers)]
        errors = [0] * a.workers
        start = time.perf_counter() + 0.5
        per = a.rate / a.workers

        def worker(w: int) -> None:
            rng = np.random.default_rng(w)
            with httpx.Client(base_url=url, timeout=10) as c:
                k = 0
                while True:
                    due = start + k / per
                    if due - start > a.seconds:
                        return
                    now = time.perf_counter()
                    if due > now:
                        time.sleep(due - now)
                    acc = f"acct{int(rng.integers(a.accounts))}"
                    body = {"account_id": acc, "model": "m", "max_tokens": 4096,
                            "prompt": f"Explain step {k} of problem {int(rng.integers(1e6))}",
                            "ip": f"10.{w}.{k % 250}.1"}
                    try:
                        r = c.post("/v1/decide", json=body)
                        if r.status_code != 200:
                            errors[w] += 1
                    except httpx.HTTPError:
                        errors[w] += 1
                    lat[w].append(time.perf_counter() - due)
                    k += 1

        ts = [threading.Thread(target=worker, args=(w,)) for w in range(a.workers)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        elapsed = time.perf_counter() - start
        x = np.concatenate([np.array(v) for v in lat]) * 1000
        print(json.dumps({"target_rate": a.rate, "achieved_rate": round(len(x) / elapsed, 1),
                          "requests": int(len(x)), "errors": int(sum(errors)),
                          "p50_ms": round(float(np.percentile(x, 50)), 3),
                          "p90_ms": round(float(np.percentile(x, 90)), 3),
                          "p99_ms": round(float(np.percentile(x, 99)), 3),
                          "max_ms": round(float(x.max()), 3)}, indent=1))
    finally:
        srv.terminate()
        srv.wait(timeout=10)


if __name__ == "__main__":
    main()
