"""Volume baseline: the per-account rate limit of today's LLM gateways.

An account is flagged when its peak daily exchange count exceeds the ``quantile`` of all
accounts' peak daily counts (default p99), or a fixed requests-per-day limit of its tier
when ``rpd_limits`` is given. Score = the account's percentile of peak daily volume.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from ._common import account_frame, as_lazy, day_counts, output, universe


def run_volume(events: pl.LazyFrame | pl.DataFrame, accounts: pl.DataFrame | None = None, *,
               quantile: float = 0.99, suspicious_quantile: float = 0.95,
               rpd_limits: dict[str, int] | None = None) -> pl.DataFrame:
    """Flag accounts whose peak daily volume is above the ``quantile`` of all accounts.

    ``rpd_limits`` (tier → exchanges per day) replaces the percentile rule for accounts whose
    tier is listed. Deterministic; cluster_id is always empty.
    """
    if not 0 < suspicious_quantile <= quantile < 1:
        raise ValueError("need 0 < suspicious_quantile <= quantile < 1")
    events = as_lazy(events)
    peak = day_counts(events).group_by("account_id").agg(pl.col("n").max().alias("peak"))
    df = (universe(events, accounts).join(peak.collect(), on="account_id", how="left")
          .join(account_frame(accounts).select("account_id", "tier"), on="account_id",
                how="left")
          .with_columns(pl.col("peak").fill_null(0)))
    v = df["peak"].to_numpy().astype(float)
    n = max(len(v), 1)
    score = df["peak"].rank("average").to_numpy() / n if len(v) else v
    hi = np.quantile(v, quantile) if len(v) else 0.0
    mid = np.quantile(v, suspicious_quantile) if len(v) else 0.0
    attack = v > hi
    suspicious = v > mid
    if rpd_limits:
        limit = df["tier"].replace_strict(rpd_limits, default=None,
                                         return_dtype=pl.Float64).to_numpy()
        has = ~np.isnan(limit)
        attack = np.where(has, v > limit, attack)
        suspicious = np.where(has, v > 0.8 * limit, suspicious)
    verdict = np.where(attack, "attack", np.where(suspicious, "suspicious", "benign"))
    reasons = pl.Series(np.where(suspicious, "daily_volume", ""), dtype=pl.String)
    return output(df["account_id"], score, verdict, reasons=reasons)
