"""``distillguard demo``: the whole job on the built-in demo scenario, end to end."""

from __future__ import annotations

from pathlib import Path

import click


def run_demo(out: Path, *, seed: int = 0, progress: bool = False) -> None:
    from .detect import detect
    from .evaluate import evaluate
    from .simulate import simulate
    from .validate import validate

    out = Path(out)
    sim_dir, det_dir = out / "sim", out / "detect"
    click.echo(f"[1/4] simulate: scenario 'demo', seed {seed} -> {sim_dir}")
    sim = simulate("demo", scale=1.0, seed=seed, out=sim_dir, progress=progress)
    click.echo(sim.summary())
    click.echo(f"\n[2/4] validate {sim_dir / 'events'}")
    summary = validate([sim_dir / "events"], accounts=sim_dir / "accounts.csv",
                       releases=sim_dir / "releases.csv")
    summary.print()
    click.echo(f"\n[3/4] detect -> {det_dir}")
    res = detect([sim_dir / "events"], accounts=sim_dir / "accounts.csv",
                 releases=sim_dir / "releases.csv", allowlist=sim_dir / "allowlist.csv",
                 out=det_dir, progress=progress)
    click.echo(res.summary())
    click.echo("\n[4/4] evaluate against the simulator's ground truth")
    ev = evaluate(det_dir, sim_dir / "truth.csv")
    click.echo(ev.render())
    click.echo(f"\nOpen the analyst report: {(det_dir / 'report.html').resolve().as_uri()}")
