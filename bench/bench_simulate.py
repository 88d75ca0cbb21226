"""Benchmark the simulator: wall time and peak RSS at ~1M and ~16M exchanges.

Each run is a subprocess (``python -m distillguard simulate ...``); peak RSS is
``getrusage(RUSAGE_CHILDREN).ru_maxrss`` after it exits. Writes the "## Simulator" section of
``docs/benchmarks.md`` (creating the file with its "Machine" section when missing).

    .venv/bin/python bench/bench_simulate.py            # 1M and seed-scale
    .venv/bin/python bench/bench_simulate.py --only 1m  # just the 1M run
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "benchmarks.md"
RUNS = {
    # name: (scenario, scale); demo at 7.7 gives ~1M exchanges
    "1m": ("demo", 7.7),
    "16m": ("seed-scale", 1.0),
}


def machine() -> str:
    import polars

    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        mem = int(re.search(r"MemTotal:\s+(\d+)", Path("/proc/meminfo").read_text())[1]) / 2**20
    except (OSError, TypeError):
        mem = float("nan")
    return (f"## Machine\n\n- CPU: {cpu}\n- cores: {os.cpu_count()}\n- RAM: {mem:.1f} GiB\n"
            f"- Python {platform.python_version()}, polars {polars.__version__}\n")


def run(name: str, scenario: str, scale: float, out: Path) -> dict:
    cmd = [sys.executable, "-m", "distillguard", "simulate", "--scenario", scenario,
           "--scale", str(scale), "--seed", "0", "--out", str(out), "-q"]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{name} failed:\n{proc.stderr}")
    rss_gib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20
    m = re.search(r"exchanges: ([\d,]+)", proc.stdout)
    n = int(m[1].replace(",", "")) if m else 0
    acc = re.search(r"accounts:\s+([\d,]+) \(([\d,]+) attack\)", proc.stdout)
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file()) / 2**30
    pretty = " ".join(cmd[1:]).replace(str(out), "OUT")
    return {"name": name, "exchanges": n, "wall_s": wall, "rss_gib": rss_gib,
            "accounts": acc[1] if acc else "?", "attack": acc[2] if acc else "?",
            "disk_gib": size, "cmd": f"python {pretty}"}


def section(results: list[dict]) -> str:
    lines = ["## Simulator", "",
             "`bench/bench_simulate.py` (one subprocess per run; peak RSS = "
             "`getrusage(RUSAGE_CHILDREN).ru_maxrss`, cumulative max over the runs so far).", "",
             "| run | exchanges | accounts (attack) | wall | exchanges/s | peak RSS | on disk |",
             "|---|---|---|---|---|---|---|"]
    for r in results:
        lines.append(f"| {r['name']} | {r['exchanges']:,} | {r['accounts']} ({r['attack']}) | "
                     f"{r['wall_s']:.1f} s | {r['exchanges'] / r['wall_s']:,.0f} | "
                     f"{r['rss_gib']:.2f} GiB | {r['disk_gib']:.2f} GiB |")
    lines += ["", "Commands:", ""] + [f"- `{r['cmd']}`" for r in results] + [""]
    return "\n".join(lines)


def write_doc(sec: str) -> None:
    text = DOC.read_text() if DOC.exists() else "# Benchmarks\n\n" + machine() + "\n"
    if "## Machine" not in text:
        text = text.replace("# Benchmarks\n", "# Benchmarks\n\n" + machine() + "\n", 1)
    pat = re.compile(r"## Simulator\n.*?(?=\n## |\Z)", re.S)
    text = pat.sub(sec.rstrip("\n") + "\n", text) if pat.search(text) else \
        text.rstrip("\n") + "\n\n" + sec
    DOC.write_text(text)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--only", choices=list(RUNS), action="append")
    ap.add_argument("--keep", type=Path, default=None, help="Keep outputs under this dir.")
    args = ap.parse_args()
    names = args.only or list(RUNS)
    base = args.keep or Path(tempfile.mkdtemp(prefix="bench-sim-"))
    results = []
    try:
        for name in names:
            scenario, scale = RUNS[name]
            r = run(name, scenario, scale, base / name)
            print(f"{name}: {r['exchanges']:,} exchanges in {r['wall_s']:.1f} s, "
                  f"peak RSS {r['rss_gib']:.2f} GiB", flush=True)
            results.append(r)
            if not args.keep:
                shutil.rmtree(base / name, ignore_errors=True)
    finally:
        if not args.keep:
            shutil.rmtree(base, ignore_errors=True)
    write_doc(section(results))


if __name__ == "__main__":
    main()
