"""The decision logic shared by the HTTP service, the ASGI middleware and the LiteLLM hook.

:class:`DecisionEngine` learns each request into the :class:`~distillguard.stream.OnlineDetector`
and answers from the account's last score through the policy. With ``sync=True`` (tests, small
gateways) the request is learned and due accounts rescored before answering; otherwise the
request is validated, queued, and learned with the other queued requests in one batch on a
background thread every ``rescore_interval_s``, so the decision path never waits for the
classifier or the scorer (the answer reflects state up to one interval old). Every decision can be appended to a JSON Lines log.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from datetime import datetime, timezone

import numpy as np

from ..act import Decision, Policy, decide, load_policy
from ..stream.normalize import check_record
from ..stream.online import OnlineDetector, events_from_dicts

#: latency histogram buckets (seconds) for /metrics
BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)


class TokenBuckets:
    """Per-account token buckets for ``throttle`` (``rate_per_minute``, burst = one minute's
    worth at most 10), bounded to ``max_accounts`` most recently seen accounts."""

    def __init__(self, *, max_accounts: int = 100_000) -> None:
        self.max_accounts = max_accounts
        self._b: dict[str, list[float]] = {}

    def allow(self, account_id: str, rate_per_minute: float, now: float | None = None) -> bool:
        now = time.monotonic() if now is None else now
        burst = max(1.0, min(10.0, rate_per_minute))
        b = self._b.pop(account_id, None) or [burst, now]
        b[0] = min(burst, b[0] + (now - b[1]) * rate_per_minute / 60.0)
        b[1] = now
        ok = b[0] >= 1.0
        if ok:
            b[0] -= 1.0
        self._b[account_id] = b          # re-insert: dict order = recency
        if len(self._b) > self.max_accounts:
            self._b.pop(next(iter(self._b)))
        return ok


class DecisionEngine:
    """Learn a request, decide with the policy, keep metrics and an optional decision log."""

    def __init__(self, *, policy: Policy | None = None, detector: OnlineDetector | None = None,
                 sync: bool = False, rescore_interval_s: float = 0.1,
                 decision_log: str | None = None) -> None:
        self.policy = policy or load_policy()
        self.detector = detector or OnlineDetector()
        self.sync = sync
        self.rescore_interval_s = rescore_interval_s
        self.decision_log = decision_log
        self.buckets = TokenBuckets()
        self._lock = threading.Lock()
        self._due: set[int] = set()
        self._pending: list[dict] = []
        self._pending_lock = threading.Lock()
        self._log = open(decision_log, "a", buffering=1) if decision_log else None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self.counts: Counter = Counter()
        self.latency = [0] * (len(BUCKETS) + 1)
        self.latency_sum = 0.0
        self.errors = 0

    # -- lifecycle -------------------------------------------------------------------------
    def start(self) -> None:
        """Start background rescoring (no-op when ``sync``)."""
        if self.sync or self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="distillguard-rescore",
                                        daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        self.flush()
        if self._log:
            self._log.flush()

    def _loop(self) -> None:
        while not self._stop.wait(self.rescore_interval_s):
            self.flush()

    def flush(self) -> int:
        """Learn queued requests, then rescore every account that is due; returns how many."""
        with self._pending_lock:
            batch, self._pending = self._pending, []
        if batch:
            frame = events_from_dicts(batch)
            with self._lock:
                self._due.update(self.detector.learn_many(frame).tolist())
        with self._lock:
            due = np.fromiter(self._due, dtype=np.int64, count=len(self._due))
            self._due.clear()
            if len(due):
                self.detector.score_many(due)
        return len(due)

    # -- the decision path -----------------------------------------------------------------
    def decide(self, record: dict) -> Decision:
        """Learn one request (contract fields; ``ts`` defaults to now) and decide on it."""
        t0 = time.perf_counter()
        if record.get("ts") is None:
            record = {**record, "ts": datetime.now(timezone.utc).isoformat()}
        if record.get("messages") is None and not record.get("prompt"):
            record = {**record, "prompt": " "}      # metadata-only requests still count
        if self.sync:
            frame = events_from_dicts([record])
            with self._lock:
                due = self.detector.learn_many(frame)
                self._due.update(due.tolist())
            if len(due):
                self.flush()
            account = str(frame["account_id"][0])
        else:   # learn on the background thread in micro-batches; decide from current state
            check_record(record)                 # validate now: bad input is the caller's
            account = str(record["account_id"])
            with self._pending_lock:
                self._pending.append(record)
        with self._lock:
            st = self.detector.state_of(account)
        d = decide(self.policy, account_id=st["account_id"], score=st["score"],
                   verdict=st["verdict"], reasons=st["reasons"], tier=st["tier"],
                   cluster_id=st["cluster_id"], exchanges_seen=st["exchanges_seen"],
                   ts=record["ts"])
        if self._log:
            self._log.write(d.to_json() + "\n")
        dt = time.perf_counter() - t0
        self.counts[d.action] += 1
        self.latency_sum += dt
        self.latency[next((i for i, b in enumerate(BUCKETS) if dt <= b), len(BUCKETS))] += 1
        return d

    def metrics_text(self) -> str:
        """Prometheus text exposition format (version 0.0.4)."""
        lines = ["# HELP distillguard_decisions_total Decisions by action.",
                 "# TYPE distillguard_decisions_total counter"]
        for a in self.policy_actions():
            lines.append(f'distillguard_decisions_total{{action="{a}"}} {self.counts[a]}')
        lines += ["# HELP distillguard_decide_seconds Time to decide one request.",
                  "# TYPE distillguard_decide_seconds histogram"]
        cum = 0
        for b, c in zip(BUCKETS, self.latency):
            cum += c
            lines.append(f'distillguard_decide_seconds_bucket{{le="{b}"}} {cum}')
        total = sum(self.latency)
        lines += [f'distillguard_decide_seconds_bucket{{le="+Inf"}} {total}',
                  f"distillguard_decide_seconds_sum {self.latency_sum:.6f}",
                  f"distillguard_decide_seconds_count {total}",
                  "# HELP distillguard_accounts Accounts in the online state.",
                  "# TYPE distillguard_accounts gauge",
                  f"distillguard_accounts {getattr(self.detector, 'n_accounts_', 0)}",
                  "# HELP distillguard_request_errors_total Rejected decision requests.",
                  "# TYPE distillguard_request_errors_total counter",
                  f"distillguard_request_errors_total {self.errors}",
                  "# HELP distillguard_policy_info Policy in force.",
                  "# TYPE distillguard_policy_info gauge",
                  f'distillguard_policy_info{{id="{self.policy.id}",'
                  f'version="{self.policy.version}"}} 1']
        return "\n".join(lines) + "\n"

    @staticmethod
    def policy_actions():
        from ..act import ACTIONS
        return ACTIONS
