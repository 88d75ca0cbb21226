"""Stage 4 — cluster: communities of the account graph, and features of each community.

Leiden (igraph's ``community_leiden``, CPM or modularity objective, weighted) over the edges of
:mod:`distillguard.link`. Communities smaller than ``min_size`` are not clusters; clusters
drawing on the same pool of rare proxies / payment instruments are then joined
(:func:`merge_clusters`), since CPM fragments large campaigns. Cluster ids
are deterministic: ``C0001`` is the largest community (ties broken by smallest member id).

:func:`cluster_features` aggregates member features into one row per cluster (size, volume,
coordination kinds, template and capability concentration, synchrony, payment and sign-up
sharing, infrastructure spread); :func:`attach_cluster_features` copies them back to members
with a ``c_`` prefix so the scorer sees an account together with its group.
"""

from __future__ import annotations

import functools
import math

import igraph as ig
import numpy as np
import polars as pl

from .link import rare_values, shared_rare
from .schema import TASKS

MEMBERSHIP_SCHEMA = {"account_id": pl.String, "cluster_id": pl.String}


def leiden_clusters(edges: pl.DataFrame, *, min_size: int = 3, resolution: float = 1.0,
                    objective: str = "modularity", seed: int = 0,
                    n_iterations: int = -1) -> pl.DataFrame:
    """Account → cluster_id for accounts in communities of at least ``min_size``.

    ``n_iterations``: Leiden passes (igraph); negative: until no node moves."""
    if edges.is_empty():
        return pl.DataFrame(schema=MEMBERSHIP_SCHEMA)
    nodes = pl.concat([edges["src"], edges["dst"]]).unique().sort()
    index = pl.DataFrame({"id": nodes, "i": np.arange(len(nodes), dtype=np.int64)})
    e = (edges.select("src", "dst", "weight")
         .join(index.rename({"id": "src", "i": "a"}), on="src")
         .join(index.rename({"id": "dst", "i": "b"}), on="dst"))
    g = ig.Graph(n=len(nodes), edges=np.column_stack([e["a"].to_numpy(), e["b"].to_numpy()]),
                 directed=False)
    import random
    state = random.getstate()
    random.seed(seed)
    ig.set_random_number_generator(random)
    try:
        part = g.community_leiden(objective_function=objective, weights=e["weight"].to_list(),
                                  resolution=resolution, n_iterations=n_iterations)
    finally:
        random.setstate(state)
    return _numbered(pl.DataFrame({"account_id": nodes,
                                   "community": np.asarray(part.membership)}), min_size)


def _numbered(df: pl.DataFrame, min_size: int) -> pl.DataFrame:
    """``account_id, community`` → membership with ids ``C0001`` (largest first; ties by
    smallest member id), communities smaller than ``min_size`` dropped."""
    sizes = (df.group_by("community").agg(size=pl.len(), first=pl.col("account_id").min())
             .filter(pl.col("size") >= min_size)
             .sort(["size", "first"], descending=[True, False])
             .with_row_index("rank", offset=1)
             .with_columns(cluster_id=pl.format("C{}", pl.col("rank").cast(pl.String)
                                                .str.zfill(4))))
    return (df.join(sizes.select("community", "cluster_id"), on="community")
            .select("account_id", "cluster_id").sort("account_id"))


def merge_clusters(membership: pl.DataFrame, inc: pl.DataFrame, *, kinds: list[str],
                   min_jaccard: float, min_size: int = 10,
                   max_share: float = 0.05) -> pl.DataFrame:
    """Join clusters whose members draw on the same pool of rare values.

    CPM keeps communities denser than its resolution, so a campaign of thousands of accounts,
    linked as ring lattices (``link.edges_from_incidences``), comes out as many fragments:
    the density of any community falls as the campaign grows. Its fragments still use one
    pool of proxies and payment instruments, so two clusters whose sets of rare ``kinds``
    values (held by ≥ 2 and ≤ ``max_share`` of the accounts) have Jaccard similarity of at
    least ``min_jaccard`` are the same group (transitively). Only clusters of at least
    ``min_size`` accounts take part: CPM fragments only big groups, while small groups that
    happen to share a residential address must stay apart. Linear in the incidences of
    clustered accounts plus the value–cluster pairs. Cluster ids are renumbered by size as
    in :func:`leiden_clusters`.
    """
    if membership.is_empty() or inc.is_empty() or not kinds:
        return membership
    n_acc = max(inc["account_id"].n_unique(), 3)
    big = membership.filter(pl.len().over("cluster_id") >= min_size)
    cv = (rare_values(inc, kinds, max(2, int(max_share * n_acc)))
          .join(big, on="account_id")
          .select("cluster_id", "kind", "value").unique())
    if cv.is_empty():
        return membership
    # integer codes: clusters in sorted-id order, values by dense rank; cluster pairs per
    # shared value by index arithmetic, counted on one integer key (a string self-join and
    # group_by of the ~16M (value, cluster, cluster) rows took ~10 s at 16M exchanges)
    ids = membership["cluster_id"].unique().sort()
    n_c = len(ids)
    cv = (cv.join(pl.DataFrame({"cluster_id": ids}).with_row_index("c"), on="cluster_id")
          .select(pl.col("c").cast(pl.Int64),
                  v=pl.struct("kind", "value").rank("dense").cast(pl.Int64))
          .sort("v", "c"))
    c, v = cv["c"].to_numpy(), cv["v"].to_numpy()
    nv = np.bincount(c, minlength=n_c)
    first = np.flatnonzero(np.r_[True, v[1:] != v[:-1]])
    size = np.diff(np.r_[first, len(v)])
    rank = np.arange(len(v)) - np.repeat(first, size)
    span = np.repeat(size, size) - 1 - rank  # the members after each one (c sorted)
    i = np.repeat(np.arange(len(v)), span)
    j = i + np.arange(len(i)) - np.repeat(np.cumsum(span) - span, span) + 1
    key, inter = np.unique(c[i] * n_c + c[j], return_counts=True)
    ca, cb = key // n_c, key % n_c
    ok = inter >= min_jaccard * (nv[ca] + nv[cb] - inter)
    if not ok.any():
        return membership
    g = ig.Graph(n=n_c, edges=np.column_stack([ca[ok], cb[ok]]))
    group = np.asarray(g.connected_components().membership)
    code = {x: k for k, x in enumerate(ids.to_list())}
    first = membership["cluster_id"].replace_strict(code, return_dtype=pl.Int64).to_numpy()
    return _numbered(pl.DataFrame({"account_id": membership["account_id"],
                                   "community": group[first]}), 1)


NEIGHBOUR_FEATURES = ("valuable_share", "cot_share", "single_turn_share",
                      "max_tokens_cap_share", "shared_template_share")


def neighbour_features(features: pl.DataFrame, edges: pl.DataFrame) -> pl.DataFrame:
    """What an account is linked to, whether or not Leiden put it in a cluster.

    Per account: ``link_degree`` (sum of its edge weights), ``n_links`` and, for a few
    features, the edge-weighted mean over its neighbours (``nbr_<feature>``). A quiet account
    that shares rare infrastructure and templates with harvesting accounts inherits their
    profile here even when it is too loosely tied to join their community.
    """
    cols = [c for c in NEIGHBOUR_FEATURES if c in features.columns]
    schema = {"account_id": pl.String, "link_degree": pl.Float64, "n_links": pl.UInt32,
              **{f"nbr_{c}": pl.Float64 for c in cols}}
    if edges.is_empty():
        return pl.DataFrame(schema=schema)
    both = pl.concat([edges.select(a="src", b="dst", w="weight"),
                      edges.select(a="dst", b="src", w="weight")])
    nb = both.join(features.select(pl.col("account_id").alias("b"), *cols), on="b", how="left")
    return nb.group_by("a").agg(
        link_degree=pl.col("w").sum(), n_links=pl.len(),
        **{f"nbr_{c}": (pl.col(c).fill_null(0.0) * pl.col("w")).sum() / pl.col("w").sum()
           for c in cols},
    ).rename({"a": "account_id"}).cast(schema)


def _entropy_norm(shares: np.ndarray, k: int = len(TASKS)) -> float:
    s = shares[shares > 0]
    if len(s) <= 1:
        return 0.0
    return float(-(s * np.log(s)).sum() / math.log(k))


@functools.cache
def _member_aggs() -> dict[str, pl.Expr]:
    """Aggregates of a cluster's member features, by output column (built once; read
    only)."""
    return {
        "size": pl.len(),
        "exchanges": pl.col("n_exchanges").sum(),
        "med_per_day": pl.col("per_day").median(),
        "max_per_day_pct": pl.col("per_day_tier_pct").max(),
        "payment_shared_share": (pl.col("payment_fingerprint").is_not_null()
                                 & (pl.len().over("cluster_id", "payment_fingerprint") > 1))
        .mean(),
        "distinct_payments": pl.col("payment_fingerprint").n_unique(),
        "email_top_share": (pl.col("email_domain").drop_nulls().unique_counts().max()
                            / pl.len()).fill_null(0.0),
        "verified_share": pl.col("verified").cast(pl.Float64).mean(),
        "edu_startup_share": pl.col("tier").is_in(["education", "startup", "research"]).mean(),
        "med_age_days": pl.col("age_days_at_first_use").median(),
        "med_span_days": pl.col("span_days").median(),
        "pivot_share": (pl.col("pivot_share") * pl.col("pivot_window_n").fill_null(0)).sum()
        / pl.col("pivot_window_n").fill_null(0).sum().clip(lower_bound=1),
        "med_single_turn": pl.col("single_turn_share").median(),
        "med_hour_entropy": pl.col("hour_entropy").median(),
        "med_thinking": pl.col("thinking_share").median(),
        "med_cap": pl.col("max_tokens_cap_share").median(),
        "med_keys_per_100": pl.col("keys_per_100").median(),
        "med_valuable_share": pl.col("valuable_share").median(),
        "med_cot_share": pl.col("cot_share").median(),
        "med_template_reuse": pl.col("template_reuse_share").median(),
        "med_shared_template": pl.col("shared_template_share").median(),
        "ips_per_account": pl.col("n_ips").sum() / pl.len(),
    }


def member_columns_read(columns: set[str]) -> set[str]:
    """Member feature columns that the cluster aggregates ``columns`` read."""
    return {c for k, e in _member_aggs().items() if k in columns
            for c in e.meta.root_names()}


def member_aggregates(m: pl.DataFrame, columns: set[str] | None = None) -> pl.DataFrame:
    """The member aggregates of :func:`cluster_features` (only ``columns`` and ``size``
    when given) of ``m``: a ``cluster_id`` column and the member features, a row per member.
    One row per cluster, in no particular order."""
    aggs = _member_aggs()
    if columns is not None:
        aggs = {k: e for k, e in aggs.items() if k in columns or k == "size"}
    return m.group_by("cluster_id").agg(**aggs)


def cluster_features(features: pl.DataFrame, membership: pl.DataFrame, edges: pl.DataFrame,
                     sample: pl.DataFrame | None, *,
                     columns: set[str] | None = None) -> pl.DataFrame:
    """One row per cluster: coordination and concentration of the group as a whole.

    ``features``: per-account features (fingerprint + content); with ``columns``, only the
    member aggregates of those names are computed (``size`` always), and ``features`` needs
    only the columns they read (:func:`member_columns_read`). ``sample``: sampled events
    with ``account_id, ts, template_id, task`` (or None).
    """
    if membership.is_empty():
        return pl.DataFrame(schema={"cluster_id": pl.String, "size": pl.UInt32})
    agg = member_aggregates(membership.join(features, on="account_id", how="left"), columns)
    # edges inside clusters: how many kinds of coordination tie the members
    if not edges.is_empty():
        inner = (edges.join(membership.rename({"account_id": "src", "cluster_id": "c1"}),
                            on="src")
                 .join(membership.rename({"account_id": "dst", "cluster_id": "c2"}), on="dst")
                 .filter(pl.col("c1") == pl.col("c2")))
        ek = (inner.group_by("c1").agg(
            inner_edges=pl.len(), mean_edge_weight=pl.col("weight").mean(),
            mean_edge_kinds=pl.col("n_kinds").mean(),
            kinds=pl.col("kinds").list.explode(keep_nulls=False, empty_as_null=False).unique().sort())
            .rename({"c1": "cluster_id"}))
        agg = agg.join(ek, on="cluster_id", how="left").with_columns(
            density=pl.col("inner_edges") / (pl.col("size") * (pl.col("size") - 1) / 2))
    if sample is not None and not sample.is_empty():
        # only the columns used (the sample also carries prompt, system and tool lists)
        s = (sample.select("account_id", "ts", "template_id", "task")
             .join(membership, on="account_id", how="inner"))
        agg = agg.join(_sample_cluster_stats(s), on="cluster_id", how="left")
    return agg.sort("cluster_id")


def _sample_cluster_stats(s: pl.DataFrame) -> pl.DataFrame:
    """Template sharing, capability concentration and synchrony from sampled events."""
    t = s.drop_nulls("template_id")
    tmpl_accounts = t.group_by("cluster_id", "template_id").agg(
        n_acc=pl.col("account_id").n_unique(), n=pl.len())
    tstats = tmpl_accounts.group_by("cluster_id").agg(
        shared_template_share=(pl.col("n").filter(pl.col("n_acc") >= 2).sum()
                               / pl.col("n").sum()),
        top_templates_share=pl.col("n").top_k(5).sum() / pl.col("n").sum(),
    )
    # synchrony: share of sampled events whose template was used by another member within
    # the same 10-minute bucket
    b = t.with_columns(bucket=pl.col("ts").dt.truncate("10m"))
    sync = (b.with_columns(n_acc_b=pl.col("account_id").n_unique()
                           .over("cluster_id", "template_id", "bucket"))
            .group_by("cluster_id").agg(sync_share=(pl.col("n_acc_b") >= 2).mean()))
    task = (s.group_by("cluster_id", "task").len()
            .with_columns(share=pl.col("len") / pl.col("len").sum().over("cluster_id")))
    conc = task.group_by("cluster_id").agg(
        top_task_share=pl.col("share").max(),
        task_entropy=pl.col("share").map_batches(
            lambda x: pl.Series([_entropy_norm(x.to_numpy())]), returns_scalar=True,
            return_dtype=pl.Float64),
    )
    return tstats.join(sync, on="cluster_id", how="full", coalesce=True).join(
        conc, on="cluster_id", how="full", coalesce=True)


def campaign_clusters(membership: pl.DataFrame, verdict: pl.DataFrame, *,
                      min_attack_share: float = 0.5, min_size: int = 1) -> pl.DataFrame:
    """Members (``account_id, cluster_id``) of the *campaign clusters*: at least ``min_size``
    members, at least ``min_attack_share`` of them ``attack`` in ``verdict``
    (``account_id, verdict``)."""
    share = (membership.join(verdict.select("account_id", "verdict"), on="account_id",
                             how="left")
             .group_by("cluster_id").agg(att=(pl.col("verdict") == "attack").mean(),
                                         n=pl.len()))
    keep = share.filter((pl.col("att") >= min_attack_share) & (pl.col("n") >= min_size))
    return membership.join(keep.select("cluster_id"), on="cluster_id", how="semi")


def _loose_attack(membership: pl.DataFrame, verdict: pl.DataFrame,
                  camp: pl.DataFrame) -> pl.DataFrame:
    """``attack`` accounts outside every campaign cluster (in no cluster, or in a cluster
    whose members are mostly not ``attack``)."""
    return (verdict.filter(pl.col("verdict") == "attack").select("account_id")
            .join(camp, on="account_id", how="anti"))


def attach_flagged(membership: pl.DataFrame, verdict: pl.DataFrame, edges: pl.DataFrame, *,
                   min_weight: float, min_attack_share: float = 0.5,
                   min_size: int = 1) -> pl.DataFrame:
    """Move ``attack`` accounts that Leiden left outside every campaign cluster into the
    campaign cluster they are strongly tied to.

    CPM's density bar leaves out members of a big campaign whose ties are real but spread
    over a few hundred accounts: some end in no cluster, some in a small cluster of
    residential neighbours. ``verdict``: ``account_id, verdict`` after scoring. A *campaign
    cluster* has at least ``min_size`` members, at least ``min_attack_share`` of them
    ``attack`` (:func:`campaign_clusters`). Each attack account outside the campaign clusters
    joins the one with the largest total edge weight to it, if that weight is at least
    ``min_weight`` (ties: lower cluster id), leaving its small cluster; weaker ties are left
    alone, because campaigns that buy from the same proxy providers share some
    infrastructure with each other. Returns the new membership.
    """
    if membership.is_empty() or edges.is_empty():
        return membership
    camp = campaign_clusters(membership, verdict, min_attack_share=min_attack_share,
                             min_size=min_size)
    loose = _loose_attack(membership, verdict, camp)
    if camp.is_empty() or loose.is_empty():
        return membership
    both = pl.concat([edges.select(a="src", b="dst", w="weight"),
                      edges.select(a="dst", b="src", w="weight")])
    best = (both.join(loose, left_on="a", right_on="account_id", how="semi")
            .join(camp, left_on="b", right_on="account_id")
            .group_by("a", "cluster_id").agg(w=pl.col("w").sum())
            .filter(pl.col("w") >= min_weight)
            .sort(["a", "w", "cluster_id"], descending=[False, True, False])
            .group_by("a", maintain_order=True).first()
            .select(account_id="a", cluster_id="cluster_id"))
    if best.is_empty():
        return membership
    return (pl.concat([membership.join(best, on="account_id", how="anti"),
                       best.cast(membership.schema)]).sort("account_id"))


def assemble_flagged(membership: pl.DataFrame, verdict: pl.DataFrame, rare: pl.DataFrame, *,
                     min_attack_share: float = 0.5, campaign_min_size: int = 1,
                     min_size: int = 3, objective: str = "modularity", resolution: float = 0.5,
                     merge_kinds: list[str] | tuple[str, ...] = (),
                     merge_min_jaccard: float = 0.15, seed: int = 0) -> pl.DataFrame:
    """Group the ``attack`` accounts that no campaign cluster holds by the rare values they
    share with each other, then join campaign groups that draw on one pool.

    Low-and-slow campaigns leave too little shared per pair for the account graph: their
    members are flagged one by one (own score, lifts) and end up alone or scattered over
    small clusters of benign neighbours. What they do share — rare proxy exits, client
    stacks, templates, cards — ties them to one another. The attack accounts outside the
    campaign clusters (:func:`campaign_clusters` with ``min_attack_share`` and
    ``campaign_min_size``) are linked by the number of values of ``rare`` (``account_id,
    kind, value``, values held by few accounts: ``link.rare_values``) they share, and
    Leiden (``objective``, ``resolution``) groups them; groups of at least ``min_size``
    become clusters and their members leave their old clusters. Then clusters that are
    mostly ``attack`` are joined when their rare ``merge_kinds`` values overlap
    (:func:`merge_clusters` with ``merge_min_jaccard``): at scale a campaign comes out of
    the graph in many fragments. Finally every cluster is renumbered by size (``C0001``
    largest) and clusters of fewer than ``min_size`` accounts are dropped. Linear in the
    rare values of the accounts involved (each value has few holders).
    """
    if rare is None or rare.is_empty():
        return membership
    v = verdict.select("account_id", "verdict")
    camp = campaign_clusters(membership, v, min_attack_share=min_attack_share,
                             min_size=campaign_min_size)
    loose = _loose_attack(membership, v, camp)["account_id"]
    pairs = (shared_rare(rare.select("account_id", "kind", "value"), loose, loose)
             .filter(pl.col("account_id") < pl.col("peer"))
             .group_by("account_id", "peer").agg(weight=pl.len().cast(pl.Float64))
             .select(src="account_id", dst="peer", weight="weight"))
    new = leiden_clusters(pairs, min_size=min_size, resolution=resolution, objective=objective,
                          seed=seed).with_columns(cluster_id=pl.lit("A") + pl.col("cluster_id"))
    out = pl.concat([membership.join(new, on="account_id", how="anti"),
                     new.cast(membership.schema)])
    if merge_kinds and not out.is_empty():
        mostly = campaign_clusters(out, v, min_attack_share=min_attack_share, min_size=min_size)
        joined = merge_clusters(mostly, rare.filter(pl.col("kind").is_in(list(merge_kinds))),
                                kinds=list(merge_kinds), min_jaccard=merge_min_jaccard,
                                min_size=min_size, max_share=1.0)
        out = pl.concat([out.join(mostly, on="account_id", how="anti"),
                         joined.with_columns(cluster_id=pl.lit("M") + pl.col("cluster_id"))])
    if out.is_empty():
        return membership
    return _numbered(out.rename({"cluster_id": "community"}), min_size)
