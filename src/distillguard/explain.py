"""The analyst report: one self-contained ``report.html`` per ``detect`` run.

:func:`render_report` turns the detector's outputs (the accounts frame, the clusters as in
``clusters.json`` and a ``meta`` dict about the run) into a single HTML file that needs no
network to view: inline CSS, charts drawn here as inline SVG, no scripts at all, and a
Content-Security-Policy that forbids loading anything. Everything that came from the traffic
log (account ids, prompts, user agents, model names...) is attacker-controlled: it goes through
Jinja2 autoescaping, and invisible/bidirectional control characters are shown as visible
``⟨U+XXXX⟩`` marks so that a prompt cannot disguise itself.

Detailed sections are capped (top :data:`MAX_DETAILED_CLUSTERS` clusters,
:data:`MAX_MEMBERS_SHOWN` members each); the rest is listed compactly, so a run with thousands
of clusters still gives a report of a few megabytes.
"""

from __future__ import annotations

import inspect
import math
import os
import re
from collections import Counter
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import jinja2
import numpy as np
import polars as pl
from markupsafe import Markup, escape

__all__ = [
    "render_report", "render_report_html", "svg_timeline", "svg_bars", "svg_score_histogram",
    "visible", "explain_signal", "MAX_DETAILED_CLUSTERS", "MAX_MEMBERS_SHOWN",
]

#: Clusters that get a full section; the others are listed in a compact table.
MAX_DETAILED_CLUSTERS = 50
#: Member accounts listed per detailed cluster (highest scores first); the rest: accounts.csv.
MAX_MEMBERS_SHOWN = 100
#: Individual (unclustered) flagged accounts listed, and highest-scored benign ones (folded).
MAX_INDIVIDUALS_SHOWN = 50
MAX_BENIGN_INDIVIDUALS_SHOWN = 10
#: Member rows shown before the "show more" fold.
MEMBERS_UNFOLDED = 10
#: Values listed per infrastructure kind, templates per cluster, evidence lines per cluster.
MAX_INFRA_VALUES = 8
MAX_TEMPLATES = 5
MAX_EVIDENCE = 20
#: Characters of a template example shown.
MAX_EXAMPLE_CHARS = 1200
#: Bars in a timeline chart (longer timelines are summed into wider buckets).
MAX_TIMELINE_BARS = 360

VERDICT_CLASSES = {"attack": "attack", "suspicious": "suspicious", "benign": "benign"}
FLAGGED = ("attack", "suspicious")

INFRA_LABELS = {
    "ip": "IP addresses",
    "ip_prefix": "Network prefixes (/24, /48)",
    "asn": "Autonomous systems (ASN)",
    "client": "Client fingerprint (user agent + TLS)",
    "payment_fingerprint": "Payment fingerprints",
    "email_domain": "Sign-up e-mail domains",
}

#: Plain-language meaning of signal families, matched on the signal name (first match wins).
SIGNAL_FAMILIES: tuple[tuple[str, tuple[str, ...], str], ...] = (
    ("Model pivot", ("pivot", "release", "new_model"),
     "Traffic moved to a newly released model within hours of its release, much faster than "
     "ordinary customers do. Harvesters want the newest teacher."),
    ("Chain-of-thought elicitation", ("cot", "chain", "reasoning_trace", "think"),
     "Prompts ask the model to spell out its full reasoning step by step, or request extended "
     "thinking at scale: training data for a reasoning student."),
    ("Grading / reward data", ("grad", "rubric", "reward", "judge"),
     "Rubric-style prompts asking the model to score answers: reward-model training data."),
    ("Sensitive rewrites", ("sensitive", "rewrite", "censor"),
     "Requests to rewrite politically sensitive questions into 'safe' versions."),
    ("Templates", ("template", "repetit", "near_dup", "minhash", "paraphras", "structure"),
     "Many prompts share one skeleton with slots filled in (shown masked below). Real users "
     "rarely repeat themselves this much across accounts."),
    ("Capability concentration", ("capab", "concentr", "narrow", "task", "entropy", "mix"),
     "Traffic is concentrated on the few capabilities worth copying (agentic coding, tool use, "
     "reasoning) instead of the broad mix of real workloads."),
    ("Filler traffic", ("filler", "camouflage", "mundane"),
     "A slice of deliberately mundane prompts mixed in to make accounts look ordinary."),
    ("Coordination", ("coordinated", "linked", "multi_signal", "group", "harvest"),
     "Accounts linked into one group by several shared rare attributes (infrastructure, "
     "payment, templates, timing). Campaigns spread traffic over many accounts so that no "
     "single one looks abnormal."),
    ("Synchronised timing", ("sync", "timing", "burst", "cadence", "periodic", "jitter",
                             "diurnal", "co_active", "coactiv", "load_balanc",
                             "round_the_clock", "pacing"),
     "Accounts switch on and off together, or run round the clock at a machine-like pace: "
     "one scheduler spreading requests over many accounts ('load balancing')."),
    ("Shared payment", ("payment", "card", "billing"),
     "Several accounts pay with the same payment instrument: one operator behind them."),
    ("Shared network", ("ip", "asn", "prefix", "proxy", "network", "subnet"),
     "Accounts come from the same IP addresses, prefixes or autonomous systems, or rotate "
     "through many proxy IPs. Shared IPs alone are weak (corporate NAT, campus networks); "
     "together with other signals they link a farm."),
    ("Geography", ("country", "geo", "region"),
     "Requests come from countries other than the account's billing country."),
    ("Shared client", ("client", "user_agent", "ua", "tls", "ja4", "fingerprint", "sdk"),
     "Identical user-agent and TLS fingerprints across accounts: the same harvesting tool."),
    ("Request pattern", ("single_turn", "max_tokens", "logprob", "temperature", "turn"),
     "Requests shaped for data collection: single-turn, output cap at its maximum, "
     "log-probabilities requested."),
    ("Volume", ("volume", "exchanges", "rate", "tokens", "throughput", "key_rotation",
                "api_key"),
     "Very high volume for the account's tier, or many API keys for the traffic: summed over "
     "a cluster, each account may stay under per-account limits on its own."),
    ("Sign-up pattern", ("email", "domain", "signup", "sign_up", "tier", "education",
                         "research", "startup", "verif", "age", "new_account", "created",
                         "short_lived", "rotation", "churn"),
     "Cheap, lightly verified sign-up paths (education, research, startup programmes), "
     "unverified or throw-away e-mail domains, very young or short-lived accounts."),
    ("Learned model", ("model_score", "learned", "classifier", "ml"),
     "The learned model's combined judgement over all features."),
)

_INVISIBLE_RE = re.compile(
    "[\u0000-\u0008\u000b\u000c\u000e-\u001f\u007f-\u009f\u00ad\u061c\u115f\u1160"
    "\u180e\u200b-\u200f\u202a-\u202e\u2060-\u206f\u3164\ufeff\ufff9-\ufffb\U000e0000-\U000e007f]"
)


def visible(text: Any) -> str:
    """``str(text)`` with control, zero-width and bidi-override characters made visible."""
    if text is None:
        return ""
    s = str(text)
    if _INVISIBLE_RE.search(s) is None:
        return s
    return _INVISIBLE_RE.sub(lambda m: f"\u27e8U+{ord(m.group()):04X}\u27e9", s)


def explain_signal(name: str) -> tuple[str, str]:
    """``(family, explanation)`` for a signal name; ``("Other", "")`` when not recognised."""
    key = str(name).lower()
    tokens = set(re.split(r"[^a-z0-9]+", key))
    for family, keys, text in SIGNAL_FAMILIES:
        for k in keys:
            # Short keys (ip, ua, ml...) must be whole tokens; longer ones may be substrings.
            if (k in tokens) if len(k) <= 3 else (k in key):
                return family, text
    return "Other", ""


# --------------------------------------------------------------------------- formatting

def _finite(x: Any) -> float | None:
    try:
        f = float(x)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def _fmt_int(x: Any) -> str:
    f = _finite(x)
    return "—" if f is None else f"{int(round(f)):,}"


def _fmt_score(x: Any) -> str:
    f = _finite(x)
    return "—" if f is None else f"{f:.2f}"


def _fmt_pct(x: Any, digits: int | None = None) -> str:
    """Percent; by default one decimal below 1 %, none above."""
    f = _finite(x)
    if f is None:
        return "—"
    if digits is None:
        digits = 1 if 0 < abs(f) < 0.01 else 0
    return f"{100 * f:.{digits}f}%"


def _parse_ts(value: Any) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        dt = value
    elif isinstance(value, (int, float)) and math.isfinite(value):
        dt = datetime.fromtimestamp(float(value), tz=UTC)
    else:
        try:
            dt = datetime.fromisoformat(str(value).strip().replace("z", "Z"))
        except ValueError:
            return None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.astimezone(UTC)


def _fmt_ts(value: Any) -> str:
    dt = _parse_ts(value)
    if dt is None:
        return visible(value) if value not in (None, "") else "—"
    return dt.strftime("%Y-%m-%d %H:%M UTC")


def _fmt_duration(seconds: float | None) -> str:
    if seconds is None or not math.isfinite(seconds) or seconds < 0:
        return ""
    if seconds < 3600:
        return f"{seconds / 60:.0f} min"
    if seconds < 2 * 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


def _verdict_class(v: Any) -> str:
    return VERDICT_CLASSES.get(str(v).lower(), "other")


def _score_key(c: dict) -> float:
    f = _finite(c.get("score"))
    return -f if f is not None else math.inf


# --------------------------------------------------------------------------- SVG charts

_PALETTE = ("#c2410c", "#1d4ed8", "#7c3aed", "#0f766e", "#b91c1c", "#a16207", "#475569")


def _nice_max(x: float) -> float:
    if x <= 0:
        return 1.0
    exp = 10 ** math.floor(math.log10(x))
    for m in (1, 2, 2.5, 5, 10):
        if x <= m * exp:
            return m * exp
    return 10 * exp


def _bars_path(x0: np.ndarray, w: float, y_lo: np.ndarray, y_hi: np.ndarray) -> str:
    """One SVG path of rectangles (compact: a few bytes per bar, no element per bar)."""
    keep = y_hi - y_lo > 0.05
    parts = [
        f"M{x:.1f} {lo:.1f}h{w:.2f}V{hi:.1f}h{-w:.2f}Z"
        for x, lo, hi in zip(x0[keep].tolist(), y_lo[keep].tolist(), y_hi[keep].tolist(),
                             strict=True)
    ]
    return "".join(parts)


def svg_timeline(timeline: dict, *, width: int = 1000, height: int = 170,
                 markers: Iterable[tuple[Any, str]] = ()) -> Markup:
    """Bar chart of exchanges per bucket (``{start, bucket_s, counts, series?}``) as inline SVG.

    ``series`` (optional, ``{label: counts}``) is drawn stacked, one colour per label, with the
    remainder of ``counts`` in grey. ``markers`` are ``(time, label)`` vertical lines, e.g. a
    model release.
    """
    counts = np.asarray(timeline.get("counts") or [], dtype=np.float64)
    counts = np.nan_to_num(counts, nan=0.0, posinf=0.0, neginf=0.0).clip(min=0)
    n = counts.size
    start = _parse_ts(timeline.get("start"))
    bucket_s = _finite(timeline.get("bucket_s")) or 3600.0
    if n == 0 or start is None:
        return Markup('<p class="muted">No timeline.</p>')
    series_in = timeline.get("series") or {}
    k = max(1, math.ceil(n / MAX_TIMELINE_BARS))
    nb = math.ceil(n / k)

    def rebin(a: np.ndarray) -> np.ndarray:
        a = np.resize(np.nan_to_num(np.asarray(a, dtype=np.float64)[:n].clip(min=0)), n)
        pad = np.zeros(nb * k)
        pad[:n] = a
        return pad.reshape(nb, k).sum(axis=1)

    total = rebin(counts)
    layers: list[tuple[str, np.ndarray, str]] = []
    if isinstance(series_in, dict) and series_in:
        acc = np.zeros(nb)
        for i, (label, vals) in enumerate(list(series_in.items())[: len(_PALETTE) - 1]):
            arr = np.minimum(rebin(np.asarray(vals, dtype=np.float64)), total - acc)
            layers.append((visible(label), arr, _PALETTE[i]))
            acc += arr
        layers.append(("others", total - acc, "#94a3b8"))
    else:
        layers.append(("exchanges", total, "#334155"))

    ml, mr, mt, mb = 46, 8, 10, 24
    pw, ph = width - ml - mr, height - mt - mb
    ymax = _nice_max(float(total.max()))
    bw = pw / nb
    x0 = ml + np.arange(nb) * bw
    gap = min(1.0, bw * 0.2)
    out = [f'<svg class="chart" viewBox="0 0 {width} {height}" role="img">']
    peak_i = int(total.argmax())
    peak_t = start + timedelta(seconds=peak_i * k * bucket_s)
    unit = "hour" if k * bucket_s == 3600 else _fmt_duration(k * bucket_s)
    out.append(f"<title>Exchanges per {escape(unit)}; peak {int(total.max()):,} at "
               f"{peak_t:%Y-%m-%d %H:%M} UTC</title>")
    for frac in (0.0, 0.5, 1.0):
        y = mt + ph * (1 - frac)
        out.append(f'<line x1="{ml}" x2="{width - mr}" y1="{y:.1f}" y2="{y:.1f}" '
                   f'class="grid"/>')
        tick = ymax * frac
        label = _fmt_int(tick) if tick == int(tick) else f"{tick:,.1f}"
        out.append(f'<text x="{ml - 6}" y="{y + 4:.1f}" class="ax" text-anchor="end">'
                   f"{label}</text>")
    acc = np.zeros(nb)
    for _, arr, colour in layers:
        y_hi = mt + ph * (1 - acc / ymax)
        acc = acc + arr
        y_lo = mt + ph * (1 - acc / ymax)
        path = _bars_path(x0 + gap / 2, max(bw - gap, 0.3), y_lo, y_hi)
        if path:
            out.append(f'<path d="{path}" fill="{colour}"/>')
    # day ticks (at most ~8 labels)
    span_s = nb * k * bucket_s
    day0 = start.replace(hour=0, minute=0, second=0, microsecond=0)
    if day0 < start:
        day0 += timedelta(days=1)
    n_days = int(span_s // 86400) + 1
    step = max(1, math.ceil(n_days / 8))
    for d in range(0, n_days, step):
        t = day0 + timedelta(days=d)
        off = (t - start).total_seconds()
        if off < 0 or off > span_s:
            continue
        x = ml + pw * off / span_s
        anchor = "end" if x > width - mr - 24 else "middle"
        out.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{mt + ph}" y2="{mt + ph + 4}" '
                   f'class="tick"/>')
        out.append(f'<text x="{x:.1f}" y="{height - 6}" class="ax" text-anchor="{anchor}">'
                   f"{t:%b %d}</text>")
    if n_days <= 1 or span_s < 86400:
        out.append(f'<text x="{ml}" y="{height - 6}" class="ax">{start:%Y-%m-%d %H:%M}</text>')
    for when, label in markers:
        t = _parse_ts(when)
        if t is None:
            continue
        off = (t - start).total_seconds()
        if not 0 <= off <= span_s:
            continue
        x = ml + pw * off / span_s
        anchor = "end" if x > ml + pw * 0.7 else "start"
        dx = -4 if anchor == "end" else 4
        out.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{mt}" y2="{mt + ph}" class="marker"/>')
        out.append(f'<text x="{x + dx:.1f}" y="{mt + 10}" class="mk" text-anchor="{anchor}">'
                   f"{escape(visible(label))}</text>")
    out.append(f'<line x1="{ml}" x2="{width - mr}" y1="{mt + ph}" y2="{mt + ph}" class="base"/>')
    out.append("</svg>")
    svg = "".join(out)
    if len(layers) > 1:
        legend = "".join(
            f'<span class="lg"><i style="background:{c}"></i>{escape(lbl)}</span>'
            for lbl, _, c in layers
        )
        svg += f'<div class="legend">{legend}</div>'
    return Markup(svg)


def svg_bars(items: list[tuple[str, float]], *, width: int = 420, max_value: float = 1.0,
             colour: str | list[str] = "#334155", fmt=_fmt_pct,
             ref: dict[str, float] | None = None, label_w: int = 130) -> Markup:
    """Horizontal bar chart of ``(label, value)`` rows; ``ref`` draws a tick per label.

    ``colour`` is one colour, or one per row.
    """
    colours = [colour] * len(items) if isinstance(colour, str) else list(colour)
    if not items:
        return Markup('<p class="muted">No data.</p>')
    row_h, bar_h = 22, 14
    height = row_h * len(items) + 4
    pw = width - label_w - 56
    out = [f'<svg class="chart bars" viewBox="0 0 {width} {height}" role="img" '
           f'style="max-width:{width}px">']
    for i, (label, value) in enumerate(items):
        v = _finite(value) or 0.0
        y = 2 + i * row_h
        w = max(0.0, min(1.0, v / max_value if max_value else 0.0)) * pw
        lab = visible(label)
        short = lab if len(lab) <= 20 else lab[:19] + "…"
        out.append(f'<text x="{label_w - 6}" y="{y + bar_h - 2}" class="lb" text-anchor="end">'
                   f"<title>{escape(lab)}</title>{escape(short)}</text>")
        out.append(f'<rect x="{label_w}" y="{y}" width="{pw}" height="{bar_h}" class="track"/>')
        out.append(f'<rect x="{label_w}" y="{y}" width="{w:.1f}" height="{bar_h}" '
                   f'fill="{colours[i % len(colours)]}"/>')
        if ref is not None and label in ref and _finite(ref[label]) is not None:
            rx = label_w + max(0.0, min(1.0, float(ref[label]) / max_value)) * pw
            out.append(f'<line x1="{rx:.1f}" x2="{rx:.1f}" y1="{y - 2}" y2="{y + bar_h + 2}" '
                       f'class="ref"/>')
        out.append(f'<text x="{label_w + pw + 6}" y="{y + bar_h - 2}" class="val">'
                   f"{escape(fmt(v))}</text>")
    out.append("</svg>")
    return Markup("".join(out))


def svg_score_histogram(scores: np.ndarray, thresholds: dict, *, width: int = 500,
                        height: int = 170, bins: int = 40) -> Markup:
    """Histogram of account scores (square-root scale) coloured by verdict zone."""
    scores = np.asarray(scores, dtype=np.float64)
    scores = scores[np.isfinite(scores)].clip(0, 1)
    if scores.size == 0:
        return Markup('<p class="muted">No scored accounts.</p>')
    hist, edges = np.histogram(scores, bins=bins, range=(0.0, 1.0))
    t_att = _finite(thresholds.get("attack")) if thresholds else None
    t_sus = _finite(thresholds.get("suspicious")) if thresholds else None
    ml, mr, mt, mb = 40, 10, 20, 22
    pw, ph = width - ml - mr, height - mt - mb
    top = math.sqrt(max(1, hist.max()))
    bw = pw / bins
    out = [f'<svg class="chart" viewBox="0 0 {width} {height}" role="img">'
           "<title>Accounts by score (square-root scale)</title>"]
    centres = (edges[:-1] + edges[1:]) / 2
    zone = np.full(bins, "benign", dtype=object)
    if t_sus is not None:
        zone[centres >= t_sus] = "suspicious"
    if t_att is not None:
        zone[centres >= t_att] = "attack"
    x0 = ml + np.arange(bins) * bw + 1
    y_lo = mt + ph * (1 - np.sqrt(hist) / top)
    y_hi = np.full(bins, float(mt + ph))
    for z, colour in (("benign", "#16a34a"), ("suspicious", "#d97706"), ("attack", "#dc2626")):
        m = zone == z
        path = _bars_path(x0[m], bw - 2, y_lo[m], y_hi[m])
        if path:
            out.append(f'<path d="{path}" fill="{colour}" fill-opacity="0.85"/>')
    for t, name in ((t_sus, "suspicious"), (t_att, "attack")):
        if t is not None and 0 <= t <= 1:
            x = ml + pw * t
            y_lab = mt - 6 if name == "attack" else mt + 8
            out.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{mt - 4}" y2="{mt + ph}" '
                       f'class="marker"/><text x="{x - 3:.1f}" y="{y_lab}" class="mk" '
                       f'text-anchor="end">{name} ≥ {t:.2f}</text>')
    for v in (0, 0.25, 0.5, 0.75, 1.0):
        x = ml + pw * v
        out.append(f'<text x="{x:.1f}" y="{height - 6}" class="ax" text-anchor="middle">'
                   f"{v:.2f}</text>")
    out.append(f'<text x="{ml - 6}" y="{mt + 4}" class="ax" text-anchor="end">'
               f"{int(hist.max()):,}</text>"
               f'<text x="{ml - 6}" y="{mt + ph}" class="ax" text-anchor="end">0</text>')
    out.append(f'<line x1="{ml}" x2="{width - mr}" y1="{mt + ph}" y2="{mt + ph}" class="base"/>')
    out.append("</svg>")
    return Markup("".join(out))


# --------------------------------------------------------------------------- view model

# polars >= 1.3x warns unless empty_as_null is explicit; older versions lack the argument.
_EXPLODE_KW = ({"empty_as_null": True}
               if "empty_as_null" in inspect.signature(pl.Expr.explode).parameters else {})

_ACCOUNT_COLS = {
    "account_id": pl.String, "score": pl.Float64, "verdict": pl.String,
    "cluster_id": pl.String, "reasons": pl.String, "exchanges": pl.Int64, "tier": pl.String,
}


#: Accepted alternative names of the accounts frame's columns (the feature frame's names).
_ACCOUNT_ALIASES = {"exchanges": ("n_exchanges", "n_events")}


def _normalise_accounts(accounts: pl.DataFrame) -> pl.DataFrame:
    if "account_id" not in accounts.columns:
        raise ValueError("render_report: the accounts frame has no 'account_id' column")
    for name, aliases in _ACCOUNT_ALIASES.items():
        alias = next((a for a in aliases if a in accounts.columns), None)
        if name not in accounts.columns and alias is not None:
            accounts = accounts.rename({alias: name})
    exprs = [
        pl.col(c).cast(t, strict=False) if c in accounts.columns else pl.lit(None, t).alias(c)
        for c, t in _ACCOUNT_COLS.items()
    ]
    return accounts.select(exprs)


def _account_rows(df: pl.DataFrame) -> list[dict]:
    rows = []
    for r in df.iter_rows(named=True):
        reasons = [visible(x) for x in (r["reasons"] or "").split(";") if x.strip()]
        aid = visible(r["account_id"])
        rows.append({
            "account_id": aid,
            "long": len(aid) > 40,
            "score": _fmt_score(r["score"]),
            "verdict": r["verdict"] or "—",
            "vclass": _verdict_class(r["verdict"]),
            "exchanges": _fmt_int(r["exchanges"]),
            "tier": visible(r["tier"]) if r["tier"] else "—",
            "cluster_id": visible(r.get("cluster_id")) if r.get("cluster_id") else "",
            "reasons": reasons,
        })
    return rows


def _members_by_cluster(clusters: list[dict], acc: pl.DataFrame) -> dict[int, tuple[int, list]]:
    """For each detailed cluster index: (member count, top members as display rows)."""
    idx, ids = [], []
    for i, c in enumerate(clusters):
        members = [str(a) for a in (c.get("accounts") or [])]
        idx.extend([i] * len(members))
        ids.extend(members)
    if not ids:
        return {}
    mem = pl.DataFrame({"_i": idx, "account_id": ids}, schema={"_i": pl.Int64,
                                                                "account_id": pl.String})
    info = acc.unique("account_id", keep="first")
    top = (
        mem.join(info, on="account_id", how="left")
        .sort(["_i", "score", "account_id"], descending=[False, True, False], nulls_last=True)
        .group_by("_i", maintain_order=True).head(MAX_MEMBERS_SHOWN)
    )
    sizes = dict(Counter(idx))
    out: dict[int, tuple[int, list]] = {i: (n, []) for i, n in sizes.items()}
    for (i,), part in top.partition_by("_i", as_dict=True, maintain_order=True).items():
        out[int(i)] = (sizes[int(i)], _account_rows(part))
    return out


def _ratio(share: Any, benign: Any) -> str:
    """``"13×"`` when the cluster's share is clearly above the benign one, else ``""``."""
    a, b = _finite(share), _finite(benign)
    if a is None or b is None or b <= 0 or a / b < 1.5:
        return ""
    return f"{a / b:.0f}×"


def _cluster_view(rank: int, c: dict, members: tuple[int, list] | None,
                  benign_caps: dict | None) -> dict:
    n_members = len(c.get("accounts") or [])
    first, last = _parse_ts(c.get("first_seen")), _parse_ts(c.get("last_seen"))
    span = (last - first).total_seconds() if first and last else None
    view: dict[str, Any] = {
        "rank": rank,
        "anchor": f"cluster-{rank}",
        "cluster_id": visible(c.get("cluster_id", f"#{rank}")),
        "verdict": c.get("verdict") or "—",
        "vclass": _verdict_class(c.get("verdict")),
        "score": _fmt_score(c.get("score")),
        "n_members": _fmt_int(n_members),
        "n_members_raw": n_members,
        "exchanges": _fmt_int(c.get("exchanges")),
        "first_seen": _fmt_ts(c.get("first_seen")),
        "last_seen": _fmt_ts(c.get("last_seen")),
        "duration": _fmt_duration(span),
        "reasons": [visible(r) for r in (c.get("reasons") or [])],
    }
    caps = c.get("capabilities")
    if isinstance(caps, dict) and caps:
        items = sorted(((str(k), _finite(v) or 0.0) for k, v in caps.items()),
                       key=lambda kv: -kv[1])
        view["top_caps"] = ", ".join(f"{visible(k)} {_fmt_pct(v)}" for k, v in items[:3]
                                     if v > 0)
        if members is not None:
            ref = ({str(k): v for k, v in benign_caps.items()}
                   if isinstance(benign_caps, dict) and benign_caps else None)
            view["caps_svg"] = svg_bars(items[:11], colour="#7c3aed", ref=ref,
                                        max_value=max(1e-9, max(v for _, v in items)))
            view["caps_ref"] = ref is not None
    if members is None:
        return view
    view["members_total"] = members[0]
    view["members"] = members[1][:MEMBERS_UNFOLDED]
    view["members_more"] = members[1][MEMBERS_UNFOLDED:]
    view["members_hidden"] = max(0, members[0] - len(members[1]))
    ev = c.get("evidence")
    if isinstance(ev, list) and ev:
        view["evidence"] = [
            {"signal": visible(e.get("signal", "")) if isinstance(e, dict) else "",
             "detail": visible(e.get("detail", "")) if isinstance(e, dict) else visible(e)}
            for e in ev[:MAX_EVIDENCE]
        ]
        view["evidence_hidden"] = max(0, len(ev) - MAX_EVIDENCE)
    infra = c.get("infrastructure")
    if isinstance(infra, dict) and infra:
        kinds = []
        order = list(INFRA_LABELS) + sorted(k for k in infra if k not in INFRA_LABELS)
        for kind in order:
            vals = infra.get(kind)
            if not vals:
                continue
            vals = sorted(
                (v for v in vals if isinstance(v, dict)),
                key=lambda v: -(_finite(v.get("accounts")) or 0),
            )
            rows = []
            for v in vals[:MAX_INFRA_VALUES]:
                k = _finite(v.get("accounts")) or 0
                rows.append({
                    "value": visible(v.get("value")),
                    "accounts": _fmt_int(k),
                    "pct": round(100 * min(1.0, k / n_members), 1) if n_members else 0,
                })
            wide = max((len(r["value"]) for r in rows), default=0) > 40
            kinds.append({"label": INFRA_LABELS.get(kind, visible(kind)), "rows": rows,
                          "wide": wide,
                          "hidden": max(0, len(vals) - MAX_INFRA_VALUES)})
        if kinds:
            view["infra"] = kinds
    pivot = c.get("model_pivot")
    markers = []
    if isinstance(pivot, dict) and pivot:
        view["pivot"] = {
            "model": visible(pivot.get("model")),
            "released_at": _fmt_ts(pivot.get("released_at")),
            "share": _fmt_pct(pivot.get("share_24h")),
            "benign": _fmt_pct(pivot.get("benign_share_24h")),
            "ratio": _ratio(pivot.get("share_24h"), pivot.get("benign_share_24h")),
            "svg": svg_bars(
                [("this cluster", _finite(pivot.get("share_24h")) or 0.0),
                 ("benign population", _finite(pivot.get("benign_share_24h")) or 0.0)],
                colour=["#dc2626", "#94a3b8"], width=460, label_w=130),
        }
        if pivot.get("released_at"):
            markers.append((pivot.get("released_at"), f"release of {pivot.get('model')}"))
    tl = c.get("timeline")
    if isinstance(tl, dict) and tl.get("counts"):
        view["timeline_svg"] = svg_timeline(tl, markers=markers)
        bucket = _finite(tl.get("bucket_s")) or 3600
        view["timeline_unit"] = "hour" if bucket == 3600 else _fmt_duration(bucket)
    tpls = c.get("templates")
    if isinstance(tpls, list) and tpls:
        shown = []
        for t in tpls[:MAX_TEMPLATES]:
            if not isinstance(t, dict):
                continue
            text = visible(t.get("example", ""))
            extra = len(text) - MAX_EXAMPLE_CHARS
            shown.append({
                "template_id": visible(t.get("template_id", "")),
                "example": text[:MAX_EXAMPLE_CHARS],
                "truncated": extra if extra > 0 else 0,
                "accounts": _fmt_int(t.get("accounts")),
                "exchanges": _fmt_int(t.get("exchanges")),
            })
        view["templates"] = shown
        view["templates_hidden"] = max(0, len(tpls) - MAX_TEMPLATES)
    return view


def _signal_descriptions(meta: dict) -> dict[str, str]:
    """``{signal id: description}`` from ``meta['signal_descriptions']``, else signals.yaml."""
    given = meta.get("signal_descriptions")
    if isinstance(given, dict):
        return {str(k): str(v) for k, v in given.items()}
    try:
        from .signals import load_signals

        ss = load_signals()
        return {**{lf.reason: lf.description for lf in ss.lifts if lf.description},
                **{s.id: s.description for s in ss.signals}}
    except Exception:  # the glossary then falls back on signal families  # noqa: BLE001
        return {}


def _signal_glossary(clusters: list[dict], acc: pl.DataFrame,
                     descriptions: dict[str, str]) -> list[dict]:
    counts: Counter = Counter()
    for c in clusters:
        for e in c.get("evidence") or []:
            if isinstance(e, dict) and e.get("signal"):
                counts[str(e["signal"])] += 1
        for r in c.get("reasons") or []:
            counts[str(r)] += 1
    flagged = acc.filter(pl.col("verdict").is_in(FLAGGED) & pl.col("reasons").is_not_null())
    if flagged.height:
        reasons = (
            flagged.select(pl.col("reasons").str.split(";").explode(**_EXPLODE_KW)
                           .str.strip_chars())
            .filter(pl.col("reasons").is_not_null() & (pl.col("reasons") != ""))
            .group_by("reasons").len()
        )
        for name, n in reasons.iter_rows():
            counts[str(name)] += int(n)
    out = []
    for name, n in counts.most_common(40):
        family, text = explain_signal(name)
        text = descriptions.get(name) or text
        out.append({"name": visible(name), "family": family, "text": visible(text.strip()),
                    "n": _fmt_int(n)})
    return out


def _context(accounts: pl.DataFrame, clusters: list[dict], meta: dict) -> dict:
    acc = _normalise_accounts(accounts)
    clusters = sorted((c for c in clusters if isinstance(c, dict)), key=_score_key)
    thresholds = meta.get("thresholds") or {}

    verdict_counts = dict(
        acc.group_by("verdict").len().iter_rows()
    ) if acc.height else {}
    n_cl_attack = sum(1 for c in clusters if _verdict_class(c.get("verdict")) == "attack")
    n_cl_susp = sum(1 for c in clusters if _verdict_class(c.get("verdict")) == "suspicious")
    flagged_clusters = [c for c in clusters if _verdict_class(c.get("verdict")) in FLAGGED]
    acc_in_flagged = sum(len(c.get("accounts") or []) for c in flagged_clusters)
    exch_in_flagged = sum(_finite(c.get("exchanges")) or 0 for c in flagged_clusters)
    n_acc_attack = int(verdict_counts.get("attack", 0))
    n_acc_susp = int(verdict_counts.get("suspicious", 0))

    if n_cl_attack or n_cl_susp:
        status = "alert" if n_cl_attack else "warn"
        parts = []
        if n_cl_attack:
            parts.append(f"{n_cl_attack:,} coordinated campaign{'s' * (n_cl_attack != 1)} "
                         f"(attack)")
        if n_cl_susp:
            parts.append(f"{n_cl_susp:,} suspicious cluster{'s' * (n_cl_susp != 1)}")
        headline = " and ".join(parts) + " found"
        subline = (f"{acc_in_flagged:,} accounts and {int(exch_in_flagged):,} exchanges are "
                   f"in flagged clusters. Review the clusters below, highest risk first.")
    elif n_acc_attack or n_acc_susp:
        status = "warn"
        headline = "No coordinated campaign found"
        subline = (f"{n_acc_attack + n_acc_susp:,} individual account"
                   f"{'s' * (n_acc_attack + n_acc_susp != 1)} scored above the suspicious "
                   f"threshold on their own; see “Individual accounts”.")
    else:
        status = "calm"
        headline = "No coordinated campaign found"
        subline = ("No cluster and no account reached the suspicious threshold. Nothing "
                   "needs action.")

    detailed = clusters[:MAX_DETAILED_CLUSTERS]
    members = _members_by_cluster(detailed, acc)
    benign_caps = meta.get("benign_capabilities")
    views = [_cluster_view(i + 1, c, members.get(i, (len(c.get("accounts") or []), [])),
                           benign_caps)
             for i, c in enumerate(detailed)]
    rest = [_cluster_view(i + 1 + len(detailed), c, None, None)
            for i, c in enumerate(clusters[MAX_DETAILED_CLUSTERS:])]

    outside = acc.filter(pl.col("cluster_id").is_null() | (pl.col("cluster_id") == ""))
    by_score = dict(by=["score", "account_id"], descending=[True, False], nulls_last=True)
    is_flagged = pl.col("verdict").is_in(FLAGGED)
    outside_flagged = outside.filter(is_flagged)
    individuals = _account_rows(outside_flagged.sort(**by_score).head(MAX_INDIVIDUALS_SHOWN))
    individuals_benign = _account_rows(
        outside.filter(~is_flagged | pl.col("verdict").is_null()).sort(**by_score)
        .head(MAX_BENIGN_INDIVIDUALS_SHOWN)
    )

    invalid = meta.get("invalid")
    invalid_rows = None
    if isinstance(invalid, dict):
        invalid_rows = [(visible(k), _fmt_int(v)) for k, v in
                        sorted(invalid.items(), key=lambda kv: -(_finite(kv[1]) or 0))]
    model = str(meta.get("model") or "")
    run = {
        "version": visible(meta.get("version", "")),
        "generated_at": _fmt_ts(meta.get("generated_at")),
        "inputs": [visible(p) for p in (meta.get("inputs") or [])],
        "n_events": _fmt_int(meta.get("n_events")),
        "n_accounts": _fmt_int(meta.get("n_accounts", acc.height)),
        "model": visible(model) or "—",
        "rules_only": "rule" in model.lower() and "learned" not in model.lower(),
        "thresholds": {k: _fmt_score(v) for k, v in thresholds.items()},
        "runtime": (f"{_finite(meta.get('runtime_s')):.1f} s"
                    if _finite(meta.get("runtime_s")) is not None else "—"),
        "invalid": invalid_rows,
        "invalid_total": _fmt_int(sum(_finite(v) or 0 for v in invalid.values()))
        if isinstance(invalid, dict) else "—",
    }
    return {
        "run": run,
        "status": status,
        "headline": headline,
        "subline": subline,
        "cards": [
            ("Exchanges read", run["n_events"], ""),
            ("Accounts", run["n_accounts"], ""),
            ("Campaigns (attack)", _fmt_int(n_cl_attack), "attack" if n_cl_attack else ""),
            ("Suspicious clusters", _fmt_int(n_cl_susp), "suspicious" if n_cl_susp else ""),
            ("Accounts in flagged clusters", _fmt_int(acc_in_flagged),
             "attack" if acc_in_flagged else ""),
            ("Accounts flagged (attack / suspicious)",
             f"{n_acc_attack:,} / {n_acc_susp:,}", "attack" if n_acc_attack else ""),
        ],
        "verdict_counts": [(v, _fmt_int(verdict_counts.get(v, 0)), v) for v in
                           ("attack", "suspicious", "benign")],
        "histogram": svg_score_histogram(acc["score"].to_numpy(), thresholds)
        if acc.height else None,
        "n_clusters": len(clusters),
        "n_flagged_clusters": len(flagged_clusters),
        "clusters": views,
        "rest": rest,
        "individuals": individuals,
        "individuals_benign": individuals_benign,
        "n_outside": outside.height,
        "n_outside_flagged": outside_flagged.height,
        "glossary": _signal_glossary(clusters, acc, _signal_descriptions(meta)),
        "families": [(f, t) for f, _, t in SIGNAL_FAMILIES],
        "limits": {"clusters": MAX_DETAILED_CLUSTERS, "members": MAX_MEMBERS_SHOWN,
                   "individuals": MAX_INDIVIDUALS_SHOWN},
    }


# --------------------------------------------------------------------------- rendering

def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(Path(__file__).parent / "templates")),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    return env


def render_report_html(*, accounts: pl.DataFrame, clusters: list[dict], meta: dict) -> str:
    """The report as an HTML string (see :func:`render_report`)."""
    ctx = _context(accounts, list(clusters or []), dict(meta or {}))
    return _environment().get_template("report.html.j2").render(**ctx)


def render_report(path: Path, *, accounts: pl.DataFrame, clusters: list[dict],
                  meta: dict) -> None:
    """Write the self-contained analyst report ``report.html`` to ``path``.

    ``accounts``: one row per account (``account_id, score, verdict, cluster_id, reasons,
    exchanges, tier``; other columns ignored). ``clusters``: as in ``clusters.json``, optional
    keys may be missing. ``meta``: ``version, generated_at, inputs, n_events, n_accounts,
    invalid, model, thresholds, runtime_s`` and optionally ``benign_capabilities`` ({task:
    share} of benign traffic, drawn as a tick on each capability chart) and
    ``signal_descriptions`` ({signal id: text}; default: the shipped signals.yaml).
    The file is written atomically.
    """
    html = render_report_html(accounts=accounts, clusters=clusters, meta=meta)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")   # open() honours the umask
    try:
        tmp.write_text(html, encoding="utf-8")
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
