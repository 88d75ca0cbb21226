"""Benchmark the link stage's edge building (``link.edges_from_incidences``) at ~1M / ~4M / ~16M.

The linear-growth target of issue 4 for the link stage, measured on its own: the stage's
incidences are saved once per size (``detect`` run up to the link stage on the
``bench_detect.py`` logs, in a child process), then each timed run is a fresh subprocess that
loads them and builds the edges: wall and CPU seconds, the child's peak RSS, pair rows, and
µs per exchange (the log's exchanges). Medians of ``--repeat`` runs, each with the load
average at its start (the machine may be shared: compare medians of the same window).

With ``--before SRC`` (a ``src`` directory of other code, e.g. ``git archive``'d) the same
runs are made with that code too, alternating, and the two edge lists are compared: same
pairs in the same order, kinds and n_kinds, weight differences (``identical``: bit for bit).

    .venv/bin/python bench/bench_link.py --sizes 1m,4m --repeat 3
    git archive main src | tar -x -C /tmp/before
    .venv/bin/python bench/bench_link.py --sizes 1m,4m,16m --before /tmp/before/src \\
        --out /tmp/bench-link.md
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# child: run detect on a log until the link stage has its incidences, save them, stop
_SAVE = """
import sys, tempfile
import distillguard.detect as D
log, dest = sys.argv[1], sys.argv[2]
class Saved(Exception):
    pass
def grab(inc, n_accounts, cfg, note=None):
    inc.write_parquet(dest + ".parquet")
    open(dest + ".n", "w").write(f"{n_accounts}\\n")
    raise Saved
D.edges_from_incidences = grab
try:
    D.detect([log + "/events"], accounts=log + "/accounts.csv",
             releases=log + "/releases.csv", out=tempfile.mkdtemp(prefix="bench-link-"))
except Saved:
    pass
"""

# child: time edges_from_incidences on saved incidences; JSON on the last stdout line
_TIME = """
import json, os, resource, sys, time
import polars as pl
from distillguard.link import edges_from_incidences
from distillguard.signals import load_signals
inc_path, edges_out = sys.argv[1], sys.argv[2]
inc = pl.read_parquet(inc_path + ".parquet")
n = int(open(inc_path + ".n").read())
cfg = load_signals(None).link
notes = []
load = os.getloadavg()[0]
t0, c0 = time.perf_counter(), time.process_time()
e = edges_from_incidences(inc, n, cfg, note=notes.append)
wall, cpu = time.perf_counter() - t0, time.process_time() - c0
if edges_out != "-":
    e.write_parquet(edges_out)
print(json.dumps({"wall": wall, "cpu": cpu, "edges": e.height, "incidences": inc.height,
                  "note": notes[0] if notes else "", "load": load,
                  "rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}))
"""


def exchanges(log: Path) -> int:
    import pyarrow.parquet as pq

    return sum(pq.ParquetFile(f).metadata.num_rows
               for f in sorted((log / "events").glob("*.parquet")))


def save_incidences(log: Path, dest: Path) -> None:
    if Path(str(dest) + ".parquet").is_file():
        return
    print(f"saving the link incidences of {log} → {dest}.parquet", flush=True)
    subprocess.run([sys.executable, "-c", _SAVE, str(log), str(dest)], check=True, cwd=ROOT,
                   env={**os.environ, "PYTHONPATH": str(ROOT / "src")})


def time_once(src: Path, inc: Path, edges_out: str) -> dict:
    r = subprocess.run([sys.executable, "-c", _TIME, str(inc), edges_out], cwd=ROOT,
                       capture_output=True, text=True,
                       env={**os.environ, "PYTHONPATH": str(src)})
    if r.returncode != 0:
        raise SystemExit(f"timing run failed ({src}):\n{r.stderr[-3000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def compare(a_path: str, b_path: str) -> dict:
    import polars as pl

    a, b = pl.read_parquet(a_path), pl.read_parquet(b_path)
    same = a.select("src", "dst").equals(b.select("src", "dst"))
    out = {"edges": [a.height, b.height], "same_pairs": same}
    if same:
        out |= {"same_kinds": bool((a["kinds"] == b["kinds"]).all()),
                "same_n_kinds": bool((a["n_kinds"] == b["n_kinds"]).all()),
                "max_abs_dweight": float((a["weight"] - b["weight"]).abs().max() or 0.0),
                "identical": a.equals(b)}
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="1m,4m,16m")
    ap.add_argument("--work", type=Path, default=Path("/tmp/bench-detect"),
                    help="the bench_detect.py logs (WORK/1m, WORK/4m, WORK/16m)")
    ap.add_argument("--inc-dir", type=Path, default=Path("/tmp/distillguard-bench-link"),
                    help="where the saved incidences go (made on first use)")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--before", type=Path, default=None, help="src directory of other code")
    ap.add_argument("--out", type=Path, default=None, help="markdown table (and .json)")
    args = ap.parse_args(argv)
    inc_dir = args.inc_dir
    inc_dir.mkdir(parents=True, exist_ok=True)
    codes = [("after", ROOT / "src")] + ([("before", args.before)] if args.before else [])
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-link-") as tmp:
        for size in args.sizes.split(","):
            log = args.work / size
            inc = inc_dir / f"inc-{size}"
            save_incidences(log, inc)
            n_ex = exchanges(log)
            runs: dict[str, list[dict]] = {name: [] for name, _ in codes}
            for i in range(args.repeat):
                for name, src in (codes if i % 2 == 0 else codes[::-1]):
                    r = time_once(src, inc, f"{tmp}/{name}-{size}.parquet" if i == 0 else "-")
                    runs[name].append(r)
                    print(f"[{size}] {name} run {i + 1}: wall {r['wall']:.2f} s, cpu "
                          f"{r['cpu']:.2f} s, peak RSS {r['rss_gib']:.2f} GiB, load "
                          f"{r['load']:.2f}", flush=True)
            cmp = (compare(f"{tmp}/before-{size}.parquet", f"{tmp}/after-{size}.parquet")
                   if args.before else None)
            for name, rs in runs.items():
                wall = statistics.median(r["wall"] for r in rs)
                rows.append({"size": size, "code": name, "exchanges": n_ex,
                             "incidences": rs[0]["incidences"], "edges": rs[0]["edges"],
                             "note": rs[0]["note"], "runs": len(rs),
                             "wall_s": wall, "walls": [round(r["wall"], 2) for r in rs],
                             "cpu_s": statistics.median(r["cpu"] for r in rs),
                             "us_per_exchange": 1e6 * wall / n_ex,
                             "peak_rss_gib": max(r["rss_gib"] for r in rs),
                             "loads": [round(r["load"], 2) for r in rs],
                             "compare": cmp if name == "after" else None})
    head = ("| size | exchanges | code | runs | edges wall (median) | walls | CPU (median) "
            "| µs / exchange | peak RSS | load at start | pair rows | same edges |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        c = r["compare"]
        same = ("—" if c is None else
                "identical" if c.get("identical") else
                f"pairs {c['same_pairs']}, kinds {c.get('same_kinds')}, "
                f"max dw {c.get('max_abs_dweight')}")
        lines.append(
            f"| {r['size']} | {r['exchanges']:,} | {r['code']} | {r['runs']} | "
            f"{r['wall_s']:.2f} s | {', '.join(map(str, r['walls']))} | {r['cpu_s']:.2f} s | "
            f"{r['us_per_exchange']:.2f} | {r['peak_rss_gib']:.2f} GiB | "
            f"{', '.join(map(str, r['loads']))} | {r['note'].split(' from ')[0]} | {same} |")
    table = "\n".join(lines)
    print(table)
    if args.out:
        args.out.write_text(table + "\n")
        args.out.with_suffix(".json").write_text(json.dumps(rows, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
