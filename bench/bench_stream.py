"""Streaming benchmark: replay throughput, bytes/account, leakage per campaign, batch agreement.

    python bench/bench_stream.py --scenario demo --seeds 1 2 3 --work /tmp/dg-bench-stream \
        [--scale 1.0] [--chunk-size N] [--grace G] [--rescore-factor F] [--no-batch] \
        [--signals FILE] [--json OUT.json] [--markdown]

For every seed: simulates the scenario (cached under ``WORK/SCENARIO-sSCALE-SEED/sim``),
replays it with ``distillguard stream`` (in-process, default parameters unless given), runs the
batch ``detect`` on the same log (unless ``--no-batch``) and records:

- ``events_per_s``: replay loop throughput (one process; learning + rescoring, excl. reading);
  ``loop_cpu_s``: the loop's CPU seconds (all threads; with ``POLARS_MAX_THREADS=1`` the
  single-core cost, least disturbed by other jobs on a shared machine);
- ``memory``: per-account state (columnar rows) and shared-index bytes / account;
- ``leakage``: per campaign, share of its exchanges served before the account that made them
  got its first ``attack`` alert (never-flagged accounts leak all their exchanges), the share
  of its accounts ever flagged, and the median ``exchanges_seen`` at first alert;
- ``benign_fpr``: per benign segment, share of its accounts with an ``attack`` alert at any
  point of the replay;
- ``agreement``: share of accounts whose final streaming verdict equals batch ``detect``'s;
- ``load``: the 1-minute load average before and after the replay (shared machines).

Prints one JSON object per seed (or writes them all to ``--json``) and, with ``--markdown``,
a table per seed. ``--from-json R1.json R2.json ...`` prints one compact table (a row per
replay: leakage and median ``exchanges_seen`` at first alert per campaign, benign accounts
flagged, agreement, throughput) from saved results.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import polars as pl

from distillguard.detect import detect
from distillguard.simulate import simulate
from distillguard.stream.replay import replay


def leakage_table(sim: Path, live: Path) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(per-campaign leakage, per-benign-segment attack-alert rate) of one replay."""
    n_acc = (pl.scan_parquet(str(sim / "events" / "*.parquet"))
             .group_by("account_id").agg(n=pl.len()).collect())
    truth = pl.read_csv(sim / "truth.csv")
    alerts = pl.read_ndjson(live / "alerts.jsonl", schema_overrides={"account_id": pl.String})
    if alerts.is_empty():
        first = pl.DataFrame(schema={"account_id": pl.String, "seen": pl.Int64})
    else:
        first = (alerts.filter(pl.col("verdict") == "attack").group_by("account_id")
                 .agg(seen=pl.col("exchanges_seen").min()))
    acc = (truth.join(n_acc, on="account_id", how="inner")
           .join(first, on="account_id", how="left"))
    camp = acc.filter(pl.col("label") == "attack").with_columns(
        leaked=pl.coalesce("seen", "n").clip(upper_bound=pl.col("n")))
    leak = (camp.group_by("segment").agg(
        accounts=pl.len(), exchanges=pl.col("n").sum(),
        detected=pl.col("seen").is_not_null().mean(),
        leakage=pl.col("leaked").sum() / pl.col("n").sum(),
        median_seen_at_alert=pl.col("seen").median()).sort("segment"))
    fpr = (acc.filter(pl.col("label") == "benign").group_by("segment")
           .agg(accounts=pl.len(), flagged=pl.col("seen").is_not_null().sum(),
                fpr=pl.col("seen").is_not_null().mean()).sort("segment"))
    return leak, fpr


def run_one(a, seed: int) -> dict:
    base = a.work / f"{a.scenario}-s{a.scale:g}-{seed}"
    sim = base / "sim"
    if not (sim / "truth.csv").exists():
        simulate(a.scenario, scale=a.scale, seed=seed, out=sim)
    live = base / "live"
    for f in ("checkpoint.sqlite", "checkpoint.sqlite-wal", "checkpoint.sqlite-shm"):
        (live / f).unlink(missing_ok=True)
    kw = {k: v for k, v in (("chunk_size", a.chunk_size), ("grace", a.grace),
                            ("rescore_factor", a.rescore_factor),
                            ("signals_path", a.signals)) if v is not None}
    load_before = os.getloadavg()[0]
    r = replay([sim / "events"], accounts=sim / "accounts.csv", releases=sim / "releases.csv",
               out=live, **kw)
    load_after = os.getloadavg()[0]
    meta = json.loads((live / "stream.json").read_text())
    leak, fpr = leakage_table(sim, live)
    out = {"scenario": a.scenario, "scale": a.scale, "seed": seed,
           "params": {k: str(v) if isinstance(v, Path) else v for k, v in kw.items()},
           "events": r.n_events, "accounts": r.n_accounts, "events_per_s": r.events_per_s,
           "loop_s": meta["loop_s"], "loop_cpu_s": meta.get("loop_cpu_s"),
           "load": [round(load_before, 2), round(load_after, 2)],
           "memory": meta["memory"], "alerts": r.n_alerts, "leakage": leak.to_dicts(),
           "benign_fpr": fpr.to_dicts()}
    if not a.no_batch:
        det = base / "batch"
        if not (det / "accounts.csv").exists():      # batch detect is deterministic
            detect([sim / "events"], accounts=sim / "accounts.csv",
                   releases=sim / "releases.csv", out=det)
        b = pl.read_csv(det / "accounts.csv").select("account_id", bv="verdict")
        s = pl.read_csv(live / "accounts.csv").select("account_id", sv="verdict")
        j = b.join(s, on="account_id")
        out["agreement"] = float((j["bv"] == j["sv"]).mean())
        out["agreement_attack_vs_rest"] = float(
            ((j["bv"] == "attack") == (j["sv"] == "attack")).mean())
    return out


def markdown(runs: list[dict]) -> str:
    lines = []
    for r in runs:
        lines.append(f"\n**{r['scenario']} scale {r['scale']:g}, seed {r['seed']}** "
                     f"({r['events']:,} events, {r['accounts']:,} accounts; "
                     f"{r['events_per_s']:,.0f} events/s, load {r['load'][0]}→{r['load'][1]}"
                     + (f"; agreement with batch {100 * r['agreement']:.2f} %"
                        if "agreement" in r else "") + ")\n")
        lines.append("| campaign | accounts | flagged | leakage | median exchanges_seen at "
                     "first alert |")
        lines.append("|---|---|---|---|---|")
        for c in r["leakage"]:
            med = c["median_seen_at_alert"]
            lines.append(f"| {c['segment']} | {c['accounts']} | {100 * c['detected']:.1f} % | "
                         f"{100 * c['leakage']:.1f} % | "
                         f"{'–' if med is None else f'{med:g}'} |")
        worst = max(r["benign_fpr"], key=lambda s: (s["fpr"], s["accounts"]))
        flagged = sum(s["flagged"] for s in r["benign_fpr"])
        total = sum(s["accounts"] for s in r["benign_fpr"])
        lines.append(f"\nbenign accounts with an `attack` alert: {flagged} of {total:,}; "
                     f"worst segment {worst['segment']} {worst['flagged']}/{worst['accounts']}"
                     f" ({100 * worst['fpr']:.2f} %)")
    return "\n".join(lines)


def compact(runs: list[dict]) -> str:
    """One row per replay: leakage per campaign (median exchanges_seen at first alert),
    benign attack alerts, agreement with batch, throughput, load."""
    camps = sorted({c["segment"] for r in runs for c in r["leakage"]})
    short = [c.removeprefix("campaign_") for c in camps]
    lines = ["| scenario | seed | " + " | ".join(short) + " | benign flagged (worst segment)"
             " | agreement | events/s (load) |",
             "|---|---|" + "---|" * len(camps) + "---|---|---|"]
    for r in runs:
        by = {c["segment"]: c for c in r["leakage"]}
        cells = []
        for c in camps:
            x = by.get(c)
            med = x and x["median_seen_at_alert"]
            cells.append("–" if x is None else f"{100 * x['leakage']:.1f} % "
                         f"({'–' if med is None else f'{med:g}'})")
        flagged = sum(s["flagged"] for s in r["benign_fpr"])
        total = sum(s["accounts"] for s in r["benign_fpr"])
        worst = max(r["benign_fpr"], key=lambda s: (s["fpr"], s["accounts"]))
        ben = f"{flagged}/{total:,}" + (f" ({worst['segment']} {100 * worst['fpr']:.2f} %)"
                                        if flagged else "")
        agree = f"{100 * r['agreement']:.2f} %" if "agreement" in r else "–"
        name = r["scenario"] + (f" ×{r['scale']:g}" if r["scale"] != 1 else "")
        lines.append(f"| {name} | {r['seed']} | " + " | ".join(cells)
                     + f" | {ben} | {agree} | {r['events_per_s']:,.0f} ({r['load'][0]}) |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scenario", default="demo")
    ap.add_argument("--seeds", type=int, nargs="+", default=[1])
    ap.add_argument("--seed", type=int, default=None, help="one seed (same as --seeds S)")
    ap.add_argument("--scale", type=float, default=1.0)
    ap.add_argument("--work", type=Path, default=Path("/tmp/dg-bench-stream"))
    ap.add_argument("--chunk-size", type=int, default=None, help="default: replay's")
    ap.add_argument("--grace", type=int, default=None, help="default: replay's")
    ap.add_argument("--rescore-factor", type=float, default=None, help="default: replay's")
    ap.add_argument("--signals", type=Path, default=None,
                    help="signal file for the replay (default: the shipped one; the batch "
                         "run for the agreement always uses the shipped one)")
    ap.add_argument("--no-batch", action="store_true", help="skip the agreement with detect")
    ap.add_argument("--json", type=Path, default=None, help="write the results here")
    ap.add_argument("--markdown", action="store_true", help="print markdown tables")
    ap.add_argument("--from-json", type=Path, nargs="+", default=None,
                    help="print the compact table of saved --json results (no replay)")
    a = ap.parse_args()
    if a.from_json:
        print(compact([r for p in a.from_json for r in json.loads(p.read_text())]))
        return
    seeds = [a.seed] if a.seed is not None else a.seeds
    runs = [run_one(a, s) for s in seeds]
    if a.json:
        a.json.parent.mkdir(parents=True, exist_ok=True)
        a.json.write_text(json.dumps(runs, indent=1, default=str) + "\n")
    if a.markdown:
        print(markdown(runs))
    elif not a.json:
        print(json.dumps(runs, indent=1, default=str))


if __name__ == "__main__":
    main()
