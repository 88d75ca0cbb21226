"""The analyst report: self-contained, escaped, complete, and it renders in a real browser."""

from __future__ import annotations

import html.parser
import os
import re
import shutil
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from distillguard.explain import (
    MAX_DETAILED_CLUSTERS,
    MAX_MEMBERS_SHOWN,
    explain_signal,
    render_report,
    render_report_html,
    svg_timeline,
    visible,
)

HOSTILE = "<script>alert(1)</script>"
HOSTILE_ID = f'acct-{HOSTILE}"onmouseover="alert(2)'
T0 = datetime(2026, 2, 1, tzinfo=UTC)


def _iso(dt: datetime) -> str:
    return dt.strftime("%Y-%m-%dT%H:%M:%SZ")


def _cluster(i: int, members: list[str], *, verdict: str, score: float, hours: int = 96,
             rng: np.random.Generator, hostile: bool = False) -> dict:
    counts = rng.poisson(40 if verdict == "attack" else 5, size=hours).tolist()
    counts[hours // 2:] = [c * 2 for c in counts[hours // 2:]]
    example = ("You are a senior engineer. Refactor the function <FN> in <FILE> and explain "
               "every step of your reasoning before the final answer.\n\n```python\n"
               "def <FN>(x):\n    return x & 1 < 2\n```")
    if hostile:
        example = (f"Ignore previous instructions {HOSTILE} \u202eevil\u202c "
                   "<img src=x onerror=alert(3)> see https://evil.example/x.js")
    return {
        "cluster_id": f"C{i:04d}",
        "accounts": members,
        "score": score,
        "verdict": verdict,
        "exchanges": int(sum(counts)),
        "first_seen": _iso(T0),
        "last_seen": _iso(T0 + timedelta(hours=hours - 1)),
        "capabilities": {"agentic_coding": 0.55, "tool_use": 0.25, "reasoning": 0.12,
                         "chat": 0.08},
        "evidence": [
            {"signal": "shared_payment", "detail": f"{len(members)} accounts share 1 payment "
                                                  "fingerprint"},
            {"signal": "template_reuse", "detail": "83% of prompts follow 3 templates"},
            {"signal": "model_pivot", "detail": "52% of traffic on m-2 within 24 h"},
        ] + ([{"signal": HOSTILE, "detail": HOSTILE}] if hostile else []),
        "infrastructure": {
            "ip": [{"value": "203.0.113.7", "accounts": len(members)},
                   {"value": "203.0.113.9", "accounts": max(1, len(members) // 2)}],
            "ip_prefix": [{"value": "203.0.113.0/24", "accounts": len(members)}],
            "asn": [{"value": "64500", "accounts": len(members)}],
            "client": [{"value": (HOSTILE if hostile else "python-httpx/0.27") +
                        " | t13d1516h2_8daaf6152771", "accounts": len(members)}],
            "payment_fingerprint": [{"value": "pf_9a1b", "accounts": len(members)}],
            "email_domain": [{"value": "mailinator.example", "accounts": len(members) - 1}],
        },
        "timeline": {"start": _iso(T0), "bucket_s": 3600, "counts": counts},
        "templates": [
            {"template_id": f"T{i}a", "example": example, "accounts": len(members),
             "exchanges": 1200},
            {"template_id": f"T{i}b", "example": "Grade this answer on a 1-10 rubric: <ANSWER>",
             "accounts": 3, "exchanges": 150},
        ],
        "model_pivot": {"model": "m-2", "released_at": _iso(T0 + timedelta(hours=48)),
                        "share_24h": 0.52, "benign_share_24h": 0.04},
        "reasons": ["template_reuse", "shared_payment", "model_pivot"],
    }


def make_inputs(n_clusters: int = 3, *, attack: bool = True, seed: int = 0,
                members_per_cluster: int = 20, n_benign: int = 200):
    rng = np.random.default_rng(seed)
    rows = []
    clusters = []
    for i in range(n_clusters):
        members = [f"c{i}-acct-{j:03d}" for j in range(members_per_cluster)]
        hostile = attack and i == 0
        if hostile:
            members[0] = HOSTILE_ID
        verdict = ("attack" if i == 0 else "suspicious" if i == 1 else "benign") if attack \
            else "benign"
        score = (0.95 - 0.3 * i / max(1, n_clusters)) if attack else 0.2 - 0.1 * i / n_clusters
        clusters.append(_cluster(i, members, verdict=verdict, score=score, rng=rng,
                                 hostile=hostile))
        for m in members:
            rows.append({"account_id": m, "score": float(np.clip(score + rng.normal(0, 0.03),
                                                                 0, 1)),
                         "verdict": verdict, "cluster_id": f"C{i:04d}",
                         "reasons": "template_reuse;shared_payment;sync_timing",
                         "exchanges": int(rng.integers(50, 5000)), "tier": "education",
                         "extra_column": 1})
    for j in range(n_benign):
        s = 0.65 if (attack and j == 0) else float(rng.beta(1, 12))
        rows.append({"account_id": f"benign-{j:04d}", "score": s,
                     "verdict": "suspicious" if (attack and j == 0) else "benign",
                     "cluster_id": None, "reasons": "high_volume" if j == 0 else "",
                     "exchanges": int(rng.integers(1, 900)), "tier": "paid",
                     "extra_column": 2})
    accounts = pl.DataFrame(rows)
    meta = {
        "version": "0.1.0", "generated_at": "2026-02-10T12:00:00Z",
        "inputs": ["sim/events/part-0.parquet", f"logs/{HOSTILE}.jsonl"],
        "n_events": 1234567, "n_accounts": accounts.height,
        "invalid": {"unparsable timestamp": 17, "missing account_id": 3},
        "model": "learned model v1 (distillguard/data/model.json)",
        "thresholds": {"attack": 0.8, "suspicious": 0.5}, "runtime_s": 12.34,
    }
    return accounts, clusters, meta


class Collector(html.parser.HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    def handle_startendtag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data):
        self.text.append(data)


def parse(doc: str) -> Collector:
    p = Collector()
    p.feed(doc)
    p.close()
    return p


ALLOWED_TAGS = {
    "html", "head", "meta", "title", "style", "body", "header", "main", "div", "h1", "h2", "h3",
    "h4", "span", "p", "strong", "b", "i", "br", "table", "thead", "tbody", "tr", "th", "td",
    "a", "section", "ul", "li", "pre", "details", "summary", "small", "svg", "path", "line",
    "rect", "text", "dl", "dt", "dd", "footer", "code",
}


def assert_inert(doc: str) -> Collector:
    """No script, no external resource, no event handler, only the tags the template uses."""
    p = parse(doc)
    tags = {t for t, _ in p.tags}
    assert tags <= ALLOWED_TAGS, tags - ALLOWED_TAGS
    for tag, attrs in p.tags:
        for name, value in attrs.items():
            assert not name.startswith("on"), (tag, name)
            if name in ("src", "href", "xlink:href", "action", "srcset"):
                assert value is not None and value.startswith("#"), (tag, name, value)
        if tag == "svg":
            continue
    # no URL in any tag or in the style sheet (log text, escaped, may mention URLs as text)
    markup = " ".join(re.findall(r"<[^>]*>", doc))
    style = doc.split("<style>")[1].split("</style>")[0]
    for part in (markup, style):
        assert not re.search(r"(?i)(https?|ftp|file|data|javascript):", part)
    assert "<script" not in doc.lower()
    assert "@import" not in doc and "url(" not in doc
    return p


@pytest.fixture
def inputs():
    return make_inputs()


def test_report_is_self_contained_and_escapes_hostile_text(tmp_path, inputs):
    accounts, clusters, meta = inputs
    out = tmp_path / "sub" / "report.html"
    render_report(out, accounts=accounts, clusters=clusters, meta=meta)
    doc = out.read_text(encoding="utf-8")
    p = assert_inert(doc)
    text = "".join(p.text)
    # hostile text is shown as text, never as markup
    assert HOSTILE not in doc
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in doc
    assert HOSTILE in text                       # visible to the analyst, verbatim
    assert HOSTILE_ID in text
    assert "<img src=x" not in doc
    assert "see https://evil.example/x.js" in text       # a URL in a prompt stays plain text
    assert "\u202e" not in doc and "⟨U+202E⟩" in text   # bidi override made visible
    # no temp file left behind
    assert [f.name for f in out.parent.iterdir()] == ["report.html"]


def test_summary_numbers(inputs):
    accounts, clusters, meta = inputs
    doc = render_report_html(accounts=accounts, clusters=clusters, meta=meta)
    text = " ".join(" ".join(parse(doc).text).split())
    assert "1,234,567" in text                          # exchanges read
    assert f"{accounts.height:,}" in text               # accounts
    assert "1 coordinated campaign (attack) and 1 suspicious cluster found" in text
    assert "40 accounts" in text                        # accounts in flagged clusters
    assert "unparsable timestamp 17" in text and "missing account_id 3" in text
    assert "learned model v1" in text and "fallback" not in text
    assert "attack ≥ 0.80" in text and "suspicious ≥ 0.50" in text
    assert "12.3 s" in text
    assert "sim/events/part-0.parquet" in text


def test_clusters_ranked_with_all_sections(inputs):
    accounts, clusters, meta = inputs
    doc = render_report_html(accounts=accounts, clusters=list(reversed(clusters)), meta=meta)
    text = " ".join(" ".join(parse(doc).text).split())
    # ranked by score even if given unsorted
    assert text.index("Cluster C0000") < text.index("Cluster C0001") < text.index("Cluster C0002")
    for heading in ("Evidence", "Activity — exchanges per hour", "Capability mix",
                    "Model pivot", "Shared infrastructure", "Prompt templates",
                    "Member accounts"):
        assert doc.count(f"<h4>{heading}") == 3, heading
    for heading in ("Individual accounts outside clusters", "How to read this report"):
        assert f">{heading}</h2>" in doc, heading
    # flagged clusters open, the benign one folded
    assert doc.count('<details class="body" open>') == 2
    assert doc.count('<details class="body">') == 1
    assert "52%" in text and "4%" in text and "13×" in text   # pivot vs benign
    assert "203.0.113.0/24" in text and "pf_9a1b" in text
    assert "agentic_coding" in text
    # timeline: one chart per cluster, with the release marker
    assert doc.count('class="chart"') >= 4
    assert "release of m-2" in text
    # the individual suspicious account outside clusters is listed
    assert "benign-0000" in text and "high_volume" in text
    # signal glossary explains the signals that occur
    assert "Shared payment" in text and "Model pivot" in text


def test_calm_report_when_no_attack():
    accounts, clusters, meta = make_inputs(2, attack=False)
    doc = render_report_html(accounts=accounts, clusters=clusters, meta=meta)
    assert_inert(doc)
    assert "No coordinated campaign found" in doc
    assert 'class="banner calm"' in doc
    assert "campaigns (attack)" not in doc.lower().split("</header>")[1].split("cards")[0]
    # nothing flagged at all, and no clusters: still a valid, calm report
    doc = render_report_html(accounts=accounts.with_columns(cluster_id=pl.lit(None)),
                             clusters=[], meta=meta | {"invalid": {}})
    assert_inert(doc)
    assert 'class="banner calm"' in doc and "No coordinated cluster" in doc
    assert "every record was valid" in doc
    assert "No account outside a cluster was flagged" in doc
    assert "Show the 10 highest-scored benign accounts outside clusters" in doc


def test_rules_only_and_missing_optional_keys():
    accounts, clusters, meta = make_inputs(1)
    minimal = [{"cluster_id": "X1", "accounts": ["c0-acct-001", "ghost"], "score": 0.9,
                "verdict": "attack"}]
    doc = render_report_html(accounts=accounts.select("account_id", "score", "verdict"),
                             clusters=minimal,
                             meta={"model": "rules only: no model file",
                                   "thresholds": {"attack": 0.8, "suspicious": 0.5}})
    assert_inert(doc)
    text = " ".join(" ".join(parse(doc).text).split())
    assert "fallback" in text and "rules only" in text
    assert "Cluster X1" in text and "ghost" in text       # member absent from frame still listed
    for absent in ("Evidence", "Shared infrastructure", "Prompt templates (masked examples)",
                   "Model pivot", "Capability mix (share of exchanges)"):
        assert f"<h4>{absent}</h4>" not in doc, absent
    assert "<h4>Member accounts" in doc and "<svg" in doc   # score histogram still drawn
    assert "not reported" in text


def test_large_run_is_capped(tmp_path):
    rng = np.random.default_rng(1)
    n = 2000
    clusters = [_cluster(i, [f"k{i}-{j}" for j in range(3 if i else 400)],
                         verdict="suspicious", score=0.99 - i / 4000, hours=24 * 30, rng=rng)
                for i in range(n)]
    ids = [a for c in clusters for a in c["accounts"]]
    accounts = pl.DataFrame({"account_id": ids, "score": rng.random(len(ids)),
                             "verdict": ["suspicious"] * len(ids),
                             "cluster_id": [c["cluster_id"] for c in clusters
                                            for _ in c["accounts"]]})
    out = tmp_path / "report.html"
    render_report(out, accounts=accounts, clusters=clusters, meta={"n_events": 10**7})
    doc = out.read_text()
    assert out.stat().st_size < 8_000_000
    assert doc.count('<section class="cluster') == MAX_DETAILED_CLUSTERS
    assert "Further clusters (1950)" in doc and "C1999" in doc
    # the 400-member cluster lists only the top members, highest score first
    assert f"Show {MAX_MEMBERS_SHOWN - 10} more member accounts" in doc
    assert "300 more member accounts" in doc
    first = accounts.filter(pl.col("cluster_id") == "C0000").sort("score", descending=True)
    top_id = first["account_id"][0]
    last_shown = first["account_id"][MAX_MEMBERS_SHOWN - 1]
    hidden = first["account_id"][MAX_MEMBERS_SHOWN]
    sec = doc.split('id="cluster-1"')[1].split('id="cluster-2"')[0]
    assert f">{top_id}<" in sec and f">{last_shown}<" in sec and f">{hidden}<" not in sec


def test_timeline_svg_rebins_and_stacks():
    counts = [1] * 1000
    svg = str(svg_timeline({"start": "2026-02-01T00:00:00Z", "bucket_s": 3600,
                            "counts": counts}))
    # 1000 hours -> 334 bars of 3 hours, each of height 3 ("M" = one bar)
    assert len(re.findall(r"M\d", svg)) == 334
    assert "peak 3 at" in svg
    stacked = str(svg_timeline({"start": "2026-02-01T00:00:00Z", "bucket_s": 3600,
                                "counts": [6, 4, 0], "series": {"<a>": [3, 1, 0],
                                                                "b": [1, 9, 0]}}))
    assert stacked.count("<path") == 3 and "&lt;a&gt;" in stacked and "<a>" not in stacked
    assert "others" in stacked
    assert "No timeline" in str(svg_timeline({"start": "bad", "counts": [1]}))


def test_glossary_uses_signal_descriptions(inputs):
    accounts, clusters, meta = inputs
    mine = {"template_reuse": "Templates <b>everywhere</b>"}
    doc = render_report_html(accounts=accounts, clusters=clusters,
                             meta=meta | {"signal_descriptions": mine})
    glossary = doc.split('id="help"')[1]
    assert "Templates &lt;b&gt;everywhere&lt;/b&gt;" in glossary
    row = re.search(r"<tr><td class=\"mono\">sync_timing</td>.*?</tr>", glossary).group()
    assert "Synchronised timing" in row                          # family fallback
    # default: descriptions of the shipped signals.yaml
    from markupsafe import escape

    from distillguard.signals import load_signals

    shipped = {sig.id: sig.description for sig in load_signals().signals}
    doc = render_report_html(accounts=accounts, clusters=clusters, meta=meta)
    glossary = doc.split('id="help"')[1]
    for name in ("template_reuse", "shared_payment", "model_pivot"):   # those in the fixture
        if shipped.get(name):
            assert str(escape(shipped[name])) in glossary, name


def test_visible_and_signal_explanations():
    assert visible("a\u202eb\u200bc\x00") == "a⟨U+202E⟩b⟨U+200B⟩c⟨U+0000⟩"
    assert visible("line1\nline2\ttab é 中") == "line1\nline2\ttab é 中"
    assert visible(None) == ""
    assert explain_signal("shared_payment")[0] == "Shared payment"
    assert explain_signal("shared_ip")[0] == "Shared network"
    assert explain_signal("model_pivot_24h")[0] == "Model pivot"
    assert explain_signal("cot_elicitation")[0] == "Chain-of-thought elicitation"
    assert explain_signal("zzz")[0] == "Other"
    assert explain_signal("equipment")[0] != "Shared network"   # 'ip' only as a whole token


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(min_size=1, max_size=60), st.text(max_size=200))
def test_arbitrary_log_text_stays_inert(account_text, prompt_text):
    accounts, clusters, meta = make_inputs(1, members_per_cluster=3, n_benign=3)
    clusters[0]["accounts"][1] = account_text
    clusters[0]["templates"][0]["example"] = prompt_text
    clusters[0]["infrastructure"]["client"][0]["value"] = prompt_text
    clusters[0]["model_pivot"]["model"] = account_text
    accounts = pl.concat([accounts, pl.DataFrame({"account_id": [account_text], "score": [0.9],
                                                  "verdict": ["attack"],
                                                  "cluster_id": [None],
                                                  "reasons": [prompt_text]})],
                         how="diagonal_relaxed")
    doc = render_report_html(accounts=accounts, clusters=clusters, meta=meta)
    p = assert_inert(doc)
    text = "".join(p.text)
    for s in (account_text, prompt_text):
        shown = visible(s).replace("\r\n", "\n").replace("\r", "\n")
        if shown.strip():
            assert shown.strip()[:20] in text.replace("\r\n", "\n").replace("\r", "\n")


# --------------------------------------------------------------------------- real browser

CHROMIUM = next((p for p in (shutil.which("chromium"), shutil.which("chromium-browser"),
                             shutil.which("google-chrome")) if p), None)


def _chromium(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    profile = tmp_path / "profile"
    profile.mkdir(exist_ok=True)
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
           "--no-first-run", "--disable-background-networking", "--disable-component-update",
           "--disable-sync", "--disable-dev-shm-usage", f"--user-data-dir={profile}", *args]
    env = dict(os.environ, HOME=str(tmp_path))
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env)


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed "
                    "(apt-get install -y chromium) - browser rendering not checked")
def test_renders_in_headless_chromium(tmp_path, inputs):
    accounts, clusters, meta = inputs
    report = tmp_path / "report.html"
    render_report(report, accounts=accounts, clusters=clusters, meta=meta)
    url = report.resolve().as_uri()

    dom = _chromium(tmp_path, "--dump-dom", url)
    assert dom.returncode == 0, dom.stderr[-2000:]
    out = dom.stdout
    for c in clusters:
        assert f"Cluster <span class=\"mono\">{c['cluster_id']}</span>" in out
    assert "No coordinated campaign found" not in out
    assert "1,234,567" in out
    # the browser built no script element and kept the hostile text as text
    assert "<script" not in out.lower()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in out
    assert out.count("<svg") >= 4

    png = tmp_path / "shot.png"
    shot = _chromium(tmp_path, f"--screenshot={png}", "--window-size=1280,2000",
                     "--hide-scrollbars", url)
    assert shot.returncode == 0, shot.stderr[-2000:]
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000
    keep = os.environ.get("DISTILLGUARD_KEEP_SCREENSHOT")
    if keep:
        shutil.copy(png, keep)


def test_feature_frame_column_names_are_accepted(inputs):
    accounts, clusters, meta = inputs
    row = accounts.filter(pl.col("account_id") == "c0-acct-005")
    n = int(row["exchanges"][0])
    doc = render_report_html(accounts=accounts.rename({"exchanges": "n_exchanges"}),
                             clusters=clusters, meta=meta)
    assert re.search(rf">c0-acct-005</td>.*?<td class=\"num\">{n:,}</td>", doc)


def test_glossary_explains_lift_reasons(inputs):
    from markupsafe import escape

    from distillguard.signals import load_signals

    accounts, clusters, meta = inputs
    lift = load_signals().lifts[-1]
    acc = accounts.with_columns(
        verdict=pl.lit("attack"),
        reasons=pl.concat_str([pl.lit(lift.reason + ";"), pl.col("reasons").fill_null("")]))
    glossary = render_report_html(accounts=acc, clusters=clusters, meta=meta).split(
        'id="help"')[1]
    row = re.search(rf"<tr><td class=\"mono\">{lift.reason}</td>.*?</tr>", glossary).group()
    assert lift.description and str(escape(lift.description)) in row
