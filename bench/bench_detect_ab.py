"""Before/after timing of ``distillguard detect``: two source trees, runs alternated.

On a shared machine single timings move by ±30 % or more, so a change is timed against the
code before it in the same time window: runs of ``--before`` and ``--after`` (each a ``src``
directory put first on ``PYTHONPATH``, same interpreter and dependencies) alternate
``--repeat`` times on one simulated log of ``bench_detect.py`` (``--work``, made there when
missing). Per run: wall time, peak RSS (sampled), per-stage timings from ``run.json`` and the
load average at its start; the table gives the medians, and whether ``accounts.csv`` and
``clusters.json`` of the last runs are byte-identical.

    git archive <commit> src | tar -x -C /tmp/before
    .venv/bin/python bench/bench_detect_ab.py --before /tmp/before/src --after src \\
        --size 1m --repeat 3 --work /tmp/bench-detect --out /tmp/ab-1m.md
"""

from __future__ import annotations

import argparse
import filecmp
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_detect as B  # noqa: E402


def run(src: Path, log: Path, out: Path, max_rss_gib: float) -> dict:
    env = dict(os.environ, PYTHONPATH=str(src.resolve()))
    cmd = [sys.executable, "-m", "distillguard", "detect", str(log / "events"),
           "--accounts", str(log / "accounts.csv"), "--releases", str(log / "releases.csv"),
           "--out", str(out), "-q"]
    load = os.getloadavg()[0]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            cwd="/")
    peak = 0.0
    while proc.poll() is None:
        peak = max(peak, B._rss_gib(proc.pid))
        if peak > max_rss_gib:
            proc.kill()
        time.sleep(0.25)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"detect ({src}) failed: {proc.stderr.read().decode()[-500:]}")
    meta = json.loads((out / "run.json").read_text())
    return {"wall_s": wall, "rss_gib": max(peak, meta.get("peak_rss_gib") or 0.0),
            "timings": meta.get("timings", {}), "load": load}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--before", type=Path, required=True, help="src directory of the old code")
    ap.add_argument("--after", type=Path, required=True, help="src directory of the new code")
    ap.add_argument("--size", default="1m", choices=list(B.SIZES))
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--work", type=Path, default=Path("/tmp/distillguard-bench-detect"))
    ap.add_argument("--out", type=Path, default=None, help="Markdown table (JSON next to it).")
    ap.add_argument("--max-rss-gib", type=float, default=11.0)
    args = ap.parse_args(argv)
    log = B.ensure_log(args.work, args.size)
    runs: dict[str, list[dict]] = {"before": [], "after": []}
    for i in range(args.repeat):
        for name in ("before", "after"):
            r = run(getattr(args, name), log, args.work / f"ab-{args.size}-{name}",
                    args.max_rss_gib)
            runs[name].append(r)
            print(f"[{args.size}] {name} {i + 1}/{args.repeat}: {r['wall_s']:.1f} s, load "
                  f"{r['load']:.1f}, peak {r['rss_gib']:.2f} GiB, {r['timings']}", flush=True)
    same = all(filecmp.cmp(args.work / f"ab-{args.size}-before" / f,
                           args.work / f"ab-{args.size}-after" / f, shallow=False)
               for f in ("accounts.csv", "clusters.json"))
    stages = list(runs["before"][-1]["timings"])
    lines = ["| code | runs | detect (median) | walls | load at start | peak RSS | "
             + " | ".join(stages) + " |", "|---|---|---|---|---|---|" + "---|" * len(stages)]
    for name, rs in runs.items():
        med = {k: statistics.median(r["timings"].get(k, 0.0) for r in rs) for k in stages}
        lines.append(
            f"| {name} ({getattr(args, name)}) | {len(rs)} | "
            f"{statistics.median(r['wall_s'] for r in rs):.1f} s | "
            + ", ".join(f"{r['wall_s']:.1f}" for r in rs) + " | "
            + ", ".join(f"{r['load']:.1f}" for r in rs) + " | "
            f"{max(r['rss_gib'] for r in rs):.2f} GiB | "
            + " | ".join(f"{med[k]:.1f}" for k in stages) + " |")
    lines += ["", f"accounts.csv and clusters.json byte-identical: {'yes' if same else 'NO'}"]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        args.out.write_text(text)
        args.out.with_suffix(".json").write_text(json.dumps(
            {"size": args.size, "runs": runs, "identical": same}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
