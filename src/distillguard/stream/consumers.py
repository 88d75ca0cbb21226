"""Live mode: contract records from a message broker into the online detector.

One small interface, :class:`Consumer` (``poll`` / ``ack`` / ``close``), with two brokers:

- :class:`RedisStreamConsumer`: Redis Streams with a consumer group (``XREADGROUP``,
  ``XACK``); on start it re-reads its own pending entries, and it takes over entries left
  pending by a dead consumer once idle longer than ``claim_idle_ms`` (``XAUTOCLAIM``);
- :class:`KafkaConsumer`: Kafka through ``confluent-kafka`` with auto-commit off; ``ack``
  commits the offsets after the records it covers.

Each message is one JSON contract record (contract.md §1; Redis: field ``data``).

:func:`run_consumer` learns polled batches into an :class:`~distillguard.stream.OnlineDetector`
(or the detector of a :class:`~distillguard.serve.DecisionEngine`, so a gateway decides on
the broker's traffic too), rescores due accounts, appends ``alerts.jsonl`` as ``distillguard
stream`` does, and acknowledges **only after** the state that includes the records is
checkpointed. The checkpoint (SQLite, one transaction) also holds the ids of the records
in it that were not yet acknowledged; after a crash these come back from the broker and are
acknowledged without being learned again, while records learned after the last checkpoint
are redelivered and learned once. So a crash at any point loses no record and counts none
twice.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol, runtime_checkable

import orjson
import polars as pl

from ..errors import ConfigError, InputError
from .normalize import check_record, normalize_records
from .online import OnlineDetector


@dataclass(frozen=True)
class Invalid:
    """A message that is not a contract record (kept in place of the record)."""

    reason: str
    message: str
    field: str | None = None


@runtime_checkable
class Consumer(Protocol):
    """What :func:`run_consumer` needs from a broker client."""

    source: str

    def poll(self, max_records: int = 1000, timeout: float = 1.0) -> list[tuple[str, object]]:
        """Up to ``max_records`` ``(message id, record dict or Invalid)``; waits at most
        ``timeout`` seconds when nothing is there."""

    def ack(self, ids: list[str]) -> None:
        """Acknowledge processed messages (they will not be delivered again)."""

    def close(self) -> None: ...


def parse_message(value) -> object:
    """A message payload (bytes / str) → record dict, or :class:`Invalid`."""
    if value is None:
        return Invalid("empty_message", "message has no payload")
    try:
        rec = orjson.loads(value)
    except orjson.JSONDecodeError as e:
        return Invalid("bad_json", f"not JSON ({e})")
    if not isinstance(rec, dict):
        return Invalid("not_an_object", "record is not a JSON object")
    return rec


class RedisStreamConsumer:
    """Consumer-group reader of a Redis stream.

    Parameters
    ----------
    stream, group, consumer : str
        Stream key, consumer group (created at ``start_id`` if missing) and this
        consumer's name (stable across restarts, so it gets its own pending entries back).
    url / client
        ``redis://`` URL, or a ready ``redis.Redis`` client.
    field : str
        Entry field holding the JSON record.
    claim_idle_ms : int
        Entries pending at another consumer for longer than this are taken over.
    """

    def __init__(self, stream: str, group: str, consumer: str = "distillguard-1", *,
                 url: str = "redis://127.0.0.1:6379/0", client=None, field: str = "data",
                 claim_idle_ms: int = 60_000, start_id: str = "0") -> None:
        import redis

        self.stream, self.group, self.consumer = stream, group, consumer
        self.field = field.encode()
        self.claim_idle_ms = claim_idle_ms
        self.r = client or redis.Redis.from_url(url)
        self.source = f"redis stream {stream!r} (group {group!r})"
        try:
            self.r.xgroup_create(stream, group, id=start_id, mkstream=True)
        except redis.ResponseError as e:
            if "BUSYGROUP" not in str(e):
                raise ConfigError(f"{self.source}: {e}") from None
        except redis.ConnectionError as e:
            raise ConfigError(f"{self.source}: cannot reach {url}: {e}") from None
        self._own_pending = True        # first re-read what this consumer had not acked
        self._pel_cursor = "0"
        self._claim_cursor = "0-0"
        self._inflight: set[str] = set()  # delivered to this consumer in this session
        self.claimed = 0                # entries taken over from other consumers
        self.deleted = 0                # pending entries whose data was trimmed away

    def _entries(self, entries) -> list[tuple[str, object]]:
        out = []
        for mid, fields in entries:
            mid = mid.decode() if isinstance(mid, bytes) else mid
            if mid in self._inflight:   # our own, still being processed: not again
                continue
            self._inflight.add(mid)
            if fields is None:          # trimmed from the stream while pending
                self.deleted += 1
                out.append((mid, Invalid("deleted", "entry trimmed before it was read")))
                continue
            out.append((mid, parse_message(fields.get(self.field))))
        return out

    def poll(self, max_records: int = 1000, timeout: float = 1.0) -> list[tuple[str, object]]:
        if self._own_pending:
            res = self.r.xreadgroup(self.group, self.consumer, {self.stream: self._pel_cursor},
                                    count=max_records)
            entries = res[0][1] if res else []
            if entries:
                last = entries[-1][0]
                self._pel_cursor = last.decode() if isinstance(last, bytes) else last
                return self._entries(entries)
            self._own_pending = False
        res = self.r.xautoclaim(self.stream, self.group, self.consumer, self.claim_idle_ms,
                                start_id=self._claim_cursor, count=max_records)
        cursor, entries = res[0], res[1]
        self._claim_cursor = cursor.decode() if isinstance(cursor, bytes) else cursor
        if len(res) > 2 and res[2]:     # Redis ≥ 7: ids deleted while pending
            for mid in res[2]:
                self.deleted += 1
                entries = [*entries, (mid, None)]
        got = self._entries(entries)
        if got:
            self.claimed += len(got)
            return got
        res = self.r.xreadgroup(self.group, self.consumer, {self.stream: ">"},
                                count=max_records, block=max(1, int(timeout * 1000)))
        return self._entries(res[0][1]) if res else []

    def ack(self, ids: list[str]) -> None:
        if ids:
            self.r.xack(self.stream, self.group, *ids)
            self._inflight.difference_update(ids)

    def pending(self) -> int:
        """Entries delivered to the group and not acknowledged yet."""
        return int(self.r.xpending(self.stream, self.group)["pending"])

    def close(self) -> None:
        self.r.close()


class KafkaConsumer:
    """Kafka consumer (``confluent-kafka``) with commit-after-process.

    ``config`` is passed to ``confluent_kafka.Consumer`` over the defaults
    ``enable.auto.commit=false``, ``auto.offset.reset=earliest``. Message ids are
    ``topic:partition:offset``; ``ack`` commits, per partition, the offset after the
    highest acknowledged message (synchronously).
    """

    def __init__(self, topics: list[str] | str, group: str, *,
                 bootstrap_servers: str | None = None, config: dict | None = None) -> None:
        from confluent_kafka import Consumer as _KC

        self.topics = [topics] if isinstance(topics, str) else list(topics)
        conf = {"group.id": group, "enable.auto.commit": False,
                "auto.offset.reset": "earliest", **(config or {})}
        if bootstrap_servers:
            conf["bootstrap.servers"] = bootstrap_servers
        self.source = f"kafka topic {','.join(self.topics)} (group {group!r})"
        self.c = _KC(conf)
        self.ready = False              # partitions assigned (until then polls are empty)

        def on_assign(consumer, partitions):
            self.ready = True

        self.c.subscribe(self.topics, on_assign=on_assign)

    def poll(self, max_records: int = 1000, timeout: float = 1.0) -> list[tuple[str, object]]:
        from confluent_kafka import KafkaError

        out = []
        for m in self.c.consume(num_messages=max_records, timeout=timeout):
            err = m.error()
            if err is not None:
                if err.code() == KafkaError._PARTITION_EOF:
                    continue
                raise InputError(f"Kafka error: {err}", path=self.source)
            out.append((f"{m.topic()}:{m.partition()}:{m.offset()}", parse_message(m.value())))
        return out

    def ack(self, ids: list[str]) -> None:
        from confluent_kafka import TopicPartition

        top: dict[tuple[str, int], int] = {}
        for mid in ids:
            t, p, o = mid.rsplit(":", 2)
            k = (t, int(p))
            top[k] = max(top.get(k, -1), int(o))
        if top:
            self.c.commit(offsets=[TopicPartition(t, p, o + 1) for (t, p), o in top.items()],
                          asynchronous=False)

    def close(self) -> None:
        self.c.close()


# -- the consuming loop ----------------------------------------------------------------------

class ConsumerCheckpoint:
    """Detector state, progress and the not-yet-acknowledged ids in one SQLite row."""

    def __init__(self, path: Path) -> None:
        from .replay import open_checkpoint_db

        self.path = Path(path)
        self.db = open_checkpoint_db(
            self.path, "CREATE TABLE IF NOT EXISTS consumer_checkpoint (id INTEGER PRIMARY "
            "KEY, source TEXT, events_done INTEGER, alerts_bytes INTEGER, "
            "n_alerts INTEGER, invalid TEXT, unacked TEXT, state BLOB, saved_at TEXT)")

    def load(self):
        return self.db.execute("SELECT source, events_done, alerts_bytes, n_alerts, invalid, "
                               "unacked, state FROM consumer_checkpoint WHERE id = 1").fetchone()

    def save(self, source: str, events_done: int, alerts_bytes: int, n_alerts: int,
             invalid: dict, unacked: list[str], state: bytes) -> None:
        with self.db:
            self.db.execute(
                "INSERT OR REPLACE INTO consumer_checkpoint VALUES (1, ?, ?, ?, ?, ?, ?, ?, ?)",
                (source, events_done, alerts_bytes, n_alerts, json.dumps(invalid),
                 json.dumps(unacked), state,
                 datetime.now(UTC).isoformat(timespec="seconds")))

    def set_unacked(self, unacked: list[str]) -> None:
        """Record that the rest was acknowledged (cheap: the state is not rewritten)."""
        with self.db:
            self.db.execute("UPDATE consumer_checkpoint SET unacked = ? WHERE id = 1",
                            (json.dumps(unacked),))

    def close(self) -> None:
        self.db.close()


@dataclass
class ConsumeResult:
    out: Path
    n_events: int                     # records learned in this run
    events_total: int                 # … and in the state (incl. before a restart)
    n_accounts: int
    n_alerts: int
    n_batches: int
    skipped_done: int                 # redelivered records already in the checkpoint
    invalid: dict = field(default_factory=dict)
    runtime_s: float = 0.0

    def summary(self) -> str:
        inv = sum(self.invalid.values())
        rate = self.n_events / self.runtime_s if self.runtime_s > 0 else 0.0
        return (f"consumed {self.n_events:,} records in {self.n_batches:,} batches "
                f"in {self.runtime_s:,.1f} s ({rate:,.0f}/s) "
                f"({self.events_total:,} in the state, {self.n_accounts:,} accounts); "
                f"alerts: {self.n_alerts:,}; invalid: {inv:,}; redelivered and skipped: "
                f"{self.skipped_done:,}\nwrote {self.out / 'alerts.jsonl'}, "
                f"{self.out / 'accounts.csv'}, {self.out / 'clusters.json'}")


def _valid(batch: list[tuple[str, object]], source: str, skip_invalid: bool,
           invalid: Counter, bad_fh) -> tuple[list[str], pl.DataFrame]:
    """Split a polled batch into (ids, records) of valid records; invalid ones raise or are
    counted and written to ``invalid.jsonl``."""
    ids, recs = [], []
    for mid, rec in batch:
        if isinstance(rec, Invalid):
            err = InputError(rec.message, path=f"{source} message {mid}", field=rec.field,
                             reason=rec.reason)
        else:
            ids.append(mid)
            recs.append(rec)
            continue
        if not skip_invalid:
            raise err
        invalid[err.reason] += 1
        bad_fh.write(orjson.dumps({"id": mid, "reason": err.reason, "error": str(err)})
                     + b"\n")
    try:
        return ids, normalize_records(recs, source=source) if recs else None
    except InputError:
        pass
    keep_ids, keep = [], []
    for mid, rec in zip(ids, recs):      # slow path only for a batch with a bad record
        try:
            check_record(rec, source=f"{source} message {mid}")
        except InputError as err:
            if not skip_invalid:
                raise InputError(err.message, path=f"{source} message {mid}",
                                 field=err.field, reason=err.reason) from None
            invalid[err.reason] += 1
            bad_fh.write(orjson.dumps({"id": mid, "reason": err.reason, "error": str(err)})
                         + b"\n")
            continue
        keep_ids.append(mid)
        keep.append(rec)
    return keep_ids, normalize_records(keep, source=source) if keep else None


def run_consumer(consumer: Consumer, target=None, *, out, policy_path=None,
                 checkpoint: Path | None = None, max_records: int = 1000,
                 timeout: float = 1.0, checkpoint_every: int = 10,
                 max_batches: int | None = None, idle_polls: int | None = None,
                 stop: threading.Event | None = None, skip_invalid: bool = False,
                 final_outputs: bool = True) -> ConsumeResult:
    """Consume until ``stop`` is set, ``max_batches`` batches were learned or ``idle_polls``
    polls in a row came back empty; checkpoint then acknowledge every ``checkpoint_every``
    batches and at the end. ``target``: an :class:`OnlineDetector` (a fresh default one if
    None) or a ``DecisionEngine`` (its detector, under its lock, and its policy)."""
    from ..act import load_policy
    from ..outputs import write_accounts_csv
    from .replay import _final_clusters, learn_and_alert

    started = time.perf_counter()
    target = OnlineDetector() if target is None else target
    det = getattr(target, "detector", target)
    if det is None:
        raise ConfigError("this DecisionEngine learns in a separate process: consume into "
                          "an engine with learner='thread' (or sync=True)")
    publish = getattr(target, "publish", None)   # an engine: republish its decision rows
    lock = getattr(target, "_lock", None) or contextlib.nullcontext()
    policy = getattr(target, "policy", None) or load_policy(policy_path)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    ck = ConsumerCheckpoint(checkpoint or out / "consumer.sqlite")
    alerts_path = out / "alerts.jsonl"
    with lock:
        det._init()
    saved = ck.load()
    events_done, n_alerts, invalid, done_ids = 0, 0, Counter(), set()
    if saved is not None:
        src, events_done, alerts_bytes, n_alerts, inv, unacked, state = saved
        if src != consumer.source:
            ck.close()
            raise ConfigError(f"{ck.path}: checkpoint of another source ({src}); remove it "
                              f"or pass another checkpoint")
        with lock:
            det.load_bytes(state)
        invalid.update(json.loads(inv))
        done_ids = set(json.loads(unacked))
        with open(alerts_path, "ab") as fh:
            fh.truncate(alerts_bytes)
    else:
        alerts_path.write_bytes(b"")
    fh = open(alerts_path, "ab")  # noqa: SIM115 (closed in the finally below)
    bad_fh = open(out / "invalid.jsonl", "ab")  # noqa: SIM115
    pending: list[str] = []
    learned = skipped = batches = idle = 0

    def commit() -> None:
        fh.flush()
        os.fsync(fh.fileno())
        bad_fh.flush()
        with lock:
            state = det.to_bytes()
        # records of the state not acknowledged yet: this batch of them, and those of the
        # restored checkpoint not seen again so far
        ck.save(consumer.source, events_done, fh.tell(), n_alerts, dict(invalid),
                pending + sorted(done_ids), state)
        consumer.ack(pending)       # after the checkpoint: a crash here only re-delivers
        if pending:                 # records that the checkpoint marks as done
            ck.set_unacked(sorted(done_ids))
        pending.clear()

    try:
        while not (stop is not None and stop.is_set()):
            batch = consumer.poll(max_records, timeout)
            if not batch:
                idle += bool(getattr(consumer, "ready", True))   # Kafka: once assigned
                if idle_polls is not None and idle >= idle_polls:
                    break
                continue
            idle = 0
            if done_ids:
                redo = {m for m, _ in batch if m in done_ids}
                if redo:
                    consumer.ack(sorted(redo))
                    skipped += len(redo)
                    done_ids.difference_update(redo)
                    batch = [(m, r) for m, r in batch if m not in redo]
            if not batch:
                continue
            _, frame = _valid(batch, consumer.source, skip_invalid, invalid, bad_fh)
            pending.extend(m for m, _ in batch)        # invalid ones are done too
            if frame is not None and frame.height:
                frame = frame.sort("ts", maintain_order=True)
                with lock:
                    n_alerts += learn_and_alert(det, frame, fh, policy)
                if publish is not None:
                    publish(frame["account_id"].unique().to_list())
                events_done += frame.height
                learned += frame.height
            batches += 1
            if batches % checkpoint_every == 0:
                commit()
            if max_batches is not None and batches >= max_batches:
                break
        commit()
        if final_outputs:
            with lock:
                final = det.score_all()
                final, clusters = _final_clusters(det, final)
            write_accounts_csv(final, out / "accounts.csv")
            (out / "clusters.json").write_text(json.dumps(clusters, indent=1) + "\n")
    finally:
        fh.close()
        bad_fh.close()
        ck.close()
    return ConsumeResult(out=out, n_events=learned, events_total=events_done,
                         n_accounts=det.n_accounts_, n_alerts=n_alerts, n_batches=batches,
                         skipped_done=skipped, invalid=dict(invalid),
                         runtime_s=time.perf_counter() - started)


__all__ = [
    "ConsumeResult",
    "Consumer",
    "ConsumerCheckpoint",
    "Invalid",
    "KafkaConsumer",
    "RedisStreamConsumer",
    "parse_message",
    "run_consumer",
]
