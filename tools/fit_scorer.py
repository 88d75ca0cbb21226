"""Fit the shipped scorer model from simulator data (reproducible; no pickle).

Simulates the TRAIN seeds of the training scenario, runs the same feature path as
``distillguard detect`` (detect.build_features), fits :class:`distillguard.score.Scorer`
(logistic weights over the signals of signals.yaml), then fits the verdict thresholds for
≤ 0.1 % benign FPR on the CALIBRATION seeds (fresh simulations of the same scenario that the
weights never saw: thresholds fitted on the training accounts themselves are optimistic) and
writes ``src/distillguard/data/models/scorer-v1.json``. Held-out seeds and scenario variants
(bench/quality.py) are never used here.

    python tools/fit_scorer.py [--out PATH] [--work DIR]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import polars as pl

from distillguard.detect import build_features
from distillguard.read import read_labels, read_log
from distillguard.score import Scorer
from distillguard.signals import load_signals
from distillguard.simulate import simulate

ROOT = Path(__file__).resolve().parents[1]
TRAIN = [("demo", 1.0, s) for s in (1, 2, 3)]
CALIBRATION = [("demo", 1.0, s) for s in (4, 5, 6)]


def features_for(scenario: str, scale: float, seed: int, work: Path, signals):
    d = work / f"{scenario}-{seed}"
    if not (d / "truth.csv").exists():
        simulate(scenario, scale=scale, seed=seed, out=d)
    with read_log([d / "events"], accounts=d / "accounts.csv",
                  releases=d / "releases.csv") as log:
        f = build_features(log, signals)
    truth = read_labels(d / "truth.csv")
    acc = f.accounts.join(truth.select("account_id", "label", "segment"), on="account_id",
                          how="left")
    return acc


def segment_weights(acc: pl.DataFrame) -> np.ndarray:
    """Weights giving each (label, segment) population the same total within its label, and
    attack and benign the same total overall; mean weight 1."""
    seg = acc.select(
        pl.col("label"),
        n_seg=pl.len().over("label", "segment").cast(pl.Float64),
        n_segs=pl.col("segment").n_unique().over("label").cast(pl.Float64))
    w = (1.0 / (seg["n_seg"] * seg["n_segs"])).to_numpy()
    return w * len(w) / w.sum()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=ROOT / "src/distillguard/data/models/scorer-v1.json")
    ap.add_argument("--work", type=Path, default=None)
    ap.add_argument("--C", type=float, default=1.0)
    ap.add_argument("--weighting", choices=["segment", "class"], default="segment",
                    help="segment: every simulated population (each look-alike, each campaign) "
                         "weighs the same in the fit, attack and benign halves equal; "
                         "class: attack vs benign balanced only")
    args = ap.parse_args()
    signals = load_signals()
    work = args.work or Path(tempfile.mkdtemp(prefix="dg-fit-"))
    frames = [features_for(sc, scale, seed, work, signals) for sc, scale, seed in TRAIN]
    acc = pl.concat(frames, how="diagonal_relaxed")
    y = (acc["label"] == "attack").to_numpy().astype(int)
    w = segment_weights(acc) if args.weighting == "segment" else None
    scorer = Scorer(signals=signals, C=args.C).fit(acc, y, sample_weight=w)
    cal = pl.concat([features_for(sc, scale, seed, work, signals)
                     for sc, scale, seed in CALIBRATION], how="diagonal_relaxed")
    scorer.calibrate(cal, (cal["label"] == "attack").to_numpy().astype(int))
    s = scorer.score(acc)
    v = scorer.decide(s)
    tp = int(((v == "attack") & (y == 1)).sum())
    fp = int(((v == "attack") & (y == 0)).sum())
    print(f"train: {len(y)} accounts, {y.sum()} attack; verdict=attack precision "
          f"{tp / max(tp + fp, 1):.4f} recall {tp / max(y.sum(), 1):.4f}; "
          f"thresholds attack {scorer.threshold_attack_:.4f} "
          f"suspicious {scorer.threshold_suspicious_:.4f}")
    for i, c in sorted(zip(signals.ids, scorer.coef_), key=lambda t: -abs(t[1])):
        print(f"  {i:28s} {c:+.3f}")
    scorer.save(args.out, trained_on={
        "scenarios": [f"{a}:scale={b}:seed={c}" for a, b, c in TRAIN],
        "calibration": [f"{a}:scale={b}:seed={c}" for a, b, c in CALIBRATION],
        "script": "tools/fit_scorer.py"})
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
