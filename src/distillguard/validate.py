"""``distillguard validate``: check traffic logs against the contract and summarise them."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path

import polars as pl

from .read import (
    PRESENCE_FIELDS,
    InvalidCounts,
    _Ctx,
    _iter_frames,
    expand_paths,
    read_accounts,
    read_releases,
)
from .schema import ACCOUNT_FIELDS

# Raw presence of these fields is carried by internal flag columns (their normalised column
# is derived and may be filled from other fields).
_FLAG_OF = {"messages": "_has_messages", "prompt": "_has_prompt", "system": "_has_system",
            "tools": "_has_tools"}


@dataclass
class ValidationSummary:
    """What ``validate`` found: counts, time range, field presence, invalid records."""

    files: list[str]
    records: int                      # valid records read
    invalid: dict[str, int]           # skipped records by reason
    invalid_examples: dict[str, str]  # one located example per reason
    accounts: int                     # distinct account_id among valid records
    models: int                       # distinct model names
    first_ts: str | None
    last_ts: str | None
    presence: dict[str, int] = field(default_factory=dict)  # field -> records with it
    accounts_table_rows: int | None = None
    releases_rows: int | None = None

    @property
    def invalid_total(self) -> int:
        return sum(self.invalid.values())

    def presence_pct(self) -> dict[str, float]:
        n = max(self.records, 1)
        return {k: round(100.0 * v / n, 2) for k, v in self.presence.items()}

    def to_dict(self) -> dict:
        d = asdict(self)
        d["invalid_total"] = self.invalid_total
        d["presence_pct"] = self.presence_pct()
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    def print(self, console=None) -> None:
        """Render the summary as rich tables on stdout."""
        from rich.console import Console
        from rich.table import Table

        console = console or Console()
        head = Table(title="distillguard validate", show_header=False)
        head.add_column("item", style="bold")
        head.add_column("value")
        head.add_row("files", str(len(self.files)))
        head.add_row("valid records", f"{self.records:,}")
        head.add_row("invalid records (skipped)", f"{self.invalid_total:,}")
        head.add_row("accounts", f"{self.accounts:,}")
        head.add_row("models", f"{self.models:,}")
        head.add_row("time range", f"{self.first_ts or '-'} .. {self.last_ts or '-'}")
        if self.accounts_table_rows is not None:
            head.add_row("accounts table rows", f"{self.accounts_table_rows:,}")
        if self.releases_rows is not None:
            head.add_row("releases rows", f"{self.releases_rows:,}")
        console.print(head)
        pres = Table(title="optional field presence")
        pres.add_column("field")
        pres.add_column("records", justify="right")
        pres.add_column("%", justify="right")
        pct = self.presence_pct()
        for k, v in self.presence.items():
            pres.add_row(k, f"{v:,}", f"{pct[k]:.1f}")
        console.print(pres)
        if self.invalid:
            bad = Table(title="invalid records by reason")
            bad.add_column("reason")
            bad.add_column("count", justify="right")
            bad.add_column("first example")
            for k, v in self.invalid.items():
                bad.add_row(k, f"{v:,}", self.invalid_examples.get(k, ""))
            console.print(bad)


def _iso(v) -> str | None:
    return v.isoformat() if isinstance(v, datetime) else None


def validate(paths, *, accounts=None, releases=None, skip_invalid: bool = False,
             batch_rows: int = 100_000, format: str = "auto", account_from: str | None = None,
             ts_from: str | None = None) -> ValidationSummary:
    """Read ``paths`` through the reader and summarise them (no cache is written).

    Raises :class:`~distillguard.errors.InputError` at the first invalid record unless
    ``skip_invalid``; the accounts table and releases CSV are fully checked when given.
    ``format`` / ``account_from`` / ``ts_from``: see :mod:`distillguard.formats`.
    """
    files = expand_paths(paths, format=format)
    acc_rows = len(read_accounts(accounts)) if accounts is not None else None
    rel_rows = len(read_releases(releases)) if releases is not None else None
    invalid = InvalidCounts()
    ctx = _Ctx(skip_invalid, invalid, batch_rows, format=format, account_from=account_from,
               ts_from=ts_from)
    presence = dict.fromkeys(PRESENCE_FIELDS, 0)
    pres_exprs = [
        (pl.col(_FLAG_OF[f]) if f in _FLAG_OF else pl.col(f).is_not_null()).sum().alias(f)
        for f in PRESENCE_FIELDS
    ]
    ids = pl.Series("account_id", [], dtype=pl.String)
    models = pl.Series("model", [], dtype=pl.String)
    pending: list[pl.Series] = []
    records = 0
    first = last = None
    for _, frame in _iter_frames(files, ctx):
        records += len(frame)
        row = frame.select(*pres_exprs, _min=pl.col("ts").min(), _max=pl.col("ts").max()).row(
            0, named=True)
        for f in PRESENCE_FIELDS:
            presence[f] += int(row[f] or 0)
        if row["_min"] is not None:
            first = row["_min"] if first is None else min(first, row["_min"])
            last = row["_max"] if last is None else max(last, row["_max"])
        pending.append(frame["account_id"].unique())
        models = pl.concat([models, frame["model"].drop_nulls().unique()]).unique()
        if len(pending) >= 16:
            ids = pl.concat([ids, *pending]).unique()
            pending = []
    if pending:
        ids = pl.concat([ids, *pending]).unique()
    # Account fields that never appear inline are not worth a row of zeros unless given.
    presence = {k: v for k, v in presence.items() if k not in ACCOUNT_FIELDS or v > 0}
    return ValidationSummary(
        files=[str(Path(f)) for f in files], records=records, invalid=invalid.as_dict(),
        invalid_examples=dict(sorted(invalid.examples.items())), accounts=len(ids),
        models=len(models), first_ts=_iso(first), last_ts=_iso(last), presence=presence,
        accounts_table_rows=acc_rows, releases_rows=rel_rows,
    )
