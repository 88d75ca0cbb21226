"""Outputs of ``detect`` per contract.md §2: ``accounts.csv`` and ``clusters.json``.

``clusters.json`` carries, per cluster, the contract keys (``cluster_id, accounts, score,
verdict, exchanges, first_seen, last_seen, capabilities, evidence``) and the evidence an
analyst needs: ``infrastructure`` (shared values and how many members share each),
``timeline`` (exchanges per hour), ``templates`` (masked examples), ``model_pivot`` and the
members' most common ``reasons``.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import polars as pl

from .content import normalize_prompts
from .schema import ACCOUNTS_OUT_COLUMNS

INFRA_KINDS = {
    "ip": pl.col("ip"),
    "ip_prefix": pl.col("ip_prefix"),
    "asn": pl.col("asn").cast(pl.String),
    "client": pl.concat_str([pl.col("user_agent"), pl.col("tls_fingerprint")], separator=" | "),
}
ACCOUNT_INFRA = ("payment_fingerprint", "email_domain")
TOP_VALUES = 8


def write_accounts_csv(acc: pl.DataFrame, path) -> None:
    acc.select(
        pl.col("account_id"), pl.col("score"), pl.col("verdict"),
        pl.col("cluster_id").fill_null(""), pl.col("reasons").fill_null(""),
    ).select(ACCOUNTS_OUT_COLUMNS).sort("score", "account_id", descending=[True, False]) \
        .write_csv(path)


def _iso(ts) -> str | None:
    return None if ts is None else ts.strftime("%Y-%m-%dT%H:%M:%SZ")


def build_clusters_json(acc: pl.DataFrame, f, log, scorer) -> list[dict]:
    """One dict per cluster, ranked by score (highest first)."""
    memb = f.membership
    if memb.is_empty():
        return []
    members = acc.filter(pl.col("cluster_id").is_not_null())
    per = members.group_by("cluster_id").agg(
        accounts=pl.col("account_id").sort(),
        score=pl.col("score").mean(),
        attack_share=(pl.col("verdict") == "attack").mean(),
        exchanges=pl.col("n_exchanges").sum(),
        first_seen=pl.col("first_ts").min(),
        last_seen=pl.col("last_ts").max(),
        reasons=pl.col("reasons").str.split(";").list.explode(keep_nulls=False, empty_as_null=False),
    )
    ev = log.events.join(memb.lazy(), on="account_id", how="inner")
    # infrastructure shared by at least two members
    infra: dict[str, dict[str, list]] = {}
    for kind, expr in INFRA_KINDS.items():
        top = (ev.select("cluster_id", "account_id", expr.alias("value")).drop_nulls("value")
               .group_by("cluster_id", "value").agg(accounts=pl.col("account_id").n_unique())
               .filter(pl.col("accounts") >= 2)
               .sort(["cluster_id", "accounts", "value"], descending=[False, True, False])
               .group_by("cluster_id", maintain_order=True).head(TOP_VALUES)
               .collect(engine="streaming"))
        for cid, value, n in top.iter_rows():
            infra.setdefault(cid, {}).setdefault(kind, []).append({"value": value,
                                                                    "accounts": n})
    am = log.accounts.join(memb, on="account_id", how="inner")
    for kind in ACCOUNT_INFRA:
        top = (am.drop_nulls(kind).group_by("cluster_id", kind)
               .agg(accounts=pl.len()).filter(pl.col("accounts") >= 2)
               .sort(["cluster_id", "accounts", kind], descending=[False, True, False])
               .group_by("cluster_id", maintain_order=True).head(TOP_VALUES))
        for cid, value, n in top.iter_rows():
            infra.setdefault(cid, {}).setdefault(kind, []).append({"value": value,
                                                                    "accounts": n})
    # hourly timeline
    tl = (ev.group_by("cluster_id", pl.col("ts").dt.truncate("1h").alias("h")).len()
          .collect(engine="streaming"))
    timelines: dict[str, dict] = {}
    for cid, g in tl.group_by("cluster_id"):
        g = g.sort("h")
        start = g["h"][0]
        idx = ((g["h"] - start).dt.total_seconds() // 3600).to_numpy()
        counts = np.zeros(int(idx.max()) + 1, dtype=np.int64)
        counts[idx] = g["len"].to_numpy()
        timelines[cid[0]] = {"start": _iso(start), "bucket_s": 3600, "counts": counts.tolist()}
    # capability mix and templates from the sample
    s = f.sample.join(memb, on="account_id", how="inner")
    caps = (s.group_by("cluster_id", "task").len()
            .with_columns(share=pl.col("len") / pl.col("len").sum().over("cluster_id")))
    capmap: dict[str, dict] = {}
    caps = caps.sort(["share", "task"], descending=[True, False])
    for cid, task, _, share in caps.iter_rows():
        capmap.setdefault(cid, {})[task] = round(float(share), 4)
    tmpl = (s.drop_nulls("template_id").group_by("cluster_id", "template_id")
            .agg(accounts=pl.col("account_id").n_unique(), exchanges=pl.len(),
                 example=pl.col("prompt").first())
            .filter(pl.col("accounts") >= 2)
            .sort(["cluster_id", "exchanges", "template_id"], descending=[False, True, False])
            .group_by("cluster_id", maintain_order=True).head(3))
    if tmpl.height:
        tmpl = tmpl.with_columns(example=normalize_prompts(tmpl["example"].fill_null(""))
                                 .str.slice(0, 400))
    tmap: dict[str, list] = {}
    for cid, tid, n_acc, n_ex, example in tmpl.iter_rows():
        tmap.setdefault(cid, []).append({"template_id": f"T{tid}", "example": example,
                                         "accounts": n_acc, "exchanges": n_ex})
    pivot = _model_pivot(acc, log)
    cf = {r["cluster_id"]: r for r in f.clusters.iter_rows(named=True)}
    out = []
    for r in per.sort("score", "cluster_id", descending=[True, False]).iter_rows(named=True):
        cid = r["cluster_id"]
        c = cf.get(cid, {})
        reasons = [k for k, _ in Counter(x for x in r["reasons"] if x).most_common(5)]
        d = {
            "cluster_id": cid,
            "accounts": r["accounts"],
            "n_accounts": len(r["accounts"]),
            "score": round(float(r["score"]), 6),
            "verdict": str(scorer.decide(np.array([float(r["score"])]))[0]),
            "attack_share": round(float(r["attack_share"]), 4),
            "exchanges": int(r["exchanges"]),
            "first_seen": _iso(r["first_seen"]),
            "last_seen": _iso(r["last_seen"]),
            "capabilities": capmap.get(cid, {}),
            "evidence": _evidence(c, infra.get(cid, {}), pivot, cid, r),
            "infrastructure": infra.get(cid, {}),
            "timeline": timelines.get(cid),
            "templates": tmap.get(cid, []),
            "model_pivot": pivot.get(cid),
            "reasons": reasons,
            "link_kinds": c.get("kinds") or [],
        }
        out.append(d)
    return out


def _model_pivot(acc: pl.DataFrame, log) -> dict[str, dict]:
    """Cluster's share of traffic on the newest in-window release during its first 24 h,
    next to the same share over accounts in no cluster."""
    rel = log.releases
    if rel.is_empty() or "pivot_window_n" not in acc.columns:
        return {}
    lo, hi = acc["first_ts"].min(), acc["last_ts"].max()
    rel = rel.filter((pl.col("released_at") > lo) & (pl.col("released_at") < hi))
    if rel.is_empty():
        return {}
    model, released_at = rel.sort("released_at").row(-1)
    w = acc.with_columns(n=pl.col("pivot_window_n").fill_null(0).cast(pl.Float64),
                         on=pl.col("pivot_share").fill_null(0.0)
                         * pl.col("pivot_window_n").fill_null(0))
    base = w.filter(pl.col("cluster_id").is_null()).select(pl.col("on").sum() / pl.col("n").sum())
    benign = float(base.item() or 0.0) if base.height else 0.0
    out = {}
    for cid, on, n in (w.filter(pl.col("cluster_id").is_not_null()).group_by("cluster_id")
                       .agg(pl.col("on").sum(), pl.col("n").sum()).iter_rows()):
        if n > 0:
            out[cid] = {"model": model, "released_at": _iso(released_at),
                        "share_24h": round(on / n, 4), "benign_share_24h": round(benign, 4),
                        "exchanges_24h": int(n)}
    return out


def _evidence(c: dict, infra: dict, pivot: dict, cid: str, r: dict) -> list[dict]:
    ev = []
    size = c.get("size", len(r["accounts"]))
    kinds = c.get("kinds") or []
    if kinds:
        ev.append({"signal": "linked_accounts",
                   "detail": f"{size} accounts linked by shared {', '.join(kinds)}"})
    for kind, label in (("ip", "IP addresses"), ("ip_prefix", "network prefixes"),
                        ("client", "client fingerprints (user agent + TLS)"),
                        ("payment_fingerprint", "payment instruments"),
                        ("email_domain", "e-mail domains")):
        vals = infra.get(kind, [])
        if vals:
            top = vals[0]
            ev.append({"signal": f"shared_{kind}",
                       "detail": f"{len(vals)}+ {label} shared by members; the most shared "
                                 f"is used by {top['accounts']} of {size} accounts"})
    if c.get("shared_template_share") is not None:
        ev.append({"signal": "shared_templates",
                   "detail": f"{c['shared_template_share']:.0%} of sampled prompts follow "
                             f"templates used by several members; top 5 templates cover "
                             f"{(c.get('top_templates_share') or 0):.0%}"})
    if c.get("sync_share") is not None:
        ev.append({"signal": "synchrony",
                   "detail": f"{c['sync_share']:.0%} of templated prompts were sent by 2+ "
                             f"members with the same template in the same 10 minutes"})
    if c.get("top_task_share") is not None:
        ev.append({"signal": "capability_concentration",
                   "detail": f"the most common task covers {c['top_task_share']:.0%} of "
                             f"sampled prompts (task entropy {c.get('task_entropy', 0):.2f})"})
    if c.get("payment_shared_share"):
        ev.append({"signal": "shared_payment",
                   "detail": f"{c['payment_shared_share']:.0%} of members pay with an instrument "
                             f"another member uses ({c.get('distinct_payments')} distinct)"})
    p = pivot.get(cid)
    if p:
        ev.append({"signal": "model_pivot",
                   "detail": f"{p['share_24h']:.0%} of traffic in the 24 h after {p['model']} "
                             f"was released went to it (accounts outside clusters: "
                             f"{p['benign_share_24h']:.0%})"})
    return ev


__all__ = ["write_accounts_csv", "build_clusters_json"]
