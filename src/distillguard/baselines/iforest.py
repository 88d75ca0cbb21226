"""Isolation-forest baseline on per-account traffic aggregates.

Features (polars group_by): volume, active days, per-day and peak-day volume, mean/std input
and output tokens, distinct IPs, /24 prefixes, keys, models, user agents and system prompts,
hour-of-day entropy, single-turn share, share of outputs at ``max_tokens``, thinking,
log-probabilities and tool shares, account age at first use, unverified. Counts are
``log1p``-transformed. Score = the isolation-forest anomaly score ``2^(-E[h]/c(n))`` (0..1);
verdict ``attack`` at the ``contamination`` threshold.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from ._common import account_features, as_lazy, output

_LOG = ("n_exchanges", "mean_in", "std_in", "mean_out", "std_out", "n_ips", "n_prefixes",
        "n_keys", "n_models", "n_agents", "n_systems", "active_days", "max_daily", "per_day",
        "account_age_days")


def run_iforest(events: pl.LazyFrame | pl.DataFrame, accounts: pl.DataFrame | None = None, *,
                contamination: float = 0.01, suspicious_contamination: float = 0.03,
                n_estimators: int = 200, random_state: int = 0) -> pl.DataFrame:
    """Score accounts with an IsolationForest; ``reasons`` = the 3 most deviant features."""
    from sklearn.ensemble import IsolationForest

    feats = account_features(as_lazy(events), accounts)
    ids = feats["account_id"]
    names = [c for c in feats.columns if c != "account_id"]
    X = feats.select(pl.col(c).log1p() if c in _LOG else pl.col(c) for c in names).to_numpy()
    n = X.shape[0]
    if n < 2:
        return output(ids, np.zeros(n), np.full(n, "benign"))
    forest = IsolationForest(n_estimators=n_estimators, contamination=contamination,
                             random_state=random_state).fit(X)
    raw = forest.score_samples(X)          # = -(anomaly score)
    score = -raw
    attack = raw < forest.offset_
    susp_cut = np.quantile(raw, suspicious_contamination)
    suspicious = raw <= susp_cut
    verdict = np.where(attack, "attack", np.where(suspicious, "suspicious", "benign"))
    # reasons: features furthest from the median in robust units
    med = np.median(X, axis=0)
    iqr = np.subtract(*np.percentile(X, [75, 25], axis=0))
    scale = np.where(iqr > 0, iqr, np.maximum(np.abs(med), 1.0))
    z = np.abs(X - med) / scale
    top = np.argsort(-z, axis=1, kind="stable")[:, :3]
    labels = np.asarray(names, dtype=object)[top]
    joined = pl.DataFrame({f"r{k}": labels[:, k].astype(str) for k in range(top.shape[1])}
                          ).select(pl.concat_str(pl.all(), separator=";")).to_series()
    reasons = pl.Series(np.where(verdict != "benign", joined.to_numpy(), ""), dtype=pl.String)
    return output(ids, score, verdict, reasons=reasons)
