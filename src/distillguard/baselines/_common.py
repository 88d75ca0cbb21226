"""Shared helpers of the baselines: the account universe, per-account aggregates, output."""

from __future__ import annotations

import numpy as np
import polars as pl

from ..schema import ACCOUNT_SCHEMA, ACCOUNTS_OUT_COLUMNS, EVENT_SCHEMA, conform


def as_lazy(events: pl.LazyFrame | pl.DataFrame) -> pl.LazyFrame:
    return events.lazy() if isinstance(events, pl.DataFrame) else events


def account_frame(accounts: pl.DataFrame | None) -> pl.DataFrame:
    """The accounts table conformed to ``ACCOUNT_SCHEMA`` (empty when ``None``)."""
    if accounts is None:
        return pl.DataFrame(schema=ACCOUNT_SCHEMA)
    return conform(accounts, ACCOUNT_SCHEMA).unique("account_id", keep="first",
                                                     maintain_order=True)


def universe(events: pl.LazyFrame, accounts: pl.DataFrame | None) -> pl.DataFrame:
    """Sorted ``account_id`` of every account in the events or the accounts table."""
    ev = events.select(pl.col("account_id").cast(pl.String)).unique().collect()
    acc = account_frame(accounts).select("account_id")
    return pl.concat([ev, acc]).drop_nulls().unique().sort("account_id")


def day_counts(events: pl.LazyFrame) -> pl.LazyFrame:
    """Exchanges per account and UTC day: ``account_id, day, n``."""
    return (events.group_by("account_id", pl.col("ts").dt.date().alias("day"))
            .agg(pl.len().alias("n")))


def account_features(events: pl.LazyFrame, accounts: pl.DataFrame | None) -> pl.DataFrame:
    """Per-account traffic aggregates (one row per account of :func:`universe`, no nulls).

    Counts are raw; callers transform them. Accounts without events get zeros.
    """
    ev = events.select([c for c in EVENT_SCHEMA if c in events.collect_schema().names()])
    main = ev.group_by("account_id").agg(
        n_exchanges=pl.len(),
        mean_in=pl.col("input_tokens").mean(),
        std_in=pl.col("input_tokens").std(),
        mean_out=pl.col("output_tokens").mean(),
        std_out=pl.col("output_tokens").std(),
        n_ips=pl.col("ip").n_unique(),
        n_prefixes=pl.col("ip_prefix").n_unique(),
        n_keys=pl.col("api_key_id").n_unique(),
        n_models=pl.col("model").n_unique(),
        n_agents=pl.col("user_agent").n_unique(),
        n_systems=pl.col("system_hash").n_unique(),
        single_turn=(pl.col("n_user_turns").fill_null(1) <= 1).mean(),
        at_cap=((pl.col("output_tokens") >= pl.col("max_tokens"))
                & pl.col("max_tokens").is_not_null()).mean(),
        thinking=(pl.col("thinking").fill_null(0) > 0).mean(),
        logprobs=(pl.col("logprobs").fill_null(0) > 0).mean(),
        tools=pl.col("tools_hash").is_not_null().mean(),
        tool_results=pl.col("has_tool_results").fill_null(False).mean(),
        first_ts=pl.col("ts").min(),
    )
    days = day_counts(ev).group_by("account_id").agg(
        active_days=pl.len(), max_daily=pl.col("n").max())
    hours = (ev.group_by("account_id", pl.col("ts").dt.hour().alias("h")).agg(pl.len().alias("n"))
             .with_columns(p=pl.col("n") / pl.col("n").sum().over("account_id"))
             .group_by("account_id").agg(hour_entropy=-(pl.col("p") * pl.col("p").log(2)).sum()))
    feats = pl.collect_all([main, days, hours])
    acc = account_frame(accounts)
    df = (universe(ev, accounts)
          .join(feats[0], on="account_id", how="left")
          .join(feats[1], on="account_id", how="left")
          .join(feats[2], on="account_id", how="left")
          .join(acc.select("account_id", "created_at", "verified"), on="account_id", how="left"))
    age = (pl.col("first_ts") - pl.col("created_at")).dt.total_seconds() / 86400.0
    df = df.with_columns(
        per_day=pl.col("n_exchanges") / pl.col("active_days"),
        account_age_days=age.clip(lower_bound=0),
        unverified=(~pl.col("verified").fill_null(True)).cast(pl.Float64),
    ).drop("first_ts", "created_at", "verified")
    return df.with_columns(pl.exclude("account_id").cast(pl.Float64).fill_nan(0).fill_null(0))


def output(ids: pl.Series, score: np.ndarray, verdict: np.ndarray,
           cluster_id: pl.Series | None = None, reasons: pl.Series | None = None
           ) -> pl.DataFrame:
    """Assemble an ``accounts.csv``-shaped frame."""
    n = len(ids)
    return pl.DataFrame({
        "account_id": ids.cast(pl.String),
        "score": np.clip(np.asarray(score, dtype=float), 0.0, 1.0),
        "verdict": pl.Series(np.asarray(verdict, dtype=object), dtype=pl.String),
        "cluster_id": cluster_id if cluster_id is not None else pl.Series([None] * n,
                                                                          dtype=pl.String),
        "reasons": reasons if reasons is not None else pl.Series([""] * n, dtype=pl.String),
    }).select(ACCOUNTS_OUT_COLUMNS)
