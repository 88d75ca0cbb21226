"""Stage 2 — fingerprint: one row of behavioural features per account.

Pure functions over the normalised frames of :mod:`distillguard.read` (``schema.EVENT_SCHEMA``,
``schema.ACCOUNT_SCHEMA``, ``schema.RELEASE_SCHEMA``). Everything here is a Polars
expression evaluated lazily, so the event frame may be larger than memory; the result has one
row per account. The streaming path computes the same features from the same expressions.

Feature families (names are the column names of the result):

- volume: ``n_exchanges``, ``active_days``, ``per_day`` (exchanges per active day),
  ``daily_max_share`` (share of active days at the account's own maximum daily count),
  ``active_day_share`` (active days / calendar days between first and last use),
  ``per_day_tier_pct`` (percentile of ``per_day`` within the account's tier)
- timing: ``hour_entropy`` / ``weekday_entropy`` (normalised 0..1), ``active_hours`` (hours of
  day with ≥ 2% of traffic), ``gap_cv`` (inter-arrival coefficient of variation),
  ``fast_gap_share`` (gaps < 2 s), ``session_gap_share`` (gaps > 30 min), ``span_days``
- conversation shape: ``single_turn_share``, ``mean_turns``, ``tool_share``,
  ``tool_result_share``
- request shape: ``max_tokens_cap_share``, ``thinking_share``, ``logprobs_share``,
  ``temperature_std``, ``out_in_ratio``, ``mean_input_tokens``, ``mean_output_tokens``
- infrastructure spread: ``n_keys``, ``n_ips``, ``n_prefixes``, ``n_asns``, ``n_countries``,
  ``n_clients`` (user agent + TLS pairs), ``keys_per_100``, ``ips_per_100``
- models: ``n_models``, ``pivot_share`` (share of the account's traffic in the 24 h after a
  model release that went to the new model), ``pivot_hours`` (hours from release to first use)
- account metadata: ``tier``, ``risky_tier`` (education / research / startup / free),
  ``verified``, ``age_days_at_first_use``, ``email_domain_accounts``
  (accounts sharing the e-mail domain), ``country_mismatch_share`` (IP country ≠ billing)
"""

from __future__ import annotations

import math

import polars as pl

#: sign-up paths the threat model names as most abused (cheap, lightly verified)
LIGHTLY_VERIFIED_TIERS = ("education", "research", "startup", "free")


#: ``daily_max_share`` needs this many active days and a daily maximum of at least this many
#: exchanges (with fewer, every day of a light user ties at its maximum of 1 or 2)
DAILY_MAX_MIN_DAYS = 4
DAILY_MAX_MIN_COUNT = 3

def _entropy(counts: pl.Expr, k: int) -> pl.Expr:
    p = counts / counts.sum()
    return (-(p * p.log()).sum() / math.log(k)).fill_nan(0.0)


def volume_timing_shape(events: pl.LazyFrame) -> pl.LazyFrame:
    """Per-account volume, conversation and request-shape aggregates (one pass)."""
    e = events
    cap = pl.col("max_tokens")
    return e.group_by("account_id").agg(
        n_exchanges=pl.len(),
        first_ts=pl.col("ts").min(),
        last_ts=pl.col("ts").max(),
        active_days=pl.col("ts").dt.date().n_unique(),
        n_keys=pl.col("api_key_id").n_unique(),
        n_ips=pl.col("ip").n_unique(),
        n_prefixes=pl.col("ip_prefix").n_unique(),
        n_asns=pl.col("asn").n_unique(),
        n_countries=pl.col("country").n_unique(),
        n_clients=pl.concat_str([pl.col("user_agent"), pl.col("tls_fingerprint")],
                                separator="|", ignore_nulls=True).n_unique(),
        n_models=pl.col("model").n_unique(),
        n_systems=pl.col("system_hash").n_unique(),
        single_turn_share=(pl.col("n_user_turns").fill_null(1) <= 1).mean(),
        mean_turns=pl.col("n_turns").cast(pl.Float64).mean(),
        tool_share=(pl.col("tool_names").list.len().fill_null(0) > 0).mean(),
        tool_result_share=pl.col("has_tool_results").fill_null(False).mean(),
        max_tokens_cap_share=((cap == cap.max()) & (cap >= 4096)).fill_null(False).mean(),
        thinking_share=(pl.col("thinking").fill_null(0) > 0).mean(),
        logprobs_share=(pl.col("logprobs").fill_null(0) > 0).mean(),
        temperature_std=pl.col("temperature").std().fill_null(0.0),
        in_tokens=pl.col("input_tokens").sum(),
        out_tokens=pl.col("output_tokens").sum(),
        mean_input_tokens=pl.col("input_tokens").mean(),
        mean_output_tokens=pl.col("output_tokens").mean(),
    ).with_columns(
        span_days=((pl.col("last_ts") - pl.col("first_ts")).dt.total_seconds() / 86400.0),
        per_day=pl.col("n_exchanges") / pl.col("active_days"),
        active_day_share=pl.col("active_days")
        / ((pl.col("last_ts").dt.date() - pl.col("first_ts").dt.date()).dt.total_days() + 1),
        out_in_ratio=(pl.col("out_tokens") / pl.col("in_tokens")).fill_nan(None).fill_null(0.0),
        keys_per_100=100.0 * pl.col("n_keys") / pl.col("n_exchanges"),
        ips_per_100=100.0 * pl.col("n_ips") / pl.col("n_exchanges"),
    ).drop("in_tokens", "out_tokens")


def rhythm(events: pl.LazyFrame) -> pl.LazyFrame:
    """Hour-of-day / weekday entropy, the number of active hours and ``daily_max_share``
    (share of active days at the account's own maximum daily count), per account."""
    by_hour = (events.group_by("account_id", pl.col("ts").dt.hour().alias("h")).len()
               .group_by("account_id").agg(
                   hour_entropy=_entropy(pl.col("len").cast(pl.Float64), 24),
                   active_hours=((pl.col("len") / pl.col("len").sum()) >= 0.02).sum()))
    by_wd = (events.group_by("account_id", pl.col("ts").dt.weekday().alias("d")).len()
             .group_by("account_id").agg(
                 weekday_entropy=_entropy(pl.col("len").cast(pl.Float64), 7)))
    # a script throttled to a per-account daily quota rides it day after day: the same
    # count, the account's own maximum, on many of its days (people vary from day to day)
    by_day = (events.group_by("account_id", pl.col("ts").dt.date().alias("d")).len()
              .group_by("account_id").agg(
                  daily_max_share=pl.when((pl.len() >= DAILY_MAX_MIN_DAYS)
                                          & (pl.col("len").max() >= DAILY_MAX_MIN_COUNT))
                  .then((pl.col("len") == pl.col("len").max()).mean()).otherwise(0.0)))
    return (by_hour.join(by_wd, on="account_id", how="left")
            .join(by_day, on="account_id", how="left"))


def gaps(events: pl.LazyFrame) -> pl.LazyFrame:
    """Inter-arrival regularity and session structure, per account."""
    g = (events.select("account_id", "ts").sort("account_id", "ts")
         .with_columns(gap=(pl.col("ts").diff().over("account_id").dt.total_microseconds()
                            / 1e6)))
    return g.group_by("account_id").agg(
        gap_cv=(pl.col("gap").std() / pl.col("gap").mean()).fill_nan(None).fill_null(0.0),
        median_gap_s=pl.col("gap").median().fill_null(0.0),
        fast_gap_share=(pl.col("gap") < 2.0).mean().fill_null(0.0),
        session_gap_share=(pl.col("gap") > 1800.0).mean().fill_null(0.0),
    )


def log_window(events: pl.LazyFrame) -> tuple:
    """(first, last) timestamp of a log (None, None when empty)."""
    b = events.select(lo=pl.col("ts").min(), hi=pl.col("ts").max()).collect()
    return b["lo"][0], b["hi"][0]


def model_pivot(events: pl.LazyFrame, releases: pl.DataFrame, window: tuple | None = None
                ) -> pl.LazyFrame:
    """How fast each account moved to a newly released model.

    For every release inside the log's window, looks at the account's exchanges in the 24 h
    after it: ``pivot_share`` = share of those on the new model (max over releases),
    ``pivot_hours`` = hours from the release to the account's first use of it (min).
    ``window``: the whole log's (first, last) timestamp when ``events`` is one partition.
    """
    empty = pl.LazyFrame(schema={"account_id": pl.String, "pivot_share": pl.Float64,
                                 "pivot_hours": pl.Float64, "pivot_window_n": pl.UInt32})
    if releases.is_empty():
        return empty
    lo, hi = window if window is not None else log_window(events)
    if lo is None:
        return empty
    rel = releases.filter((pl.col("released_at") > lo) & (pl.col("released_at") < hi))
    if rel.is_empty():
        return empty
    parts = []
    for model, released_at in rel.select("model", "released_at").iter_rows():
        win = events.filter((pl.col("ts") >= released_at)
                            & (pl.col("ts") < released_at + pl.duration(hours=24)))
        share = win.group_by("account_id").agg(
            pivot_share=(pl.col("model") == model).mean(),
            pivot_window_n=pl.len(),
        )
        first = (events.filter(pl.col("model") == model).group_by("account_id")
                 .agg(pivot_hours=((pl.col("ts").min() - released_at).dt.total_seconds()
                                   / 3600.0)))
        parts.append(share.join(first, on="account_id", how="full", coalesce=True))
    return (pl.concat(parts).group_by("account_id")
            .agg(pl.col("pivot_share").max(), pl.col("pivot_hours").min(),
                 pl.col("pivot_window_n").max()))


def account_metadata(events: pl.LazyFrame, accounts: pl.DataFrame) -> pl.LazyFrame:
    """Tier, verification, age at first use, e-mail domain popularity, country mismatch."""
    acc = accounts.lazy().with_columns(
        email_domain_accounts=pl.len().over("email_domain").cast(pl.Int64),
    )
    mism = (events.select("account_id", "country").join(
        accounts.lazy().select("account_id", "billing_country"), on="account_id", how="left")
        .group_by("account_id").agg(
            country_mismatch_share=((pl.col("country") != pl.col("billing_country"))
                                    .fill_null(False)).mean()))
    return acc.join(mism, on="account_id", how="left")


def partition_features(events: pl.LazyFrame, accounts: pl.DataFrame,
                       releases: pl.DataFrame, window: tuple | None = None) -> pl.DataFrame:
    """Behavioural features of the accounts of one account partition (or a whole log).

    A pure function of the partition's events plus the global side tables and the log's
    time ``window``; everything but ``per_day_tier_pct`` (a rank over all accounts, added by
    :func:`finish_features`). Unsorted.
    """
    base = volume_timing_shape(events)
    out = (base.join(rhythm(events), on="account_id", how="left")
           .join(gaps(events), on="account_id", how="left")
           .join(model_pivot(events, releases, window), on="account_id", how="left")
           .join(account_metadata(events, accounts), on="account_id", how="left"))
    return out.with_columns(
        age_days_at_first_use=((pl.col("first_ts") - pl.col("created_at")).dt.total_seconds()
                               / 86400.0),
        tier=pl.col("tier").fill_null("unknown"),
        risky_tier=pl.col("tier").is_in(list(LIGHTLY_VERIFIED_TIERS)).fill_null(False)
        .cast(pl.Float64),
        verified=pl.col("verified").fill_null(False),
        pivot_share=pl.col("pivot_share").fill_null(0.0),
    ).collect(engine="streaming")


def finish_features(parts: list[pl.DataFrame]) -> pl.DataFrame:
    """Concatenate per-partition features and add the cross-account ``per_day_tier_pct``."""
    out = pl.concat(parts, how="vertical") if len(parts) > 1 else parts[0]
    return out.with_columns(
        per_day_tier_pct=pl.col("per_day").rank("average").over("tier")
        / pl.len().over("tier"),
    ).sort("account_id")


def account_features(events: pl.LazyFrame | list[pl.LazyFrame], accounts: pl.DataFrame,
                     releases: pl.DataFrame) -> pl.DataFrame:
    """All behavioural features, one row per account seen in ``events``.

    ``events`` may be a list of account partitions (``Log.parts``): each is processed on its
    own (memory bounded by the largest partition) and the results are concatenated.
    """
    parts = events if isinstance(events, list) else [events]
    window = log_window(pl.concat(parts)) if len(parts) > 1 else None
    return finish_features([partition_features(p, accounts, releases, window) for p in parts])
