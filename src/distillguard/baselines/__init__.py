"""Peer detectors that distillguard is compared against.

Each is a function ``run_<name>(events, accounts) -> DataFrame[account_id, score, verdict,
cluster_id, reasons]`` over the normalised frames of :func:`distillguard.read.read_log`
(``events``: LazyFrame with ``schema.EVENT_SCHEMA``; ``accounts``: ``schema.ACCOUNT_SCHEMA``).
Their output has the columns of ``accounts.csv`` (contract.md §2), one row per account seen in
either frame.

- ``volume``: the status quo of LLM gateways, a per-account daily-volume threshold.
- ``iforest``: scikit-learn IsolationForest on per-account traffic aggregates.
- ``fraudar``: FRAUDAR (Hooi et al., KDD 2016) dense blocks in the account–attribute graph.
"""

from __future__ import annotations

from collections.abc import Callable

import polars as pl

from .fraudar import run_fraudar
from .iforest import run_iforest
from .volume import run_volume

BASELINES: dict[str, Callable[[pl.LazyFrame, pl.DataFrame], pl.DataFrame]] = {
    "volume": run_volume,
    "iforest": run_iforest,
    "fraudar": run_fraudar,
}


def run_all(events: pl.LazyFrame | pl.DataFrame, accounts: pl.DataFrame | None = None
            ) -> dict[str, pl.DataFrame]:
    """Run every baseline; ``{name: predictions}`` in the order of :data:`BASELINES`."""
    return {name: fn(events, accounts) for name, fn in BASELINES.items()}


__all__ = ["BASELINES", "run_all", "run_fraudar", "run_iforest", "run_volume"]
