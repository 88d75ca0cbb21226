"""Trace every tie to a confident seed during a replay, and estimate pre-score rules from it.

Development tool for ``stream.prescore_*`` (docs/benchmarks.md "Fifth session: pre-score
ties"). ``trace`` replays one simulated log (``SIM`` as written by ``distillguard simulate``)
with the shipped stream rules and the pre-score rule switched on at an unreachable bar, so
nothing changes but the ties are recorded: for every request whose value (IP, /24, client,
template, ...) was shared with a confident seed when sent, ``(account, link kind, exchange
count at that request)``, and for every account at each batch start its seed-evidence mask
(ties made by pairs at scoring time). ``estimate`` then replays the traces of several logs
against candidate rules offline: an account is flagged at the first request where the rule
holds, or at its first ``attack`` alert of the traced replay if earlier; leakage per campaign
and benign accounts flagged per segment as ``bench/bench_stream.py`` counts them. Estimates
only: a flag changes what the flagged account feeds the indexes from then on (``protect``),
so confirm a candidate with ``bench/bench_stream.py --signals``.

    python tools/trace_ties.py trace SIM OUT_DIR
    python tools/trace_ties.py estimate OUT_DIR... [--groups] [--ties]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import tempfile
from pathlib import Path

import numpy as np
import polars as pl

import distillguard.stream.replay as replay_mod
from distillguard.signals import load_signals
from distillguard.stream.online import KINDS

BIT = {k: 1 << i for i, k in enumerate(KINDS)}
GROUPS = (("ip", "ip_prefix"), ("client",), ("template", "system_prompt"), ("tool_schema",),
          ("payment", "email_domain", "signup_burst"))


def trace(sim: Path, out: Path) -> None:
    """Replay ``sim`` into ``out`` recording ties (``out/ties.json``)."""
    base = load_signals()
    never = dataclasses.replace(base, stream=dataclasses.replace(
        base.stream, prescore_min_groups=len(GROUPS) + 1, prescore_ties=()))
    rec = {"ties": [], "starts": []}
    orig = replay_mod.learn_and_alert

    def learn_and_alert(det, frame, fh, policy):
        det._init()
        det.signals_ = never
        sev, known = det.sev_.copy(), det.n_accounts_
        n = orig(det, frame, fh, policy)
        acc = np.array([det.index_[a] for a in frame["account_id"].to_list()])
        u, start, cnt = np.unique(acc[np.argsort(acc, kind="stable")], return_index=True,
                                  return_counts=True)
        n_before = det.c_["n"][u] - cnt
        row = {a: j for j, a in enumerate(u.tolist())}
        for a, j in row.items():
            if a < known and sev[a]:
                rec["starts"].append((det.ids_[a], int(n_before[j]) + 1, int(sev[a])))
        for a, bit, k in det.tie_log_:
            j = row[a]
            rec["ties"].append((det.ids_[a], bit, int(n_before[j] + k - start[j] + 1)))
        return n

    replay_mod.learn_and_alert = learn_and_alert
    try:
        replay_mod.replay([sim / "events"], accounts=sim / "accounts.csv",
                          releases=sim / "releases.csv", out=out,
                          checkpoint=Path(tempfile.mkdtemp()) / "ck.sqlite")
    finally:
        replay_mod.learn_and_alert = orig
    (out / "ties.json").write_text(json.dumps({"sim": str(sim), **rec}))


def _load(out: Path):
    rec = json.loads((out / "ties.json").read_text())
    sim = Path(rec["sim"])
    tot = (pl.scan_parquet(str(sim / "events" / "*.parquet")).group_by("account_id")
           .agg(n=pl.len()).collect())
    truth = pl.read_csv(sim / "truth.csv").join(tot, on="account_id")
    al = pl.read_ndjson(out / "alerts.jsonl", schema_overrides={"account_id": pl.String})
    first = dict(al.filter(pl.col("verdict") == "attack").group_by("account_id")
                 .agg(pl.col("exchanges_seen").min()).iter_rows())
    timeline: dict[str, list] = {}
    for a, n1, mask in rec["starts"]:
        timeline.setdefault(a, []).append((n1, 0, mask))
    for a, bit, n_at in rec["ties"]:
        timeline.setdefault(a, []).append((n_at, 1, bit))
    for v in timeline.values():
        v.sort()
    return truth, first, timeline


def groups_rule(min_groups: int, require: list[tuple[str, ...]]):
    masks = np.arange(1 << len(KINDS))
    g = sum(((masks & sum(BIT[k] for k in grp)) != 0).astype(int) for grp in GROUPS)
    for req in require:
        g[(masks & sum(BIT[k] for k in req)) == 0] = 0
    ok = g >= min_groups

    def first_flag(ev):
        mask = 0
        for n_at, _, bits in ev:
            mask |= bits
            if ok[mask]:
                return n_at
        return None
    return first_flag


def ties_rule(ties: dict[str, int]):
    def first_flag(ev):
        mask, count = 0, dict.fromkeys(ties, 0)
        for n_at, is_tie, bits in ev:
            mask |= bits
            for k, need in ties.items():
                if is_tie:
                    count[k] += bool(bits & BIT[k])
                # a pair's tie counts one at most (as OnlineDetector._seed_evidence)
                if max(count[k], bool(mask & BIT[k])) >= need:
                    return n_at
        return None
    return first_flag


def estimate(outs: list[Path], name: str, first_flag) -> str:
    camp: dict[str, list[float]] = {}
    benign: dict[str, int] = {}
    for out in outs:
        truth, first, timeline = _load(out)
        pre = {a: r for a, ev in timeline.items() if (r := first_flag(ev)) is not None}
        rows = [(seg, lab, n, min(first.get(a, n + 1), pre.get(a, n + 1)))
                for a, lab, seg, n in truth.select("account_id", "label", "segment", "n")
                .iter_rows()]
        df = pl.DataFrame(rows, schema=["seg", "lab", "n", "at"], orient="row")
        for seg, leak in (df.filter(pl.col("lab") == "attack").group_by("seg")
                          .agg(pl.min_horizontal("at", "n").sum() / pl.col("n").sum())
                          .iter_rows()):
            camp.setdefault(seg, []).append(leak)
        for seg, c in (df.filter((pl.col("lab") == "benign") & (pl.col("at") <= pl.col("n")))
                       .group_by("seg").len().iter_rows()):
            benign[seg] = benign.get(seg, 0) + c
    cells = " | ".join(f"{100 * min(v):.1f}–{100 * max(v):.1f} %"
                       for _, v in sorted(camp.items()))
    return f"| {name} | {cells} | {dict(sorted(benign.items()))} |"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("trace")
    t.add_argument("sim", type=Path)
    t.add_argument("out", type=Path)
    e = sub.add_parser("estimate")
    e.add_argument("outs", type=Path, nargs="+")
    a = ap.parse_args()
    if a.cmd == "trace":
        trace(a.sim, a.out)
        return
    addr, ident = ("ip", "ip_prefix", "client"), ("payment", "email_domain", "signup_burst")
    print("| rule | " + " | ".join(sorted(
        _load(a.outs[0])[0].filter(pl.col("label") == "attack")["segment"].unique()))
        + " | benign accounts flagged (all logs) |")
    print(estimate(a.outs, "none (the traced replay)", lambda ev: None))
    for m in (2, 3, 4, 5):
        print(estimate(a.outs, f"{m} groups, one address / client", groups_rule(m, [addr])))
        print(estimate(a.outs, f"{m} groups, address / client and identity",
                       groups_rule(m, [addr, ident])))
    for ties in ({"payment": 1}, {"ip": 3}, {"ip": 4}, {"payment": 1, "ip": 4},
                 {"payment": 1, "ip": 3}, {"payment": 1, "ip": 4, "client": 3},
                 {"payment": 1, "ip_prefix": 5}, {"payment": 1, "client": 2}):
        print(estimate(a.outs, f"ties {ties}", ties_rule(ties)))


if __name__ == "__main__":
    main()
