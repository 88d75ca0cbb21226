"""Broker consumers: a real redis-server (started here on a free loopback port) and Kafka
through librdkafka's built-in mock cluster. A consumer that crashes at the worst moments
(after a checkpoint but before its acknowledgement; after learning records but before the
checkpoint) and is replaced by another loses no record and counts none twice."""

from __future__ import annotations

import json
import shutil
import socket
import sqlite3
import subprocess
import time
from collections import Counter
from datetime import UTC, datetime, timedelta

import polars as pl
import pytest

from distillguard.errors import InputError
from distillguard.stream import OnlineDetector
from distillguard.stream.consumers import (
    Consumer,
    Invalid,
    KafkaConsumer,
    RedisStreamConsumer,
    parse_message,
    run_consumer,
)

N_ACC, PER_ACC = 30, 20
T0 = datetime(2025, 3, 1, tzinfo=UTC)


def _records() -> list[dict]:
    """N_ACC × PER_ACC contract records in time order (each account a few prompt styles)."""
    out = []
    for k in range(N_ACC * PER_ACC):
        a = k % N_ACC
        out.append({"ts": (T0 + timedelta(seconds=7 * k)).isoformat(),
                    "account_id": f"acct-{a:02d}", "model": "helix-3",
                    "prompt": f"question {k // N_ACC} from {a}: what is {k} squared?",
                    "ip": f"10.0.{a}.{k % 3}", "user_agent": "client/1.0"})
    return out


RECORDS = _records()


def _counts(det: OnlineDetector) -> dict[str, int]:
    n = det.n_accounts_
    return dict(zip(det.ids_[:n], det.c_["n"][:n].tolist()))


class Crash(Exception):
    pass


class Flaky:
    """Wraps a consumer; raises ``Crash`` on the ``ack_crash``-th ack or before the
    ``poll_crash``-th poll that would deliver records (a process dying there)."""

    def __init__(self, inner, *, ack_crash=None, poll_crash=None):
        self.inner, self.source = inner, inner.source
        self.ack_crash, self.poll_crash = ack_crash, poll_crash
        self.acks = self.polls = self.delivered = 0

    @property
    def ready(self):
        return getattr(self.inner, "ready", True)

    def poll(self, max_records=1000, timeout=1.0):
        got = self.inner.poll(max_records, timeout)
        if got:
            self.polls += 1
            if self.polls == self.poll_crash:
                raise Crash("poll")
        self.delivered += len(got)
        return got

    def ack(self, ids):
        self.acks += 1
        if self.acks == self.ack_crash:
            raise Crash("ack")
        self.inner.ack(ids)

    def close(self):
        self.inner.close()


def test_parse_message():
    assert parse_message(b'{"a": 1}') == {"a": 1}
    assert parse_message(b"{nope").reason == "bad_json"
    assert parse_message(b"[1]").reason == "not_an_object"
    assert parse_message(None).reason == "empty_message"


# -- Redis Streams ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def redis_url(tmp_path_factory):
    exe = shutil.which("redis-server")
    if exe is None:
        pytest.skip("redis-server is not installed (apt-get install redis-server)")
    pytest.importorskip("redis", reason="redis-py is not installed (pip install redis)")
    import redis

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    d = tmp_path_factory.mktemp("redis")
    proc = subprocess.Popen([exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                             "--appendonly", "no", "--dir", str(d)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"redis://127.0.0.1:{port}/0"
    r = redis.Redis.from_url(url)
    deadline = time.monotonic() + 10
    while True:
        try:
            r.ping()
            break
        except redis.ConnectionError:
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail("redis-server did not start")
            time.sleep(0.05)
    yield url
    r.close()
    proc.terminate()
    proc.wait(timeout=10)


def _produce_redis(url, stream, records):
    import redis

    r = redis.Redis.from_url(url)
    pipe = r.pipeline()
    for rec in records:
        pipe.xadd(stream, {"data": rec if isinstance(rec, bytes) else json.dumps(rec)})
    pipe.execute()
    r.close()


def _redis(url, stream, name, **kw):
    return RedisStreamConsumer(stream, "dg", name, url=url, **kw)


def test_redis_consume_and_resume(redis_url, tmp_path):
    _produce_redis(redis_url, "s1", RECORDS[:500])
    c = _redis(redis_url, "s1", "c1")
    assert isinstance(c, Consumer)
    res = run_consumer(c, OnlineDetector(), out=tmp_path, max_records=64, timeout=0.05,
                       checkpoint_every=3, idle_polls=1)
    assert res.n_events == res.events_total == 500 and c.pending() == 0
    acc = pl.read_csv(tmp_path / "accounts.csv")
    assert acc.height == N_ACC
    # more traffic; a restart resumes from the checkpoint and learns only the new records
    _produce_redis(redis_url, "s1", RECORDS[500:])
    det = OnlineDetector()
    res = run_consumer(_redis(redis_url, "s1", "c1"), det, out=tmp_path, max_records=64,
                       timeout=0.05, idle_polls=1)
    assert res.n_events == len(RECORDS) - 500 and res.events_total == len(RECORDS)
    assert set(_counts(det).values()) == {PER_ACC}
    c.close()


def test_redis_dead_consumer_entries_are_claimed_only_when_idle(redis_url):
    _produce_redis(redis_url, "s2", RECORDS[:100])
    dead = _redis(redis_url, "s2", "dead", claim_idle_ms=300)
    first = dead.poll(40, 0.05)                     # delivered, never acknowledged
    assert len(first) == 40
    alive = _redis(redis_url, "s2", "alive", claim_idle_ms=300)
    got = alive.poll(100, 0.05)                     # only the undelivered ones
    assert len(got) == 60 and not {m for m, _ in got} & {m for m, _ in first}
    assert alive.claimed == 0
    alive.ack([m for m, _ in got])
    time.sleep(0.35)
    again = alive.poll(100, 0.05)                   # now idle > 300 ms: taken over
    assert [m for m, _ in again] == [m for m, _ in first] and alive.claimed == 40
    assert again[0][1] == RECORDS[0]
    alive.ack([m for m, _ in again])
    assert alive.pending() == 0
    dead.close()
    alive.close()


def test_redis_crash_loses_nothing_and_counts_nothing_twice(redis_url, tmp_path):
    _produce_redis(redis_url, "s3", RECORDS)
    ref = OnlineDetector()
    run_consumer(RedisStreamConsumer("s3", "ref", "r", url=redis_url), ref,
                 out=tmp_path / "ref", max_records=50, timeout=0.05, idle_polls=1)
    expected = _counts(ref)
    assert sum(expected.values()) == len(RECORDS)

    out = tmp_path / "live"
    kw = {"out": out, "max_records": 50, "timeout": 0.05, "checkpoint_every": 2,
          "idle_polls": 1}
    # 1. c1 dies after its 2nd checkpoint, before acknowledging batches 3-4
    c1 = Flaky(_redis(redis_url, "s3", "c1"), ack_crash=2)
    with pytest.raises(Crash):
        run_consumer(c1, OnlineDetector(), **kw)
    db = sqlite3.connect(out / "consumer.sqlite")
    done, unacked = db.execute("SELECT events_done, unacked FROM consumer_checkpoint"
                               ).fetchone()
    db.close()
    assert done == 200 and len(json.loads(unacked)) == 100
    # 2. c2 takes over c1's pending entries (in the checkpoint: acknowledged, not learned),
    #    learns 3 batches, checkpoints after 2 and dies before the next checkpoint
    c2 = Flaky(_redis(redis_url, "s3", "c2", claim_idle_ms=0), poll_crash=5)
    with pytest.raises(Crash):
        run_consumer(c2, OnlineDetector(), **kw)
    assert c2.inner.claimed == 100
    # 3. c3 takes over c2's pending entries (learned by c2, lost with it) and finishes
    det = OnlineDetector()
    c3 = _redis(redis_url, "s3", "c3", claim_idle_ms=0)
    res = run_consumer(c3, det, **kw)
    assert c3.claimed > 0 and res.skipped_done == 0   # c2's learned, unsaved records
    assert res.events_total == len(RECORDS)
    assert _counts(det) == expected                 # none lost, none twice
    assert c3.pending() == 0
    # the final outputs cover the same accounts as the uninterrupted run
    a = pl.read_csv(out / "accounts.csv").sort("account_id")
    b = pl.read_csv(tmp_path / "ref" / "accounts.csv").sort("account_id")
    assert a["account_id"].to_list() == b["account_id"].to_list()
    c3.close()


def test_redis_invalid_messages(redis_url, tmp_path):
    _produce_redis(redis_url, "s4", [RECORDS[0], b"{not json", {"ts": "yesterday-ish",
                                                                "account_id": "x",
                                                                "prompt": "p"}, RECORDS[1]])
    with pytest.raises(InputError, match=r"redis stream 's4'.*message \d+-\d+"):
        run_consumer(_redis(redis_url, "s4", "c1"), out=tmp_path / "a", timeout=0.05,
                     idle_polls=1)
    c = RedisStreamConsumer("s4", "g2", "c1", url=redis_url)
    res = run_consumer(c, out=tmp_path / "b", timeout=0.05, idle_polls=1, skip_invalid=True)
    assert res.n_events == 2 and sum(res.invalid.values()) == 2 and "bad_json" in res.invalid
    bad = [json.loads(x) for x in (tmp_path / "b" / "invalid.jsonl").read_text().splitlines()]
    assert len(bad) == 2 and all("message" in b["error"] for b in bad)
    assert c.pending() == 0                         # counted, written, acknowledged
    c.close()


# -- Kafka (librdkafka mock cluster) ---------------------------------------------------------

@pytest.fixture(scope="module")
def kafka():
    ck = pytest.importorskip("confluent_kafka", reason="confluent-kafka is not installed")
    p = ck.Producer({"test.mock.num.brokers": 1, "log_level": 2})
    md = p.list_topics(timeout=10)
    bootstrap = ",".join(f"{b.host}:{b.port}" for b in md.brokers.values())
    for rec in RECORDS:      # keyed by account: one account's records stay in order
        p.produce("events", key=rec["account_id"], value=json.dumps(rec))
    p.produce("events", key="bad", value=b"{oops")
    assert p.flush(10) == 0
    yield bootstrap
    del p


def _kafka(bootstrap, group):
    return KafkaConsumer("events", group, bootstrap_servers=bootstrap,
                         config={"log_level": 2, "session.timeout.ms": 6000})


def test_kafka_crash_loses_nothing_and_counts_nothing_twice(kafka, tmp_path):
    expected = Counter(r["account_id"] for r in RECORDS)
    out = tmp_path / "live"
    kw = {"out": out, "max_records": 100, "timeout": 0.5, "checkpoint_every": 2,
          "idle_polls": 4, "skip_invalid": True}
    # dies after a checkpoint, before committing its offsets
    c1 = Flaky(_kafka(kafka, "g"), ack_crash=2)
    with pytest.raises(Crash):
        run_consumer(c1, OnlineDetector(), **kw)
    c1.inner.close()                      # leaves the group; the offsets stay uncommitted
    # dies after learning a batch past its checkpoint
    c2 = Flaky(_kafka(kafka, "g"), poll_crash=4)
    with pytest.raises(Crash):
        run_consumer(c2, OnlineDetector(), **kw)
    c2.inner.close()
    det = OnlineDetector()
    c3 = _kafka(kafka, "g")
    res = run_consumer(c3, det, **kw)
    assert c1.delivered + c2.delivered + res.n_events > len(RECORDS)   # re-deliveries
    assert res.events_total == len(RECORDS) and _counts(det) == expected
    assert res.invalid == {"bad_json": 1}
    # everything committed: each partition's committed offset is its end
    parts = c3.c.assignment()
    assert len(parts) == 4
    for tp in c3.c.committed(parts, timeout=10):
        assert tp.offset == c3.c.get_watermark_offsets(tp, timeout=10)[1]
    c3.close()


def test_invalid_is_reported_with_the_message_id(tmp_path):
    class One:
        source = "test source"

        def __init__(self):
            self.done = False

        def poll(self, max_records=1000, timeout=1.0):
            if self.done:
                return []
            self.done = True
            return [("m-1", Invalid("bad_json", "not JSON"))]

        def ack(self, ids):
            pass

        def close(self):
            pass

    with pytest.raises(InputError, match="test source message m-1: not JSON"):
        run_consumer(One(), out=tmp_path, idle_polls=1)


def _events_done(path) -> int:
    if not path.exists():
        return 0
    db = sqlite3.connect(path)
    try:
        row = db.execute("SELECT events_done FROM consumer_checkpoint").fetchone()
    except sqlite3.OperationalError:      # table not created yet
        row = None
    finally:
        db.close()
    return row[0] if row else 0


def test_redis_kill_9_mid_stream_via_the_cli(redis_url, tmp_path):
    """`distillguard consume` killed with SIGKILL while records arrive; a restart with the
    same consumer name finishes: every record counted exactly once."""
    import os
    import signal
    import sys

    out = tmp_path / "live"
    cmd = [sys.executable, "-m", "distillguard.cli", "consume", redis_url, "--stream", "s5",
           "--consumer", "worker-1", "--out", str(out), "--batch", "25",
           "--checkpoint-every", "2"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    ck = out / "consumer.sqlite"
    sent, done = 0, 0
    deadline = time.monotonic() + 60
    while done < 150:                  # feed 50 records at a time until 150 are checkpointed
        assert proc.poll() is None, proc.stdout.read().decode()
        assert time.monotonic() < deadline, "consumer made no progress"
        if sent < 400:
            _produce_redis(redis_url, "s5", RECORDS[sent:sent + 50])
            sent += 50
        time.sleep(0.2)
        done = _events_done(ck)
    os.kill(proc.pid, signal.SIGKILL)
    assert done <= sent <= 400  # killed before the rest of RECORDS was even produced
    proc.wait()
    proc.stdout.close()
    _produce_redis(redis_url, "s5", RECORDS[sent:])
    r = subprocess.run([*cmd, "--idle-exit", "1"], env=env, capture_output=True, text=True,
                       timeout=120, check=False)
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"({len(RECORDS):,} in the state" in r.stdout
    learned = int(r.stdout.split("consumed ")[1].split(" records")[0].replace(",", ""))
    assert learned <= len(RECORDS) - done      # the restart resumed, not started over
    db = sqlite3.connect(ck)
    state, unacked = db.execute("SELECT state, unacked FROM consumer_checkpoint").fetchone()
    db.close()
    det = OnlineDetector().load_bytes(state)
    assert _counts(det) == Counter(x["account_id"] for x in RECORDS)
    assert json.loads(unacked) == []
    assert RedisStreamConsumer("s5", "distillguard", "probe", url=redis_url).pending() == 0
    for line in (out / "alerts.jsonl").read_text().splitlines():
        assert json.loads(line)["account_id"].startswith("acct-")


class _Memory:
    """An in-memory broker stand-in: JSON payloads, acknowledged ids remembered."""

    source = "memory"

    def __init__(self, payloads):
        self.payloads, self.i, self.acked = payloads, 0, []

    def poll(self, max_records=1000, timeout=1.0):
        k = self.i
        self.i = min(len(self.payloads), k + max_records)
        return [(str(j), parse_message(self.payloads[j])) for j in range(k, self.i)]

    def ack(self, ids):
        self.acked += ids

    def close(self):
        pass


@pytest.mark.parametrize("sync", [True, False])
def test_a_decision_engine_learns_the_broker_traffic(tmp_path, sync):
    """With a DecisionEngine as target, the gateway's decisions see the consumed records
    (with background learning: through the rows the consumer republishes)."""
    from distillguard.act import load_policy
    from distillguard.serve import DecisionEngine

    (tmp_path / "p.yaml").write_text("id: t\nversion: 1\nrules:\n  - id: heavy\n"
                                     "    when: {exchanges_min: 20}\n    action: block\n")
    eng = DecisionEngine(policy=load_policy(tmp_path / "p.yaml"), sync=sync)
    mem = _Memory([json.dumps(r).encode() for r in RECORDS])
    res = run_consumer(mem, eng, out=tmp_path / "o", max_records=128, idle_polls=1,
                       timeout=0)
    assert res.events_total == len(RECORDS) and sorted(mem.acked, key=int) == [
        str(i) for i in range(len(RECORDS))]
    d = eng.decide({"account_id": "acct-03", "prompt": "one more", "ts": T0.isoformat()})
    assert d.action == "block" and d.rule == "heavy"
    assert d.exchanges_seen == PER_ACC + 1
    assert eng.decide({"account_id": "new", "prompt": "hi"}).action == "allow"


def test_an_engine_with_a_learner_process_is_refused(tmp_path):
    from distillguard.errors import ConfigError
    from distillguard.serve import DecisionEngine

    eng = DecisionEngine(learner="process")
    with pytest.raises(ConfigError, match="separate process"):
        run_consumer(_Memory([]), eng, out=tmp_path / "o", idle_polls=1, timeout=0)
