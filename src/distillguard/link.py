"""Stage 3 — link: a weighted graph of accounts that share rare attributes.

Each *kind* of attribute (IP, /24 prefix, ASN + user agent + TLS client, payment fingerprint,
e-mail domain, sign-up burst, system-prompt hash, tool-schema set, prompt template, template
used in the same time bucket) gives account–value incidences. A value shared by ``k``
accounts links them with weight ``kind_weight * idf`` where ``idf = log(N / k) / log(N)``,
so a big cloud ASN, the default SDK client or a mobile CGNAT address counts little.

Work stays linear: a value shared by at most ``full_pairs_max`` accounts links all their pairs;
a larger group is linked as a ring lattice (each account to its ``ring_degree`` successors in
one seeded hash order of accounts shared by all values), which keeps a dense group connected without all pairs. Values shared by
more than ``max_share`` of all accounts carry no information and are dropped.

The result is an edge list ``src, dst, weight, n_kinds, kinds`` (``src < dst``) over account
ids. Kind weights and the linking parameters are data (``signals.yaml``), not literals here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import polars as pl

INCIDENCE_SCHEMA = {"account_id": pl.String, "kind": pl.String, "value": pl.String}


@dataclass(frozen=True)
class LinkConfig:
    kind_weights: dict[str, float] = field(default_factory=dict)
    #: kinds that say the same thing (a shared IP implies a shared prefix) form a family; an
    #: edge needs evidence from ``min_families`` different families
    families: dict[str, list[str]] = field(default_factory=dict)
    min_families: int = 2
    kind_cap: float = 3.0
    family_cap: float = 3.0
    full_pairs_max: int = 30
    ring_degree: int = 8
    max_share: float = 0.05
    min_weight: float = 0.5
    signup_bucket_minutes: int = 60
    sync_bucket_minutes: int = 10
    seed: int = 0


def incidences(events: pl.LazyFrame, accounts: pl.DataFrame,
               templates: pl.DataFrame | None, cfg: LinkConfig) -> pl.DataFrame:
    """Distinct (account_id, kind, value) rows for every linking kind.

    ``templates``: sampled events with ``account_id, ts, template_id`` (or None).
    """
    ev = events
    parts: list[pl.LazyFrame] = []

    def _ev(kind: str, expr: pl.Expr) -> None:
        if cfg.kind_weights.get(kind, 0) > 0:
            parts.append(ev.select(pl.col("account_id"), pl.lit(kind).alias("kind"),
                                   expr.cast(pl.String).alias("value"))
                         .drop_nulls("value").unique())

    _ev("ip", pl.col("ip"))
    _ev("ip_prefix", pl.col("ip_prefix"))
    _ev("client", pl.concat_str([pl.col("asn").cast(pl.String), pl.col("user_agent"),
                                 pl.col("tls_fingerprint")], separator="|"))
    _ev("system_prompt", pl.col("system_hash"))
    _ev("tool_schema", pl.col("tools_hash"))

    acc = accounts.lazy()

    def _acc(kind: str, expr: pl.Expr) -> None:
        if cfg.kind_weights.get(kind, 0) > 0:
            parts.append(acc.select(pl.col("account_id"), pl.lit(kind).alias("kind"),
                                    expr.cast(pl.String).alias("value"))
                         .drop_nulls("value"))

    _acc("payment", pl.col("payment_fingerprint"))
    _acc("email_domain", pl.col("email_domain"))
    _acc("signup_burst", pl.concat_str([
        pl.col("tier"),
        pl.col("created_at").dt.truncate(f"{cfg.signup_bucket_minutes}m").cast(pl.String)],
        separator="@"))

    if templates is not None and not templates.is_empty():
        t = templates.lazy().drop_nulls("template_id")
        if cfg.kind_weights.get("template", 0) > 0:
            parts.append(t.select(pl.col("account_id"), pl.lit("template").alias("kind"),
                                  pl.col("template_id").cast(pl.String).alias("value")).unique())
        if cfg.kind_weights.get("sync", 0) > 0:
            parts.append(t.select(
                pl.col("account_id"), pl.lit("sync").alias("kind"),
                pl.concat_str([pl.col("template_id").cast(pl.String),
                               pl.col("ts").dt.truncate(f"{cfg.sync_bucket_minutes}m")
                               .cast(pl.String)], separator="@").alias("value")).unique())
    if not parts:
        return pl.DataFrame(schema=INCIDENCE_SCHEMA)
    return pl.concat([p.select(list(INCIDENCE_SCHEMA)) for p in parts]).collect(
        engine="streaming")


def edges_from_incidences(inc: pl.DataFrame, n_accounts: int, cfg: LinkConfig) -> pl.DataFrame:
    """Account–account edges from shared values, linear in the number of incidences."""
    schema = {"src": pl.String, "dst": pl.String, "weight": pl.Float64,
              "n_kinds": pl.UInt32, "kinds": pl.List(pl.String)}
    if inc.is_empty() or n_accounts < 2:
        return pl.DataFrame(schema=schema)
    max_k = max(2, int(cfg.max_share * n_accounts))
    log_n = math.log(max(n_accounts, 3))
    weights = pl.DataFrame({"kind": list(cfg.kind_weights),
                            "kind_weight": [float(v) for v in cfg.kind_weights.values()]})
    g = (inc.with_columns(k=pl.len().over("kind", "value"))
         .filter((pl.col("k") >= 2) & (pl.col("k") <= max_k))
         .with_columns(
             # one global order of accounts (not per value), so that the rings of two values
             # with the same members coincide and their pairs keep both kinds
             order=pl.col("account_id").hash(seed=cfg.seed))
         .with_columns(r=pl.col("order").rank("ordinal").over("kind", "value").cast(pl.Int64) - 1)
         .join(weights, on="kind", how="inner")
         .with_columns(w=pl.col("kind_weight") * (math.log(n_accounts) - pl.col("k").log())
                       / log_n)
         .drop("order"))
    if g.is_empty():
        return pl.DataFrame(schema=schema)
    span = (pl.when(pl.col("k") <= cfg.full_pairs_max).then(pl.col("k") - 1)
            .otherwise(min(cfg.ring_degree, cfg.full_pairs_max)))
    src = (g.with_columns(d=pl.int_ranges(1, span + 1)).explode("d", empty_as_null=True)
           .with_columns(r2=(pl.col("r") + pl.col("d")) % pl.col("k"))
           .select("kind", "value", "account_id", "r2", "w"))
    pairs = (src.join(g.select("kind", "value", pl.col("r").alias("r2"),
                               pl.col("account_id").alias("other")),
                      on=["kind", "value", "r2"])
             .select(src=pl.min_horizontal("account_id", "other"),
                     dst=pl.max_horizontal("account_id", "other"), kind="kind", value="value",
                     w="w")
             .unique(["src", "dst", "kind", "value"]))
    # every shared rare value adds evidence, up to a cap per kind and per family, so a pair
    # sharing many proxy IPs and many templates outweighs one sharing a single address
    fam = pl.DataFrame({"kind": [k for ks in cfg.families.values() for k in ks],
                        "family": [f for f, ks in cfg.families.items() for _ in ks]},
                       schema={"kind": pl.String, "family": pl.String})
    per_kind = (pairs.group_by("src", "dst", "kind")
                .agg(w=pl.col("w").sum().clip(upper_bound=cfg.kind_cap))
                .join(fam, on="kind", how="left")
                .with_columns(pl.col("family").fill_null(pl.col("kind"))))
    per_family = per_kind.group_by("src", "dst", "family").agg(
        w=pl.col("w").sum().clip(upper_bound=cfg.family_cap), kinds=pl.col("kind"))
    edges = per_family.group_by("src", "dst").agg(
        weight=pl.col("w").sum(), n_families=pl.len(),
        kinds=pl.col("kinds").list.explode(keep_nulls=False, empty_as_null=False).sort())
    return (edges.filter((pl.col("n_families") >= cfg.min_families)
                         & (pl.col("weight") >= cfg.min_weight))
            .with_columns(n_kinds=pl.col("kinds").list.len())
            .select(list(schema)).sort("src", "dst").cast(schema))
