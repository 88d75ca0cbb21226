"""Fit the online detector's thresholds from calibration seeds (no held-out data).

Replays the CALIBRATION seeds of the demo scenario (fresh simulations the scorer's weights
never saw, 4-9; tools/fit_scorer.py fits its batch thresholds on 4-6) through
:class:`distillguard.stream.OnlineDetector` with the stream rules switched off
(``min_exchanges_attack`` 1, no early threshold, no inheritance, every account not capped as
solo counted), rescoring every account that had exchanges in a chunk, at every chunk end.
From the *benign* accounts' rows it fits, for ≤ 0.1 % benign accounts ever flagged:

- ``attack_threshold``: online features (sketches, partial histories) score differently from
  batch ones, so the online attack threshold is the upper 0.1 % quantile of the highest
  score, with at least ``early_exchanges`` exchanges, of the benign accounts not capped as
  solo (as the batch thresholds are fitted);
- ``early_attack_threshold``: just above the highest benign score with
  ``min_exchanges_attack`` to ``early_exchanges`` - 1 exchanges (few exchanges give noisy
  features), and never below ``attack_threshold``.

Both values are written into the ``stream`` section of ``signals.yaml``. The fitted attack
threshold (0.20) rests on the few benign accounts that are not capped as solo in three
calibration logs and flagged corporate-NAT accounts elsewhere; the shipped one is fixed at 0.6
(chosen on development seeds 1001-1003):

    python tools/fit_stream.py --attack-threshold 0.6 [--work DIR] [--chunk-size 1000]
                               [--signals PATH] [--dry-run]
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
from distillguard.score import _upper_quantile
from distillguard.signals import load_signals
from distillguard.simulate import simulate
from distillguard.stream import OnlineDetector
from distillguard.stream.replay import iter_chunks

ROOT = Path(__file__).resolve().parents[1]
# tools/fit_scorer.py's calibration seeds 4-6 and three more: the early threshold is a maximum
# over benign accounts, so it needs more data than a quantile (three seeds gave 0.843; six
# 0.919, docs/benchmarks.md "Early threshold on six calibration seeds")
CALIBRATION = [("demo", 1.0, s) for s in (4, 5, 6, 7, 8, 9)]


def early_rows(sim: Path, chunk_size: int, signals) -> pl.DataFrame:
    """(account_id, exchanges_seen, score, verdict) at every chunk end, for every account
    with exchanges in the chunk; stream rules off."""
    raw = dataclasses.replace(signals, stream=dataclasses.replace(
        signals.stream, min_exchanges_attack=1, early_exchanges=0, inherit_payment=0,
        inherit_linked=0, attack_threshold=1e-9))
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
    ap.add_argument("--attack-threshold", type=float, default=None,
                    help="fix the online attack threshold instead of fitting it (the shipped "
                         "0.6 was chosen on development seeds: the fitted one, 0.20, flagged "
                         "corporate-NAT accounts; docs/realtime.md)")
    a = ap.parse_args()
    signals = load_signals(a.signals)
    work = a.work or Path(tempfile.mkdtemp(prefix="dg-fit-stream-"))
    n_early = signals.stream.early_exchanges
    n_min = signals.stream.min_exchanges_attack
    tops, peaks, n_benign = [], [], 0
    for scenario, scale, seed in CALIBRATION:
        sim = work / f"{scenario}-{seed}"
        if not (sim / "truth.csv").exists():
            simulate(scenario, scale=scale, seed=seed, out=sim)
        rows = early_rows(sim, a.chunk_size, signals).join(
            read_labels(sim / "truth.csv").select("account_id", "label", "segment"),
            on="account_id")
        ben = rows.filter(pl.col("label") == "benign")
        n_benign += ben["account_id"].n_unique()
        uncapped = ben.filter(pl.col("verdict") == "attack")   # not capped as solo
        early = uncapped.filter(pl.col("exchanges_seen").is_between(n_min, n_early - 1))
        tops.append(early.group_by("account_id", "segment").agg(
            pl.col("score").max(), pl.col("exchanges_seen").min()).with_columns(
            seed=pl.lit(seed)))
        # as the batch thresholds: among the accounts the threshold can act on (not capped)
        peaks.append(uncapped.filter(pl.col("exchanges_seen") >= n_early).group_by(
            "account_id").agg(pl.col("score").max())["score"].to_numpy())
        print(f"{scenario} seed {seed}: {ben['account_id'].n_unique():,} benign accounts, "
              f"{tops[-1].height} uncapped with {n_min}-{n_early - 1} exchanges")
    top = pl.concat(tops).sort("score", descending=True)
    print(top.head(10))
    att = _upper_quantile(np.sort(np.concatenate(peaks)), 0.001)
    att = float(np.ceil(att * 1e6) / 1e6)
    if a.attack_threshold is not None:
        print(f"fitted attack_threshold {att:.6f}; using --attack-threshold {a.attack_threshold}")
        att = a.attack_threshold
    thr = float(np.nextafter(top["score"].max(), 1.0)) if top.height else 0.0
    thr = max(float(np.ceil(thr * 1e6) / 1e6), att)
    print(f"attack_threshold {att:.6f}, early_attack_threshold {thr:.6f} ({n_min}-{n_early - 1} "
          f"exchanges; {n_benign:,} benign calibration accounts)")
    if a.dry_run:
        return
    text = a.signals.read_text()
    for key, val in (("early_attack_threshold", thr), ("attack_threshold", att)):
        text, k = re.subn(rf"(?m)^(\s*{key}:\s*)[0-9.eE+-]+", rf"\g<1>{val:.6f}", text)
        if k != 1:
            raise SystemExit(f"{a.signals}: no single '{key}:' line to update")
    a.signals.write_text(text)
    print(f"wrote {a.signals}")


if __name__ == "__main__":
    main()
