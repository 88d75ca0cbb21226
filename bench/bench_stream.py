"""Streaming benchmark: replay throughput, bytes/account, leakage per campaign, batch agreement.

    python bench/bench_stream.py --seed 1 --work /tmp/dg-bench-stream [--scale 1.0]

Simulates the demo scenario, replays it with ``distillguard stream`` (in-process), runs the
batch ``detect`` on the same log, and prints one JSON object:

- ``events_per_s``: replay loop throughput (one process; learning + rescoring, excl. reading);
- ``per_account_bytes``: per-account state (columnar rows) and shared-index bytes / account;
- ``leakage``: per campaign, share of its exchanges served before the account that made them
  got its first ``attack`` alert (never-flagged accounts leak all their exchanges), and the
  median ``exchanges_seen`` at first alert;
- ``benign_fpr``: share of benign accounts with an ``attack`` alert during the replay, by segment;
- ``agreement``: share of accounts whose final streaming verdict equals batch ``detect``'s.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import polars as pl

from distillguard.detect import detect
from distillguard.simulate import simulate
from distillguard.stream.replay import replay


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--scale", type=float, default=1.0)
    ap.add_argument("--work", type=Path, default=Path("/tmp/dg-bench-stream"))
    ap.add_argument("--chunk-size", type=int, default=20000)
    ap.add_argument("--no-batch", action="store_true")
    a = ap.parse_args()
    sim = a.work / "sim"
    if not (sim / "labels.csv").exists():
        simulate("demo", scale=a.scale, seed=a.seed, out=sim)
    live = a.work / "live"
    for f in ("checkpoint.sqlite", "checkpoint.sqlite-wal", "checkpoint.sqlite-shm"):
        (live / f).unlink(missing_ok=True)
    r = replay([sim / "events"], accounts=sim / "accounts.csv", releases=sim / "releases.csv",
               out=live, chunk_size=a.chunk_size)
    meta = json.loads((live / "stream.json").read_text())
    ev = pl.scan_parquet(str(sim / "events" / "*.parquet"))
    n_acc = ev.group_by("account_id").agg(n=pl.len()).collect()
    truth = pl.read_csv(sim / "truth.csv") if (sim / "truth.csv").exists() else None
    labels = pl.read_csv(sim / "labels.csv")
    alerts = pl.read_ndjson(live / "alerts.jsonl")
    first = (alerts.filter(pl.col("verdict") == "attack").group_by("account_id")
             .agg(seen=pl.col("exchanges_seen").min()))
    acc = (labels.join(n_acc, on="account_id", how="inner")
           .join(first, on="account_id", how="left"))
    camp = acc.filter(pl.col("label") == "attack").with_columns(
        leaked=pl.coalesce("seen", "n").clip(upper_bound=pl.col("n")))
    leak = (camp.group_by("campaign").agg(
        accounts=pl.len(), detected=pl.col("seen").is_not_null().mean(),
        leakage=pl.col("leaked").sum() / pl.col("n").sum(),
        median_seen_at_alert=pl.col("seen").median()).sort("campaign"))
    seg_col = None
    if truth is not None:
        seg_col = next((c for c in ("segment", "persona", "kind") if c in truth.columns), None)
    ben = acc.filter(pl.col("label") == "benign")
    if seg_col:
        ben = ben.join(truth.select("account_id", seg_col), on="account_id", how="left")
        fpr = (ben.group_by(seg_col).agg(accounts=pl.len(),
                                         fpr=pl.col("seen").is_not_null().mean())
               .sort(seg_col).to_dicts())
    else:
        fpr = [{"all": ben.height, "fpr": ben["seen"].is_not_null().mean()}]
    out = {"events": r.n_events, "accounts": r.n_accounts, "events_per_s": r.events_per_s,
           "memory": meta["memory"], "alerts": r.n_alerts, "leakage": leak.to_dicts(),
           "benign_fpr": fpr}
    if not a.no_batch:
        det = a.work / "batch"
        detect([sim / "events"], accounts=sim / "accounts.csv",
               releases=sim / "releases.csv", out=det)
        b = pl.read_csv(det / "accounts.csv").select("account_id", bv="verdict")
        s = pl.read_csv(live / "accounts.csv").select("account_id", sv="verdict")
        j = b.join(s, on="account_id")
        out["agreement"] = float((j["bv"] == j["sv"]).mean())
        out["agreement_attack_vs_rest"] = float(
            ((j["bv"] == "attack") == (j["sv"] == "attack")).mean())
    print(json.dumps(out, indent=1, default=str))


if __name__ == "__main__":
    main()
