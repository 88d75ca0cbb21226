"""Fit the online detector's early-evidence threshold from the training seeds (no held-out data).

Replays the TRAIN seeds of the demo scenario (the seeds the shipped scorer was fitted on)
through :class:`distillguard.stream.OnlineDetector` with the stream rules switched off
(``min_exchanges_attack`` 1, no early threshold, no inheritance), rescoring every account
that had exchanges in a chunk, at every chunk end. Among the rows of *benign* accounts that
the scorer would make ``attack`` (score over the attack threshold, not capped as solo)
with ``stream.min_exchanges_attack`` to ``stream.early_exchanges`` - 1 exchanges (fewer are
held back by the minimum anyway), it takes the highest score; the fitted
``early_attack_threshold`` lies just above it, so no benign account of the training seeds is
flagged on its own evidence early in its life. The value is written into the ``stream``
section of ``signals.yaml`` (the line ``early_attack_threshold: …``).

    python tools/fit_stream.py [--work DIR] [--chunk-size 1000] [--signals PATH] [--dry-run]
"""

from __future__ import annotations

import argparse
import dataclasses
import re
import tempfile
from pathlib import Path

import numpy as np
import polars as pl

from distillguard.read import read_labels, read_log
from distillguard.signals import load_signals
from distillguard.simulate import simulate
from distillguard.stream import OnlineDetector
from distillguard.stream.replay import iter_chunks

ROOT = Path(__file__).resolve().parents[1]
TRAIN = [("demo", 1.0, s) for s in (1, 2, 3)]   # as tools/fit_scorer.py


def early_rows(sim: Path, chunk_size: int, signals) -> pl.DataFrame:
    """(account_id, exchanges_seen, score, verdict) at every chunk end, for every account
    with exchanges in the chunk; stream rules off."""
    raw = dataclasses.replace(signals, stream=dataclasses.replace(
        signals.stream, min_exchanges_attack=1, early_exchanges=0, inherit_payment=0,
        inherit_linked=0))
    rows = []
    with read_log([sim / "events"], accounts=sim / "accounts.csv",
                  releases=sim / "releases.csv") as log, tempfile.TemporaryDirectory() as tmp:
        spool = Path(tmp) / "sorted.parquet"
        log.events.sort("ts", maintain_order=True).sink_parquet(spool)
        det = OnlineDetector(accounts=log.accounts, releases=log.releases, grace=1)
        det._init()
        det.signals_ = raw
        schema = pl.scan_parquet(spool).collect_schema()
        for chunk in iter_chunks(spool, chunk_size, schema=schema):
            det.learn_many(chunk)
            touched = np.unique(chunk["account_id"].replace_strict(
                det.index_, return_dtype=pl.Int64).to_numpy())
            rows.append(det.score_many(touched).select(
                "account_id", "exchanges_seen", "score", "verdict"))
    return pl.concat(rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, default=None)
    ap.add_argument("--chunk-size", type=int, default=1000)
    ap.add_argument("--signals", type=Path, default=ROOT / "src/distillguard/data/signals.yaml")
    ap.add_argument("--dry-run", action="store_true", help="print, do not write signals.yaml")
    a = ap.parse_args()
    signals = load_signals(a.signals)
    work = a.work or Path(tempfile.mkdtemp(prefix="dg-fit-stream-"))
    n_early = signals.stream.early_exchanges
    n_min = signals.stream.min_exchanges_attack
    tops, n_benign = [], 0
    for scenario, scale, seed in TRAIN:
        sim = work / f"{scenario}-{seed}"
        if not (sim / "truth.csv").exists():
            simulate(scenario, scale=scale, seed=seed, out=sim)
        rows = early_rows(sim, a.chunk_size, signals).join(
            read_labels(sim / "truth.csv").select("account_id", "label", "segment"),
            on="account_id")
        ben = rows.filter(pl.col("label") == "benign")
        n_benign += ben["account_id"].n_unique()
        early = ben.filter((pl.col("verdict") == "attack")
                           & pl.col("exchanges_seen").is_between(n_min, n_early - 1))
        top = early.group_by("account_id", "segment").agg(
            pl.col("score").max(), pl.col("exchanges_seen").min())
        tops.append(top.with_columns(seed=pl.lit(seed)))
        print(f"{scenario} seed {seed}: {ben['account_id'].n_unique():,} benign accounts, "
              f"{top.height} flagged on their own with {n_min}-{n_early - 1} exchanges")
    top = pl.concat(tops).sort("score", descending=True)
    print(top.head(10))
    thr = float(np.nextafter(top["score"].max(), 1.0)) if top.height else 0.0
    thr = float(np.ceil(thr * 1e6) / 1e6)
    print(f"early_attack_threshold {thr:.6f} ({n_min}-{n_early - 1} exchanges; "
          f"{n_benign:,} benign training accounts)")
    if a.dry_run:
        return
    text = a.signals.read_text()
    new, k = re.subn(r"(?m)^(\s*early_attack_threshold:\s*)[0-9.eE+-]+", rf"\g<1>{thr:.6f}",
                     text)
    if k != 1:
        raise SystemExit(f"{a.signals}: no single 'early_attack_threshold:' line to update")
    a.signals.write_text(new)
    print(f"wrote {a.signals}")


if __name__ == "__main__":
    main()
