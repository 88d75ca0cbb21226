"""Contract records (dicts, e.g. a decision request) → the normalised event frame.

Uses the reader's public record normaliser (``read.normalize_record``), so a record means the same online as in a log file;
a bad record raises :class:`~distillguard.errors.InputError` naming its position and field.
"""

from __future__ import annotations

import polars as pl

from ..errors import InputError
from ..read import InvalidRecord, normalize_record, records_frame


def normalize_records(records: list[dict], *, source: str = "request") -> pl.DataFrame:
    """EVENT_SCHEMA columns (plus inline account fields) for a list of contract records."""
    rows = []
    for i, rec in enumerate(records):
        if not isinstance(rec, dict):
            raise InputError("record is not a JSON object", path=source, row=i)
        try:
            rows.append(normalize_record(rec))
        except InvalidRecord as bad:
            raise InputError(bad.msg, path=source, row=i, field=bad.field,
                             reason=bad.reason) from None
    return records_frame(rows)


def check_record(rec: dict, *, source: str = "request", row: int = 0) -> None:
    """Validate one contract record without building a frame (cheap, per request)."""
    if not isinstance(rec, dict):
        raise InputError("record is not a JSON object", path=source, row=row)
    try:
        normalize_record(rec)
    except InvalidRecord as bad:
        raise InputError(bad.msg, path=source, row=row, field=bad.field,
                         reason=bad.reason) from None
