"""The decision logic shared by the HTTP service, the ASGI middleware and the LiteLLM hook.

:class:`DecisionEngine` answers each request from a **decision table** (account -> its last
published score, verdict, reasons, cluster, tier and exchange count) through the policy, and
learns the request into an :class:`~distillguard.stream.OnlineDetector` off the request path:

- ``sync=True`` (tests, small gateways): the request is learned and due accounts rescored
  before answering (the answer reflects this request);
- ``learner="thread"`` (default; the LiteLLM hook, the ASGI middleware): requests are
  validated and queued; a background thread learns the queue every ``rescore_interval_s``
  in one batch, rescores due accounts and publishes their new state into the table;
- ``learner="process"`` (``distillguard serve``): the same learning runs in a child process
  that holds the detector; queued requests go to it over a pipe every
  ``rescore_interval_s`` and it sends back the changed table rows, so learning and scoring
  never hold the serving process's GIL.

The request path never takes the learner's lock: it validates the record, counts it, reads
the account's row (a dict lookup) and applies the policy. ``exchanges_seen`` is the learned
count plus this engine's requests not learned yet (this request included). Every decision
can be appended to a JSON Lines log.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import threading
import time
from collections import Counter
from datetime import datetime, timezone

import numpy as np
import orjson

from ..act import Decision, Policy, decide, load_policy
from ..errors import ConfigError, InputError
from ..stream.normalize import check_record
from ..stream.online import OnlineDetector, events_from_dicts

#: latency histogram buckets (seconds) for /metrics
BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)

#: a decision-table row: score, verdict, reasons, cluster_id, tier, learned exchanges (all
#: sources), and how many of them came from this engine
_EMPTY = (0.0, "benign", "", None, None, 0, 0)


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


class Publisher:
    """Learns batches of contract records into a detector and returns the table rows that
    changed: the batch's accounts, the accounts rescored, and every member of a linked
    group that one of them joined or merged (their cluster id may have changed)."""

    def __init__(self, detector: OnlineDetector) -> None:
        self.detector = detector
        self.fed: Counter = Counter()        # records learned per account from the engine
        self.rows: dict[str, tuple] = {}     # last row published per account

    def learn(self, records: list[dict]) -> list[list]:
        """Learn ``records`` (time-sorted here) and rescore due accounts; changed rows."""
        det = self.detector
        det._init()
        try:
            frame = events_from_dicts(records)
        except InputError:        # validated one by one on the way in; keep the good ones
            records = [r for r in records if _valid(r)]
            frame = events_from_dicts(records)
        frame = frame.sort("ts", maintain_order=True)
        accounts = set(frame["account_id"].unique().to_list())
        before = {a: self._group(det.index_[a]) for a in accounts if a in det.index_}
        due = det.learn_many(frame)
        if len(due):
            det.score_many(due)
        self.fed.update(str(r["account_id"]) for r in records)
        return self.changed(accounts, before, due)

    def _group(self, i: int) -> tuple[int, int]:
        r = self.detector._find(i)
        return r, len(self.detector.members_.get(r, ()))

    def changed(self, accounts, before=None, due=()) -> list[list]:
        """Rows of ``accounts`` (+ rescored ones, + members of changed groups) that differ
        from the last published ones."""
        det = self.detector
        before = before or {}
        names = set(accounts) | {det.ids_[i] for i in np.asarray(due).tolist()}
        for a in list(accounts):
            i = det.index_.get(a)
            if i is None:
                continue
            g = self._group(i)
            if g[1] > 1 and before.get(a) != g:
                names.update(det.ids_[j] for j in det.members_[g[0]])
        out = []
        for a in names:
            st = det.state_of(a)
            row = (st["score"], st["verdict"], st["reasons"], st["cluster_id"], st["tier"],
                   st["exchanges_seen"], self.fed[a])
            if self.rows.get(a) != row:
                self.rows[a] = row
                out.append([a, *row])
        return out


def _valid(rec: dict) -> bool:
    try:
        check_record(rec)
        return True
    except InputError:
        return False


def _learner_main(inbox, outbox, detector: OnlineDetector, nice: int = 0,
                  idle: bool = True) -> None:
    """The learner process: learn each batch the serving process sends, reply with the
    changed rows. ``[seq, None]`` (or the pipe closing) stops it. ``idle`` puts it in Linux's
    ``SCHED_IDLE`` class (it gets the CPU when no normal task wants it, and a waking serving
    process preempts it at once), ``nice`` lowers its priority where that class is missing
    (and within it)."""
    if idle and hasattr(os, "sched_setscheduler") and hasattr(os, "SCHED_IDLE"):
        try:
            os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
        except OSError:
            pass
    if nice:
        os.nice(nice)
    pub = Publisher(detector)
    detector._init()
    while True:
        try:
            msgs = [orjson.loads(inbox.recv_bytes())]
            while msgs[-1][1] is not None and inbox.poll(0):   # behind: one bigger batch
                msgs.append(orjson.loads(inbox.recv_bytes()))
        except (EOFError, OSError):
            return
        records = [r for _, batch in msgs if batch for r in batch]
        rows = pub.learn(records) if records else []
        outbox.send_bytes(orjson.dumps([msgs[-1][0], detector.n_accounts_, rows]))
        if msgs[-1][1] is None:
            return


class DecisionEngine:
    """Learn a request, decide with the policy, keep metrics and an optional decision log."""

    def __init__(self, *, policy: Policy | None = None, detector: OnlineDetector | None = None,
                 sync: bool = False, rescore_interval_s: float = 0.1,
                 decision_log: str | None = None, learner: str = "thread",
                 learner_nice: int = 5, learner_idle: bool = True) -> None:
        if learner not in ("thread", "process"):
            raise ConfigError(f"learner must be 'thread' or 'process', not {learner!r}")
        self.policy = policy or load_policy()
        self.sync = sync
        self.learner = "thread" if sync else learner
        self._template = detector or OnlineDetector()
        #: the detector, in this process (None with ``learner="process"``: it lives there)
        self.detector = None if self.learner == "process" else self._template
        self._pub = Publisher(self.detector) if self.detector is not None else None
        self.rescore_interval_s = rescore_interval_s
        self.learner_nice = learner_nice
        self.learner_idle = learner_idle
        self.decision_log = decision_log
        self.buckets = TokenBuckets()
        self._lock = threading.Lock()            # the detector (learning, not deciding)
        self.table: dict[str, tuple] = {}        # account -> published row (see _EMPTY)
        self._seen: Counter = Counter()          # requests decided per account
        self._pending: list[dict] = []
        self._pending_lock = threading.Lock()
        self._log = open(decision_log, "a", buffering=1) if decision_log else None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._proc = None
        self._seq = self._acked = 0
        self._send_lock = threading.Lock()
        self._acked_cv = threading.Condition()
        self._n_accounts = 0
        self.learner_error: str | None = None
        self.counts: Counter = Counter()
        self.latency = [0] * (len(BUCKETS) + 1)
        self.latency_sum = 0.0
        self.errors = 0

    # -- lifecycle -------------------------------------------------------------------------
    def start(self) -> None:
        """Start background learning (no-op when ``sync``)."""
        if self.sync or self._thread is not None:
            return
        self._stop.clear()
        if self.learner == "process":
            ctx = mp.get_context("spawn")
            inbox, self._to_learner = ctx.Pipe(duplex=False)
            self._from_learner, outbox = ctx.Pipe(duplex=False)
            self._proc = ctx.Process(target=_learner_main, name="distillguard-learner",
                                     args=(inbox, outbox, self._template,
                                           self.learner_nice, self.learner_idle),
                                     daemon=True)
            self._proc.start()
            inbox.close()
            outbox.close()
            self._receiver = threading.Thread(target=self._receive, daemon=True,
                                              name="distillguard-receive")
            self._receiver.start()
        self._thread = threading.Thread(target=self._loop, name="distillguard-learn",
                                        daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        self.flush()
        if self._proc is not None:
            self._send(None)
            self._proc.join(timeout=10)
            self._receiver.join(timeout=5)
            self._to_learner.close()
            self._proc = None
        if self._log:
            self._log.flush()

    def _loop(self) -> None:
        while not self._stop.wait(self.rescore_interval_s):
            self.flush(wait=False)

    # -- learning (off the request path) ---------------------------------------------------
    def flush(self, wait: bool = True) -> int:
        """Learn the queued requests (with a learner process: send them, and with ``wait``
        wait until their rows are back); returns how many were queued."""
        if self.learner == "process" and self._proc is None:
            return 0                         # not started: the requests stay queued
        with self._pending_lock:
            batch, self._pending = self._pending, []
        if self._proc is not None:
            seq = self._send(batch) if batch else self._seq
            if wait:
                with self._acked_cv:
                    self._acked_cv.wait_for(lambda: self._acked >= seq
                                            or self.learner_error is not None, timeout=30)
            return len(batch)
        if batch:
            with self._lock:
                rows = self._pub.learn(batch)
            self._apply(rows)
        return len(batch)

    def publish(self, account_ids) -> None:
        """Republish the rows of accounts learned into :attr:`detector` by someone else
        (e.g. :func:`~distillguard.stream.consumers.run_consumer`)."""
        if self._pub is not None:
            with self._lock:
                rows = self._pub.changed(account_ids)
            self._apply(rows)

    #: records serialised per ``orjson.dumps`` call when shipping a batch: one call holds
    #: the GIL throughout (≈ 1.3–2 ms for 1,000 requests of the load test's mix), slices of
    #: 100 hold it ≈ 0.15 ms each, and the event loop gets it back in between (a call per
    #: record would cost ~6x the CPU)
    SEND_SLICE = 100

    def _send(self, records) -> int:
        """Send a batch (``None``: stop), serialised in slices of :attr:`SEND_SLICE`."""
        with self._send_lock:                # one writer at a time on the pipe
            self._seq += 1
            if records is None:
                msg = b"[%d,null]" % self._seq
            else:
                k = self.SEND_SLICE
                msg = b"[%d,[%b]]" % (self._seq, b",".join(
                    orjson.dumps(records[i:i + k], default=str)[1:-1]
                    for i in range(0, len(records), k)))
            try:
                self._to_learner.send_bytes(msg)
            except OSError as err:
                self.learner_error = f"learner process gone: {err}"
            return self._seq

    def _receive(self) -> None:
        while True:
            try:
                seq, n_accounts, rows = orjson.loads(self._from_learner.recv_bytes())
            except (EOFError, OSError):
                if self._proc is not None and not self._stop.is_set():
                    self.learner_error = "learner process exited"
                with self._acked_cv:
                    self._acked_cv.notify_all()
                return
            self._apply(rows, n_accounts)
            with self._acked_cv:
                self._acked = seq
                self._acked_cv.notify_all()

    def _apply(self, rows: list, n_accounts: int = 0) -> None:
        table = self.table
        for r in rows:
            table[r[0]] = tuple(r[1:])
        self._n_accounts = n_accounts

    @property
    def n_accounts(self) -> int:
        """Accounts in the online state."""
        if self.detector is not None:
            return getattr(self.detector, "n_accounts_", 0)
        return self._n_accounts

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
                if len(due):
                    self.detector.score_many(due)
                st = self.detector.state_of(str(frame["account_id"][0]))
            account, tier, seen = st["account_id"], st["tier"], st["exchanges_seen"]
            row = (st["score"], st["verdict"], st["reasons"], st["cluster_id"])
        else:   # learned later, off this path; decide from the account's published row
            check_record(record)                 # validate now: bad input is the caller's
            account = str(record["account_id"])
            with self._pending_lock:
                self._pending.append(record)
                self._seen[account] += 1
                mine = self._seen[account]
            row = self.table.get(account, _EMPTY)
            tier = row[4] or record.get("tier")
            seen = row[5] + mine - row[6]
        d = decide(self.policy, account_id=account, score=row[0], verdict=row[1],
                   reasons=row[2], tier=tier, cluster_id=row[3], exchanges_seen=seen,
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
                  f"distillguard_accounts {self.n_accounts}",
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
