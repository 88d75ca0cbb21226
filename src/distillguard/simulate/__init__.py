"""Labeled synthetic API traffic: benign populations, legitimate look-alikes, campaigns.

``simulate(scenario, scale=, seed=, out=)`` writes the directory layout described in
``docs/simulator.md``: ``events/part-*.{parquet,jsonl[.gz|.zst]}``, ``accounts.csv``,
``releases.csv``, ``labels.csv``, ``truth.csv``, ``allowlist.csv`` and ``scenario.yaml``.
"""

from __future__ import annotations

import gzip
import io
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import zstandard

from ..errors import ConfigError
from .config import Scenario, dump_scenario, load_scenario, scenario_names

__all__ = ["SimResult", "list_scenarios", "load_scenario", "simulate", "FORMATS"]

FORMATS = ("parquet", "jsonl", "jsonl.gz", "jsonl.zst")
_RFC3339 = "%Y-%m-%dT%H:%M:%S%.6fZ"


def list_scenarios() -> list[tuple[str, str]]:
    """``(name, one-line description)`` of every shipped scenario."""
    out = []
    for name in scenario_names():
        sc = load_scenario(name)
        out.append((name, sc.description.strip().splitlines()[0] if sc.description else ""))
    return out


@dataclass
class SimResult:
    """What :func:`simulate` wrote."""

    out: Path
    scenario: str
    scale: float
    seed: int
    exchanges: int
    accounts: int
    attack_accounts: dict[str, int]
    segment_accounts: dict[str, int]
    files: list[Path] = field(default_factory=list)

    def summary(self) -> str:
        lines = [f"scenario {self.scenario} (scale {self.scale:g}, seed {self.seed}) -> "
                 f"{self.out}",
                 f"  exchanges: {self.exchanges:,}",
                 f"  accounts:  {self.accounts:,} "
                 f"({sum(self.attack_accounts.values()):,} attack)"]
        for camp, n in sorted(self.attack_accounts.items()):
            lines.append(f"    {camp}: {n:,} attack accounts")
        n_ev = sum(1 for f in self.files if f.parent.name == "events")
        lines.append(f"  files: events/ ({n_ev} chunks), "
                     + ", ".join(f.name for f in self.files if f.parent.name != "events"))
        return "\n".join(lines)


def _write_chunk(table: pa.Table, path: Path, fmt: str) -> None:
    if fmt == "parquet":
        pq.write_table(table, path, compression="zstd", row_group_size=131072)
        return
    df = pl.from_arrow(table).with_columns(pl.col("ts").dt.to_string(_RFC3339))
    buf = io.BytesIO()
    df.write_ndjson(buf)
    data = buf.getvalue()
    if fmt == "jsonl.gz":
        data = gzip.compress(data, compresslevel=3, mtime=0)
    elif fmt == "jsonl.zst":
        data = zstandard.ZstdCompressor(level=3).compress(data)
    path.write_bytes(data)


def simulate(scenario: str, *, scale: float = 1.0, seed: int = 0, out: Path,
             fmt: str = "parquet", progress: bool = False) -> SimResult:
    """Generate scenario ``scenario`` into directory ``out`` (see module docstring)."""
    from .engine import Engine

    if fmt not in FORMATS:
        raise ConfigError(f"--format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ConfigError(f"--seed must be a non-negative integer, got {seed!r}")
    sc: Scenario = load_scenario(scenario, scale=scale, seed=seed)
    out = Path(out)
    events = out / "events"
    events.mkdir(parents=True, exist_ok=True)
    for old in events.glob("part-*"):
        old.unlink()
    eng = Engine(sc, seed)
    bounds = eng.chunk_bounds()
    files: list[Path] = []
    ctx = _progress(progress, len(bounds))
    with ctx as bar:
        task = bar.add_task(f"simulate {scenario}", total=len(bounds)) if bar else None
        for i, (lo, hi) in enumerate(bounds):
            path = events / f"part-{i:05d}.{fmt}"
            _write_chunk(eng.chunk(i, lo, hi), path, fmt)
            files.append(path)
            if bar:
                bar.advance(task)
    accounts = eng.accounts_frame()
    accounts.with_columns(pl.col("created_at").dt.to_string("%Y-%m-%dT%H:%M:%SZ")) \
        .write_csv(out / "accounts.csv")
    pl.DataFrame({
        "model": list(sc.old_models) + [sc.new_model],
        "released_at": list(sc.old_models.values())
        + [pl.Series([sc.release_us]).cast(pl.Datetime("us", "UTC"))
           .dt.to_string("%Y-%m-%dT%H:%M:%SZ")[0]],
    }).write_csv(out / "releases.csv")
    truth = eng.truth_frame()
    truth.select("account_id", "label", "campaign").write_csv(out / "labels.csv")
    truth.write_csv(out / "truth.csv")
    pl.DataFrame({"account_id": eng.allowlisted()}).write_csv(out / "allowlist.csv")
    dump_scenario(sc, out / "scenario.yaml")
    files += [out / n for n in ("accounts.csv", "releases.csv", "labels.csv", "truth.csv",
                                "allowlist.csv", "scenario.yaml")]
    attack = Counter(truth.filter(pl.col("label") == "attack")["campaign"].to_list())
    return SimResult(out=out, scenario=scenario, scale=scale, seed=seed,
                     exchanges=eng.n_exchanges, accounts=eng.n_accounts,
                     attack_accounts=dict(attack),
                     segment_accounts=dict(Counter(truth["segment"].to_list())), files=files)


class _NoBar:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


def _progress(enabled: bool, total: int):
    if not enabled:
        return _NoBar()
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    return Progress("[progress.description]{task.description}", BarColumn(),
                    MofNCompleteColumn(), TimeElapsedColumn(), transient=True)
