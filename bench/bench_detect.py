"""Benchmark ``distillguard detect`` against the parse floor at ~1M, ~4M and ~16M exchanges.

For each size the simulator log is generated once into ``--work`` (reused when present), then
in the same run:

* **parse floor**: decoding every column of the same event Parquet files with pyarrow
  (``ParquetFile.iter_batches``, all threads, batches discarded: bounded memory), median of
  the repeats;
* **detect**: ``python -m distillguard detect ... -q`` in a subprocess; wall time, peak RSS of
  that child (``os.wait4`` rusage), per-stage ``timings`` from its ``run.json``;
* ratio detect / floor, exchanges/s, and detection quality of the last run
  (``distillguard evaluate --json``).

Optionally (``--cap-check SIZE --caps 16,32,1000000000``) detect is run once more at that size
per per-account prompt cap (``max_prompts``, through the library call; 10**9 = no cap), to show
whether quality at the default cap (64) equals quality without it and what a lower cap costs.

    .venv/bin/python bench/bench_detect.py --sizes 1m --out /tmp/bd.md
    .venv/bin/python bench/bench_detect.py --sizes 1m,4m,16m --out /tmp/bd.md
    .venv/bin/python bench/bench_detect.py --sizes 1m --cap-check 1m --caps 16,32,1000000000
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SIZES = {
    # name: (scenario, scale)
    "1m": ("demo", 7.7),
    "4m": ("demo", 31.0),
    "16m": ("seed-scale", 1.0),
}
QUALITY_KEYS = ("auprc", "precision", "recall", "benign_fpr", "recall_at_0.1pct_fpr")


def _rss_gib(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 2**20
    except OSError:
        pass
    return 0.0


def _run_child(cmd: list[str], *, log: Path | None = None,
               max_rss_gib: float | None = None) -> tuple[float, float, int]:
    """Run ``cmd``; (wall seconds, peak RSS GiB of that child, return code).

    With ``max_rss_gib`` the child is killed (return code -9) when its RSS passes the limit,
    so a big run cannot take a shared machine's memory. The peak is the larger of the
    child's rusage and the RSS sampled every 0.25 s: ``detect``'s profiler resets the
    kernel's peak mark at every stage start, so rusage alone gives only the last stages'.
    """
    sampled = 0.0
    with contextlib.ExitStack() as stack:
        fh = stack.enter_context(open(log, "w")) if log else subprocess.DEVNULL
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, cwd=ROOT)
        while True:
            pid, status, ru = os.wait4(proc.pid, os.WNOHANG if max_rss_gib else 0)
            if pid:
                break
            now = _rss_gib(proc.pid)
            sampled = max(sampled, now)
            if now > max_rss_gib:
                print(f"killing {cmd[2:4]}: RSS over {max_rss_gib} GiB", flush=True)
                proc.kill()
            time.sleep(0.25)
        wall = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
    return wall, max(ru.ru_maxrss / 2**20, sampled), proc.returncode


def ensure_log(work: Path, name: str) -> Path:
    """The simulated log directory for ``name`` (generated when missing)."""
    d = work / name
    if (d / "truth.csv").is_file() and any((d / "events").glob("*.parquet")):
        return d
    scenario, scale = SIZES[name]
    print(f"[{name}] simulating {scenario} scale {scale} → {d}", flush=True)
    cmd = [sys.executable, "-m", "distillguard", "simulate", "--scenario", scenario,
           "--scale", str(scale), "--seed", "0", "--out", str(d), "-q"]
    wall, _, rc = _run_child(cmd, log=work / f"simulate-{name}.log")
    if rc != 0:
        raise SystemExit(f"simulate {name} failed, see {work / f'simulate-{name}.log'}")
    print(f"[{name}] simulated in {wall:.0f} s", flush=True)
    return d


def parse_floor(events: Path) -> tuple[float, int]:
    """(seconds to decode all columns of all event files with pyarrow, rows)."""
    import pyarrow.parquet as pq

    t0 = time.perf_counter()
    rows = 0
    for f in sorted(events.glob("*.parquet")):
        for b in pq.ParquetFile(f).iter_batches(batch_size=65536, use_threads=True):
            rows += b.num_rows
    return time.perf_counter() - t0, rows


def run_detect(log: Path, out: Path, *, max_prompts: int | None = None,
               max_rss_gib: float | None = None) -> dict:
    """One detect subprocess; wall, peak RSS, stage timings."""
    if max_prompts is None:
        cmd = [sys.executable, "-m", "distillguard", "detect", str(log / "events"),
               "--accounts", str(log / "accounts.csv"), "--releases", str(log / "releases.csv"),
               "--out", str(out), "-q"]
    else:
        code = ("import sys; from pathlib import Path; from distillguard.detect import detect; "
                "detect([sys.argv[1]], accounts=sys.argv[2], releases=sys.argv[3], "
                "out=Path(sys.argv[4]), max_prompts=int(sys.argv[5]))")
        cmd = [sys.executable, "-c", code, str(log / "events"), str(log / "accounts.csv"),
               str(log / "releases.csv"), str(out), str(max_prompts)]
    wall, rss, rc = _run_child(cmd, log=out.with_suffix(".log"), max_rss_gib=max_rss_gib)
    if rc != 0:
        raise SystemExit(f"detect failed ({rc}), see {out.with_suffix('.log')}")
    meta = json.loads((out / "run.json").read_text())
    rss = max(rss, meta.get("peak_rss_gib") or 0.0)
    return {"wall_s": wall, "rss_gib": rss, "timings": meta.get("timings", {}),
            "runtime_s": meta.get("runtime_s"), "n_events": meta.get("n_events"),
            "n_accounts": meta.get("n_accounts")}


def evaluate(out: Path, truth: Path) -> dict:
    cmd = [sys.executable, "-m", "distillguard", "evaluate", str(out), "--truth", str(truth),
           "--json"]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False, cwd=ROOT)
    if proc.returncode != 0:
        return {"error": proc.stderr.strip()[-300:]}
    m = json.loads(proc.stdout)["metrics"]
    return {k: m.get(k) for k in QUALITY_KEYS}


def bench_size(work: Path, name: str, repeat: int, max_rss_gib: float | None) -> dict:
    log = ensure_log(work, name)
    floors, runs = [], []
    n_rows = 0
    for i in range(repeat):
        f, n_rows = parse_floor(log / "events")
        floors.append(f)
        r = run_detect(log, work / f"det-{name}", max_rss_gib=max_rss_gib)
        runs.append(r)
        print(f"[{name}] run {i + 1}/{repeat}: floor {f:.2f} s, detect {r['wall_s']:.1f} s, "
              f"peak RSS {r['rss_gib']:.2f} GiB, stages {r['timings']}", flush=True)
    floor = statistics.median(floors)
    wall = statistics.median(r["wall_s"] for r in runs)
    stages = {k: statistics.median(r["timings"].get(k, 0.0) for r in runs)
              for k in runs[-1]["timings"]}
    return {"size": name, "exchanges": n_rows, "accounts": runs[-1]["n_accounts"],
            "repeat": repeat, "floor_s": floor, "detect_s": wall, "ratio": wall / floor,
            "exchanges_per_s": n_rows / wall, "rss_gib": max(r["rss_gib"] for r in runs),
            "stages": stages, "quality": evaluate(work / f"det-{name}", log / "truth.csv"),
            "floors": floors, "walls": [r["wall_s"] for r in runs]}


def cap_check(work: Path, name: str, caps: list[int], max_rss_gib: float | None) -> list[dict]:
    """Detect at ``name`` with other per-account prompt caps (``max_prompts``) than the default."""
    log = ensure_log(work, name)
    out = []
    for cap in caps:
        d = work / f"det-{name}-cap{cap}"
        r = run_detect(log, d, max_prompts=cap, max_rss_gib=max_rss_gib)
        q = evaluate(d, log / "truth.csv")
        print(f"[{name}] max_prompts={cap}: detect {r['wall_s']:.1f} s, quality {q}", flush=True)
        out.append({"size": name, "max_prompts": cap, "detect_s": r["wall_s"],
                    "rss_gib": r["rss_gib"], "stages": r["timings"], "quality": q})
    return out


def _fmt_q(q: dict) -> str:
    if "error" in q:
        return "evaluate failed"
    return (f"AUPRC {q['auprc']:.3f}, P {q['precision']:.3f}, R {q['recall']:.3f}, "
            f"benign FPR {q['benign_fpr']:.4f}, R@0.1%FPR {q['recall_at_0.1pct_fpr']:.3f}")


def markdown(results: list[dict], cap: list[dict] | None) -> str:
    lines = [("| size | exchanges | accounts | runs | parse floor | detect | detect / floor | "
              "exchanges/s | peak RSS | stages (s) | quality |"),
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        st = ", ".join(f"{k} {v:.1f}" for k, v in r["stages"].items())
        lines.append(
            f"| {r['size']} | {r['exchanges']:,} | {r['accounts']:,} | {r['repeat']} | "
            f"{r['floor_s']:.2f} s | {r['detect_s']:.1f} s | {r['ratio']:.1f}× | "
            f"{r['exchanges_per_s']:,.0f} | {r['rss_gib']:.2f} GiB | {st} | "
            f"{_fmt_q(r['quality'])} |")
    if len(results) > 1:
        a = results[0]
        lines += ["", f"Growth against {a['size']} (linear: time and stage ratios ≈ the "
                  "exchanges ratio):", "",
                  "| size | × exchanges | × accounts | × detect time | × floor | "
                  + " | ".join(f"× {k}" for k in a["stages"]) + " | µs / exchange |",
                  "|---|---|---|---|---|" + "---|" * len(a["stages"]) + "---|"]
        for r in results:
            st = " | ".join(f"{r['stages'].get(k, 0.0) / v:.1f}" if v else "-"
                            for k, v in a["stages"].items())
            lines.append(
                f"| {r['size']} | {r['exchanges'] / a['exchanges']:.1f} | "
                f"{r['accounts'] / a['accounts']:.1f} | {r['detect_s'] / a['detect_s']:.1f} | "
                f"{r['floor_s'] / a['floor_s']:.1f} | {st} | "
                f"{1e6 * r['detect_s'] / r['exchanges']:.1f} |")
    if cap:
        lines += ["", ("Per-account prompt cap (`max_prompts`; detect's default is 64), "
                       f"at {cap[0]['size']}:"), "",
                  "| max_prompts | detect | content stage | peak RSS | quality |",
                  "|---|---|---|---|---|"]
        for c in cap:
            lines.append(f"| {c['max_prompts']:,} | {c['detect_s']:.1f} s | "
                         f"{c['stages'].get('content', float('nan')):.1f} s | "
                         f"{c['rss_gib']:.2f} GiB | {_fmt_q(c['quality'])} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="1m", help="Comma-separated: 1m, 4m, 16m.")
    ap.add_argument("--repeat", type=int, default=None,
                    help="Runs per size (default 3 at 1m, 1 at bigger sizes).")
    ap.add_argument("--work", type=Path, default=Path("/tmp/distillguard-bench-detect"),
                    help="Where simulated logs and detect outputs live (reused).")
    ap.add_argument("--out", type=Path, default=None,
                    help="Markdown table; JSON is written next to it (default: in --work).")
    ap.add_argument("--cap-check", default=None, metavar="SIZE",
                    help="Also run detect at SIZE with the prompt caps of --caps.")
    ap.add_argument("--caps", default="1000000000",
                    help="Comma-separated max_prompts values for --cap-check (1e9: no cap).")
    ap.add_argument("--max-rss-gib", type=float, default=11.0,
                    help="Kill a detect run whose RSS passes this (0: no limit).")
    args = ap.parse_args(argv)
    lim = args.max_rss_gib or None
    sizes = [s.strip() for s in args.sizes.split(",") if s.strip()]
    bad = [s for s in sizes if s not in SIZES]
    if bad:
        ap.error(f"unknown sizes {bad}; choose from {list(SIZES)}")
    args.work.mkdir(parents=True, exist_ok=True)
    args.out = args.out or args.work / "bench-detect.md"
    results = []
    for s in sizes:
        rep = args.repeat or (3 if s == "1m" else 1)
        results.append(bench_size(args.work, s, rep, lim))
        args.out.write_text(markdown(results, None))  # partial results survive a kill
    caps = [int(float(c)) for c in args.caps.split(",") if c.strip()]
    cap = cap_check(args.work, args.cap_check, caps, lim) if args.cap_check else None
    args.out.write_text(markdown(results, cap))
    args.out.with_suffix(".json").write_text(
        json.dumps({"results": results, "cap_check": cap}, indent=1) + "\n")
    print(markdown(results, cap))
    return 0


if __name__ == "__main__":
    sys.exit(main())
