"""Incremental ``detect``: the state a daily run keeps so the next run need not reread history.

``detect --state DIR`` loads ``DIR`` (when present) before reading the new log and rewrites it
afterwards. The state holds what the stages need from earlier logs, in the form they need it:

- ``events.parquet`` — the normalised events *without their text* (``prompt``, ``system``,
  ``response``, ``request_id`` dropped): the per-account behavioural features, the linking
  incidences and the cluster evidence are recomputed over history + new events, so they are
  exact, and reading this cache costs a fraction of re-parsing the raw logs (no decoding,
  validation or message flattening; no prompt text);
- ``sample.parquet`` — each account's prompt sample with its sampling hash. The sample is a
  bottom-k sketch (the ``max_prompts`` rows with the smallest seeded hash), and bottom-k
  sketches merge exactly: the k smallest of (old sample ∪ new log's sample) are the k smallest
  of all rows. Content classification and template mining then run on the merged sample;
- ``accounts.parquet`` — account fields given inline on events (first non-null value per
  account and field, earlier logs first) and ``releases.parquet`` — each model's first use;
- ``state.json`` — format version, sampling parameters, events and invalid-record counts.

Result: detect(day 2, state after day 1) == detect(day 1 + day 2) when the logs are given in
time order (tests/test_state.py). Exact, not approximate: no feature is estimated from a
summary. The price is that the event history (without text) grows with the log; a summary of
fixed size per account would make ``median_gap_s`` and the ``n_*`` distinct counts approximate.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from .errors import ConfigError
from .schema import ACCOUNT_SCHEMA, EVENT_SCHEMA, TS

__all__ = ["State", "load_state", "write_state", "TEXT_COLUMNS"]

FORMAT = 1
#: event columns not kept in the state (only the prompt sample needs text)
TEXT_COLUMNS = ("prompt", "system", "response", "request_id")


@dataclass
class State:
    """A loaded state directory (frames are lazy where they can be large)."""

    path: Path
    events: pl.LazyFrame          # EVENT_SCHEMA without TEXT_COLUMNS
    sample: pl.DataFrame          # sampled events + ``_h`` (the sampling hash)
    inline_accounts: pl.DataFrame  # ACCOUNT_SCHEMA, first non-null inline values
    first_seen: pl.DataFrame      # model, released_at
    n_events: int
    invalid: dict[str, int]
    max_prompts: int
    seed: int

    def with_text(self) -> pl.LazyFrame:
        """History events in the full EVENT_SCHEMA (text columns null)."""
        return self.events.with_columns(
            [pl.lit(None, dtype=EVENT_SCHEMA[c]).alias(c) for c in TEXT_COLUMNS]
        ).select(list(EVENT_SCHEMA))


def load_state(path, *, max_prompts: int, seed: int) -> State | None:
    """The state in directory ``path``, or None when there is none yet."""
    path = Path(path)
    meta_file = path / "state.json"
    if not meta_file.is_file():
        if path.exists() and any(path.iterdir()):
            raise ConfigError(f"{path}: not a distillguard state directory (no state.json)")
        return None
    try:
        meta = json.loads(meta_file.read_text())
    except (OSError, ValueError) as e:
        raise ConfigError(f"{meta_file}: unreadable state: {e}") from None
    if meta.get("format") != FORMAT:
        raise ConfigError(f"{meta_file}: state format {meta.get('format')!r}, "
                          f"this version reads {FORMAT}")
    if (meta.get("max_prompts"), meta.get("seed")) != (max_prompts, seed):
        raise ConfigError(f"{meta_file}: state was built with max_prompts="
                          f"{meta.get('max_prompts')}, seed={meta.get('seed')}; this run uses "
                          f"max_prompts={max_prompts}, seed={seed} (start a new state)")
    return State(
        path=path,
        events=pl.scan_parquet(path / "events.parquet"),
        sample=pl.read_parquet(path / "sample.parquet"),
        inline_accounts=pl.read_parquet(path / "accounts.parquet"),
        first_seen=pl.read_parquet(path / "releases.parquet"),
        n_events=int(meta["n_events"]),
        invalid={k: int(v) for k, v in meta.get("invalid", {}).items()},
        max_prompts=max_prompts, seed=seed,
    )


def write_state(path, *, events: pl.LazyFrame, sample: pl.DataFrame,
                inline_accounts: pl.DataFrame, first_seen: pl.DataFrame, n_events: int,
                invalid: dict[str, int], max_prompts: int, seed: int) -> Path:
    """Write a state directory (into a sibling temporary directory, then swapped in)."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    keep = [c for c in EVENT_SCHEMA if c not in TEXT_COLUMNS]
    events.select(keep).sink_parquet(tmp / "events.parquet", compression="zstd")
    sample.write_parquet(tmp / "sample.parquet")
    inline_accounts.select(list(ACCOUNT_SCHEMA)).write_parquet(tmp / "accounts.parquet")
    first_seen.select(pl.col("model").cast(pl.String), pl.col("released_at").cast(TS)
                      ).write_parquet(tmp / "releases.parquet")
    (tmp / "state.json").write_text(json.dumps({
        "format": FORMAT, "n_events": n_events, "invalid": invalid,
        "max_prompts": max_prompts, "seed": seed}, indent=1) + "\n")
    old = path.with_name(path.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if path.exists():
        os.replace(path, old)
    os.replace(tmp, path)
    shutil.rmtree(old, ignore_errors=True)
    return path
