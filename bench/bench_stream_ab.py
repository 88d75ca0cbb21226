"""Before/after replay throughput of ``distillguard stream``: two source trees, runs alternated.

On a shared machine single timings move by ±30 % or more (loop CPU seconds too, though
less), so a change is timed against the code before it in the same time window: runs of
``--before`` and ``--after`` (each a ``src`` directory put first on ``PYTHONPATH``, same
interpreter and dependencies) alternate ``--repeat`` times, each one ``bench_stream.py
--no-batch`` replay of the same simulated log (``WORK/SCENARIO-s1-SEED/sim``, simulated
there when missing), with ``POLARS_MAX_THREADS=1`` (one core). Per run: events/s (wall),
the loop's CPU seconds, events per CPU-second and the 1-minute load average before and after;
the table gives the medians, and whether ``alerts.jsonl``, ``accounts.csv`` and
``clusters.json`` of the two trees' last runs are byte-identical.

    git archive <commit> src | tar -x -C /tmp/before
    .venv/bin/python bench/bench_stream_ab.py --before /tmp/before/src --after src \\
        --scenario demo --seed 1001 --repeat 3 --work /tmp/bench-stream-ab
"""

from __future__ import annotations

import argparse
import filecmp
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent / "bench_stream.py"
OUTPUTS = ("alerts.jsonl", "accounts.csv", "clusters.json")


def run(src: Path, work: Path, scenario: str, seed: int) -> dict:
    env = dict(os.environ, PYTHONPATH=str(src.resolve()), POLARS_MAX_THREADS="1")
    res = work / "result.json"
    subprocess.run([sys.executable, str(BENCH), "--scenario", scenario, "--seeds", str(seed),
                    "--no-batch", "--work", str(work), "--json", str(res)],
                   env=env, check=True, stdout=subprocess.DEVNULL, cwd="/")
    r = json.loads(res.read_text())[0]
    return {"events_per_s": r["events_per_s"], "loop_cpu_s": r["loop_cpu_s"],
            "events_per_cpu_s": r["events"] / r["loop_cpu_s"], "load": r["load"],
            "events": r["events"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--before", type=Path, required=True, help="src directory of the old code")
    ap.add_argument("--after", type=Path, required=True, help="src directory of the new code")
    ap.add_argument("--scenario", default="demo")
    ap.add_argument("--seed", type=int, default=1001)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--work", type=Path, default=Path("/tmp/bench-stream-ab"))
    a = ap.parse_args()
    name = f"{a.scenario}-s1-{a.seed}"
    sim = a.work / "sim" / name / "sim"
    if not (sim / "truth.csv").exists():
        from distillguard.simulate import simulate
        simulate(a.scenario, scale=1.0, seed=a.seed, out=sim)
    trees = {"before": a.before, "after": a.after}
    runs: dict[str, list[dict]] = {k: [] for k in trees}
    for i in range(a.repeat):
        for k, src in trees.items():
            work = a.work / k
            (work / name).mkdir(parents=True, exist_ok=True)
            link = work / name / "sim"
            if not link.exists():
                link.symlink_to(sim.resolve())
            r = run(src, work, a.scenario, a.seed)
            runs[k].append(r)
            print(f"{k} run {i + 1}: {r['events_per_s']:,.0f} events/s, loop CPU "
                  f"{r['loop_cpu_s']:.2f} s ({r['events_per_cpu_s']:,.0f} events per "
                  f"CPU-second), load {r['load'][0]}->{r['load'][1]}", flush=True)
    same = all(filecmp.cmp(a.work / "before" / name / "live" / f,
                           a.work / "after" / name / "live" / f, shallow=False)
               for f in OUTPUTS)
    print(f"\n{name}, {runs['before'][0]['events']:,} events, {a.repeat} alternating runs "
          f"each (medians; all runs in brackets)\n")
    print("| code | events/s (wall) | loop CPU s | events per CPU-second | load |")
    print("|---|---|---|---|---|")
    for k, src in trees.items():
        rs = runs[k]
        cells = [" / ".join(f"{r[m]:,.0f}" if m != "loop_cpu_s" else f"{r[m]:.2f}"
                            for r in rs) for m in ("events_per_s", "loop_cpu_s",
                                                     "events_per_cpu_s")]
        meds = [statistics.median(r[m] for r in rs)
                for m in ("events_per_s", "loop_cpu_s", "events_per_cpu_s")]
        loads = [x for r in rs for x in r["load"]]
        print(f"| {k} (`{src}`) | **{meds[0]:,.0f}** ({cells[0]}) | **{meds[1]:.2f}** "
              f"({cells[1]}) | **{meds[2]:,.0f}** ({cells[2]}) | "
              f"{min(loads)}–{max(loads)} |")
    cpu = [statistics.median(r["loop_cpu_s"] for r in runs[k]) for k in trees]
    print(f"\nloop CPU after / before: {cpu[1] / cpu[0]:.3f}; outputs "
          f"({', '.join(OUTPUTS)}) byte-identical: {same}")


if __name__ == "__main__":
    main()
