"""Fit the online detector's early scorer: the signals' weights for accounts seen briefly.

The shipped scorer (tools/fit_scorer.py) is fitted on whole-log features: at 3–30 exchanges an
account's features are noisy and partial, and campaign accounts score much lower than they will
later. This fits a second :class:`distillguard.score.Scorer` (same signals, other weights) on
*snapshots*: the online feature rows of every account with ``min_exchanges_attack`` to
``early_exchanges`` - 1 exchanges, taken at every chunk end of a replay of the TRAIN seeds
(demo 1–3, as the batch scorer) with the stream rules off. Each account weighs the same
whatever its number of snapshots, each simulated population the same within its label, attack
and benign halves equal. The attack threshold is then set just above the highest early score
of any benign account of the CALIBRATION seeds (demo 4–6; as ``early_attack_threshold`` in
tools/fit_stream.py), and the file is written to
``src/distillguard/data/models/early-v1.json`` (used when ``stream.early_model`` names it).
Held-out seeds and scenario variants are never used here.

    python tools/fit_early.py [--work DIR] [--out PATH] [--chunk-size 1000]
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
from pathlib import Path

import numpy as np
import polars as pl

from distillguard.read import read_labels, read_log
from distillguard.score import Scorer
from distillguard.signals import load_signals
from distillguard.simulate import simulate
from distillguard.stream.online import OnlineDetector
from distillguard.stream.replay import iter_chunks

ROOT = Path(__file__).resolve().parents[1]
TRAIN = [("demo", 1.0, s) for s in (1, 2, 3)]          # as tools/fit_scorer.py
CALIBRATION = [("demo", 1.0, s) for s in (4, 5, 6)]


class _Recorder:
    """Wraps a scorer and keeps every feature frame it is asked to score."""

    def __init__(self, inner: Scorer) -> None:
        self.inner, self.frames = inner, []

    def run(self, feats: pl.DataFrame):
        self.frames.append(feats)
        return self.inner.run(feats)

    def __getattr__(self, name):
        return getattr(self.inner, name)


def snapshots(sim: Path, chunk_size: int, signals) -> pl.DataFrame:
    """Online feature rows of every account with exchanges in a chunk and
    ``min_exchanges_attack`` <= n < ``early_exchanges``, at every chunk end; rules off."""
    cfg = signals.stream
    with read_log([sim / "events"], accounts=sim / "accounts.csv",
                  releases=sim / "releases.csv") as log, tempfile.TemporaryDirectory() as tmp:
        spool = Path(tmp) / "sorted.parquet"
        log.events.sort("ts", maintain_order=True).sink_parquet(spool)
        det = OnlineDetector(accounts=log.accounts, releases=log.releases, grace=1)
        det._init()
        det.signals_ = dataclasses.replace(signals, stream=dataclasses.replace(
            cfg, min_exchanges_attack=1, early_exchanges=0, inherit_payment=0,
            inherit_linked=0, inherit_lift=None, early_model=None, attack_threshold=1e-9))
        rec = _Recorder(det.scorer_)
        det.scorer_ = rec
        schema = pl.scan_parquet(spool).collect_schema()
        for chunk in iter_chunks(spool, chunk_size, schema=schema):
            det.learn_many(chunk)
            touched = np.unique(chunk["account_id"].replace_strict(
                det.index_, return_dtype=pl.Int64).to_numpy())
            n = det.c_["n"][touched]
            touched = touched[(n >= cfg.min_exchanges_attack) & (n < cfg.early_exchanges)]
            if len(touched):
                det.score_many(touched)
    rows = pl.concat([f.with_columns(pl.all().exclude("account_id").cast(pl.Float64,
                                                                         strict=False))
                      for f in rec.frames], how="diagonal_relaxed")
    truth = read_labels(sim / "truth.csv").select("account_id", "label", "segment")
    return rows.join(truth, on="account_id")


def account_weights(rows: pl.DataFrame) -> np.ndarray:
    """Each account the same total weight (over its snapshots), each (label, segment)
    population the same within its label, attack and benign halves equal; mean 1."""
    w = rows.select(w=1.0 / pl.len().over("log", "account_id")
                    / pl.col("account_id").n_unique().over("label", "segment")
                    / pl.col("segment").n_unique().over("label"))["w"].to_numpy()
    return w * len(w) / w.sum()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, default=None, help="simulations (kept between runs)")
    ap.add_argument("--out", type=Path, default=ROOT / "src/distillguard/data/models/early-v1.json")
    ap.add_argument("--chunk-size", type=int, default=1000)
    ap.add_argument("--C", type=float, default=1.0)
    a = ap.parse_args()
    signals = load_signals()
    work = a.work or Path(tempfile.mkdtemp(prefix="dg-fit-early-"))

    def rows_of(runs) -> pl.DataFrame:
        out = []
        for scenario, scale, seed in runs:
            sim = work / f"{scenario}-{seed}"
            if not (sim / "truth.csv").exists():
                simulate(scenario, scale=scale, seed=seed, out=sim)
            out.append(snapshots(sim, a.chunk_size, signals).with_columns(
                log=pl.lit(f"{scenario}-{seed}")))
        return pl.concat(out, how="diagonal_relaxed")

    train = rows_of(TRAIN)
    y = (train["label"] == "attack").to_numpy().astype(int)
    early = Scorer(signals=signals, C=a.C).fit(train, y, sample_weight=account_weights(train))
    cal = rows_of(CALIBRATION)
    peaks = (cal.with_columns(s=pl.Series(early.score(cal)))
             .filter(pl.col("label") == "benign").group_by("log", "account_id")
             .agg(pl.col("s").max(), pl.col("segment").first()).sort("s", descending=True))
    thr = float(np.nextafter(peaks["s"][0], 1.0))
    thr = float(np.ceil(thr * 1e6) / 1e6)
    early.threshold_attack_ = early.threshold_suspicious_ = min(thr, 1.0)
    print(f"train: {train['account_id'].n_unique():,} accounts in {train.height:,} snapshots; "
          f"calibration: {peaks.height:,} benign accounts, highest early scores:")
    print(peaks.head(5))
    print(f"early attack threshold {early.threshold_attack_:.6f}")
    for i, c in sorted(zip(signals.ids, early.coef_), key=lambda t: -abs(t[1])):
        print(f"  {i:28s} {c:+.3f}")
    early.save(a.out, trained_on={
        "snapshots": f"online features at {signals.stream.min_exchanges_attack}-"
                     f"{signals.stream.early_exchanges - 1} exchanges, chunks of {a.chunk_size}",
        "scenarios": [f"{s}:scale={x}:seed={n}" for s, x, n in TRAIN],
        "calibration": [f"{s}:scale={x}:seed={n}" for s, x, n in CALIBRATION],
        "threshold": "just above the highest benign calibration score",
        "script": "tools/fit_early.py"})
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
