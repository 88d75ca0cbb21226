"""State size of the online detector: bytes per account as the account count grows.

    python bench/bench_state.py --accounts 10000,100000,1000000 [--events-per-account 3]
        [--chunk-size 20000] [--no-accounts-table] [--tracemalloc] [--json OUT.json]

Feeds :class:`~distillguard.stream.OnlineDetector` synthetic normalised events (cheap to
generate: no simulation, no log parsing) in time order, ``--chunk-size`` events per
``learn_many`` step with the due accounts rescored after each step, as ``distillguard
stream`` does. Accounts arrive in blocks; each makes ``--events-per-account`` exchanges.
Shared values are drawn so that the detector's indexes see both rare and common values:
per account 1–2 IPs from a pool of accounts/2 (a few accounts per IP), their /24 prefixes
(pool accounts/50), 1 of 5,000 ASNs, 1 of 300 user agents × 40 TLS fingerprints, 1 of
2,000 system prompts (30 % none), 1 of 200 tool sets (70 % none), prompts from 5,000
templates with varying numbers, and (unless ``--no-accounts-table``) an accounts table with
a payment instrument per account (10 % of them shared by 2–5 accounts), 1 of accounts/20
e-mail domains (half on 10 common ones) and a sign-up time.

At each account count it reports the detector's **deep size**: every object reachable from
the detector's attributes (numpy arrays by their allocated buffers, dicts, lists, tuples,
sets, strings, ints — each object counted once, like ``pympler.asizeof``), excluding the
fixed, per-process parts (the task classifier's weights, the fitted scorer, the signal
file, the caller's accounts / releases frames), which are reported separately. With
``--tracemalloc`` it also reports the bytes traced by :mod:`tracemalloc` since the detector
was set up (slower: every allocation is traced), as an independent check.

Prints one JSON object per account count: ``accounts``, ``events``, ``bytes_per_account``
(deep size / accounts), the split by attribute (``parts``, bytes per account), the fixed
bytes, the run time, and the load average; ``--json`` writes the list.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import time
import tracemalloc
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import polars as pl

from distillguard.schema import EVENT_SCHEMA, conform
from distillguard.stream import OnlineDetector

FIXED = ("classifier_", "scorer_", "signals_", "accounts", "releases")
T0 = datetime(2025, 1, 1, tzinfo=timezone.utc)


def deep_size(obj, seen: set) -> int:
    """Bytes of ``obj`` and everything reachable from it not in ``seen`` (ids)."""
    total, stack = 0, [obj]
    while stack:
        o = stack.pop()
        if id(o) in seen:
            continue
        seen.add(id(o))
        if isinstance(o, np.ndarray):
            total += sys.getsizeof(o)            # header + buffer when it owns its data
            if o.base is not None and isinstance(o.base, np.ndarray):
                stack.append(o.base)
            if o.dtype == object:
                stack.extend(o.ravel().tolist())
            continue
        total += sys.getsizeof(o)
        if hasattr(o, "__dict__") and not isinstance(o, type):     # e.g. PairBits
            stack.append(vars(o))
        if isinstance(o, dict):
            stack.extend(o.keys())
            stack.extend(o.values())
        elif isinstance(o, (list, tuple, set, frozenset)):
            stack.extend(o)
    return total


def detector_size(det: OnlineDetector) -> tuple[int, dict[str, int], int]:
    """(per-account deep size, by attribute, fixed parts) of ``det``."""
    seen: set = set()
    fixed = sum(deep_size(getattr(det, k), seen) for k in FIXED if getattr(det, k, None)
                is not None and k != "classifier_")
    clf = getattr(det, "classifier_", None)
    if clf is not None:
        fixed += sum(deep_size(v, seen) for v in vars(clf).values())
    parts = {k: deep_size(v, seen) for k, v in vars(det).items() if k not in FIXED}
    return sum(parts.values()), parts, fixed


def accounts_table(n: int, rng: np.random.Generator) -> pl.DataFrame:
    ids = [f"acct-{i:07d}" for i in range(n)]
    pay = np.arange(n).astype(object)
    shared = rng.random(n) < 0.10
    pay[shared] = rng.integers(0, max(n // 4, 1), shared.sum())      # 2–5 accounts a card
    pay = [f"pm-{'s' if s else 'u'}{p}" for p, s in zip(pay.tolist(), shared.tolist())]
    common = rng.random(n) < 0.5
    dom = np.where(common, rng.integers(0, 10, n), 10 + rng.integers(0, max(n // 20, 1), n))
    return pl.DataFrame({
        "account_id": ids,
        "created_at": [T0 - timedelta(days=int(d)) for d in rng.integers(0, 400, n)],
        "tier": rng.choice(["free", "pro", "startup", "enterprise", "education"], n).tolist(),
        "email_domain": [f"d{d}.example" for d in dom.tolist()],
        "payment_fingerprint": pay,
        "billing_country": rng.choice(["US", "DE", "FR", "IN", "BR", "JP"], n).tolist(),
        "verified": (rng.random(n) < 0.6).tolist(),
    })


def chunk_events(first: int, n_acc: int, k: int, t_start: float, rng: np.random.Generator,
                 pools: dict) -> pl.DataFrame:
    """``k`` events for each of accounts ``first .. first + n_acc - 1`` (time-sorted)."""
    n = n_acc * k
    acc = np.repeat(np.arange(first, first + n_acc), k)
    ts = t_start + np.sort(rng.random(n)) * 3600.0
    ip_a = rng.integers(0, pools["ip"], n_acc)
    ip = np.where(rng.random(n) < 0.7, np.repeat(ip_a, k), rng.integers(0, pools["ip"], n))
    o2, o3, o4 = (ip >> 16) % 256, (ip >> 8) % 256, ip % 256
    pref = np.array([f"10.{a}.{b}" for a, b in zip(o2.tolist(), o3.tolist())], dtype=object)
    ua = rng.integers(0, 300, n_acc).repeat(k)
    sys_id = rng.integers(0, 2000, n_acc).repeat(k)
    has_sys = rng.random(n_acc).repeat(k) < 0.7
    tools = rng.integers(0, 200, n_acc).repeat(k)
    has_tools = rng.random(n_acc).repeat(k) < 0.3
    tpl = rng.integers(0, 5000, n)
    num = rng.integers(0, 10**6, n)
    sys_txt = np.array([f"You are assistant number {s}." for s in sys_id.tolist()],
                       dtype=object)
    df = pl.DataFrame({
        "ts": (np.asarray(ts * 1e6, dtype=np.int64)
               + int(T0.timestamp() * 1e6)).astype("datetime64[us]"),
        "account_id": [f"acct-{a:07d}" for a in acc.tolist()],
        "api_key_id": [f"key-{a}" for a in acc.tolist()],
        "model": rng.choice(["model-a", "model-b", "model-c"], n).tolist(),
        "prompt": [f"Template {t}: explain item {x} step by step" for t, x in
                   zip(tpl.tolist(), num.tolist())],
        "system": np.where(has_sys, sys_txt, None).tolist(),
        "n_turns": rng.integers(1, 4, n).astype(np.int32),
        "tool_names": [[f"tool{t}", f"tool{t + 1}"] if h else None
                       for t, h in zip(tools.tolist(), has_tools.tolist())],
        "input_tokens": rng.integers(10, 2000, n), "output_tokens": rng.integers(10, 4000, n),
        "max_tokens": rng.choice([1024, 4096, 8192], n),
        "temperature": rng.choice([0.0, 0.7, 1.0], n),
        "ip": [f"{p}.{d}" for p, d in zip(pref[:n].tolist(), o4.tolist())],
        "ip_prefix": [f"{p}.0/24" for p in pref.tolist()],
        "asn": rng.integers(0, 5000, n_acc).repeat(k),
        "country": rng.choice(["US", "DE", "FR", "IN", "BR", "JP"], n).tolist(),
        "user_agent": [f"client/{u % 30}.{u}" for u in ua.tolist()],
        "tls_fingerprint": [f"ja3-{u % 40}" for u in ua.tolist()],
    }).with_columns(
        pl.col("ts").dt.replace_time_zone("UTC"),
        n_user_turns=pl.col("n_turns"),
        system_hash=pl.col("system").hash(seed=0),
        tools_hash=pl.col("tool_names").list.join(",").hash(seed=0),
        has_tool_results=pl.col("tool_names").is_not_null() & (pl.col("n_turns") > 2),
    ).sort("ts")
    return conform(df, EVENT_SCHEMA)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--accounts", default="10000,100000,1000000",
                    help="account counts to report at (comma-separated, increasing)")
    ap.add_argument("--events-per-account", type=int, default=3)
    ap.add_argument("--chunk-size", type=int, default=20000)
    ap.add_argument("--no-accounts-table", action="store_true")
    ap.add_argument("--tracemalloc", action="store_true", help="also trace allocations")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", type=Path, default=None)
    a = ap.parse_args()
    marks = sorted(int(x) for x in a.accounts.split(","))
    rng = np.random.default_rng(a.seed)
    total = marks[-1]
    table = None if a.no_accounts_table else accounts_table(total, rng)
    pools = {"ip": max(total // 2, 16)}
    if a.tracemalloc:
        tracemalloc.start()
    det = OnlineDetector(accounts=table)
    det._init()
    gc.collect()
    base = tracemalloc.get_traced_memory()[0] if a.tracemalloc else 0
    per_chunk = max(a.chunk_size // a.events_per_account, 1)
    done, events, t_start, out = 0, 0, 0.0, []
    t0 = time.perf_counter()
    for mark in marks:
        while done < mark:
            n_acc = min(per_chunk, mark - done)
            ev = chunk_events(done, n_acc, a.events_per_account, t_start, rng, pools)
            due = det.learn_many(ev)
            det.score_many(np.unique(due))
            done += n_acc
            events += ev.height
            t_start += 3600.0
        gc.collect()
        size, parts, fixed = detector_size(det)
        row = {"accounts": det.n_accounts_, "events": events,
               "bytes_per_account": round(size / det.n_accounts_, 1),
               "parts": {k: round(v / det.n_accounts_, 1) for k, v in
                         sorted(parts.items(), key=lambda kv: -kv[1]) if v > 1000},
               "fixed_bytes": fixed, "accounts_table": table is not None,
               "events_per_account": a.events_per_account, "chunk_size": a.chunk_size,
               "elapsed_s": round(time.perf_counter() - t0, 1),
               "load": round(os.getloadavg()[0], 2),
               "memory_usage": det._memory_usage()}
        if a.tracemalloc:
            row["traced_bytes_per_account"] = round(
                (tracemalloc.get_traced_memory()[0] - base) / det.n_accounts_, 1)
        print(json.dumps(row), flush=True)
        out.append(row)
    if a.json:
        a.json.parent.mkdir(parents=True, exist_ok=True)
        a.json.write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
