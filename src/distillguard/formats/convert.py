"""``distillguard convert``: write any accepted log in the contract form (Parquet)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from ..errors import ConfigError, InputError
from ..read import (
    _PY_COLS,
    InvalidCounts,
    InvalidRecord,
    _converter,
    _Ctx,
    _mapped_records,
    normalize_record,
    _py_rows_parquet,
    expand_paths,
)

_TS = pa.timestamp("us", tz="UTC")
#: Columns of the contract Parquet written by :func:`convert`; nested fields are JSON strings.
CONTRACT_ARROW = pa.schema([
    ("ts", _TS), ("account_id", pa.string()), ("request_id", pa.string()),
    ("api_key_id", pa.string()), ("model", pa.string()), ("messages", pa.string()),
    ("prompt", pa.string()), ("system", pa.string()), ("tools", pa.string()),
    ("response", pa.string()), ("input_tokens", pa.int64()), ("output_tokens", pa.int64()),
    ("max_tokens", pa.int64()), ("temperature", pa.float64()), ("thinking", pa.int64()),
    ("logprobs", pa.int64()), ("status", pa.int32()), ("ip", pa.string()), ("asn", pa.int64()),
    ("country", pa.string()), ("user_agent", pa.string()), ("tls_fingerprint", pa.string()),
    ("created_at", _TS), ("tier", pa.string()), ("email_domain", pa.string()),
    ("payment_fingerprint", pa.string()), ("billing_country", pa.string()),
    ("verified", pa.bool_()),
])
_RAW = ("messages", "prompt", "tools")
_IDX = {c: i for i, c in enumerate(_PY_COLS)}


@dataclass
class ConvertResult:
    out: Path
    n_events: int
    files: dict[str, str]                 # input file -> format it was read as
    invalid: dict[str, int] = field(default_factory=dict)

    def summary(self) -> str:
        fmts = sorted(set(self.files.values()))
        s = (f"wrote {self.n_events:,} exchanges from {len(self.files)} file(s) "
             f"({', '.join(fmts)}) to {self.out}")
        if self.invalid:
            s += f"; skipped invalid records: {self.invalid}"
        return s


def _json(v: object) -> str | None:
    if v is None:
        return None
    return v if type(v) is str else orjson.dumps(v).decode()


def _row(rec: dict, t: tuple) -> dict:
    row = {c: t[_IDX[c]] for c in CONTRACT_ARROW.names if c in _IDX and c not in _RAW}
    row["messages"] = _json(rec.get("messages"))
    row["tools"] = _json(rec.get("tools"))
    p = rec.get("prompt")
    row["prompt"] = p if p else None
    row["system"] = t[_IDX["system"]] if rec.get("system") is not None else None
    return row


def _table(rows: list[dict]) -> pa.Table:
    cols = {}
    for f in CONTRACT_ARROW:
        vals = [r.get(f.name) for r in rows]
        if f.type == _TS:
            cols[f.name] = pa.array(vals, pa.int64()).cast(_TS)
        else:
            cols[f.name] = pa.array(vals, f.type)
    return pa.table(cols, schema=CONTRACT_ARROW)


def convert(paths, out, *, to: str = "contract", format: str = "auto",
            account_from: str | None = None, ts_from: str | None = None,
            skip_invalid: bool = False, batch_rows: int = 100_000) -> ConvertResult:
    """Read ``paths`` in any accepted format and write the contract form to ``out`` (Parquet).

    ``messages`` and ``tools`` are written as JSON strings (contract.md §1 allows them), scalar
    fields already coerced (``ts`` as timestamp[us, UTC]); reading the result back gives the
    same normalised events as reading the inputs. Invalid records stop the run
    (:class:`InputError`) or, with ``skip_invalid``, are counted in the result.
    """
    if to != "contract":
        raise ConfigError(f"unknown target {to!r}: only 'contract' is supported")
    out = Path(out)
    files = expand_paths(paths, format=format)
    if out.resolve() in {f.resolve() for f in files}:
        raise ConfigError(f"--out {out} is one of the inputs")
    invalid = InvalidCounts()
    ctx = _Ctx(skip_invalid, invalid, batch_rows, format=format, account_from=account_from,
               ts_from=ts_from)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".part")
    n = 0
    try:
        with pq.ParquetWriter(tmp, CONTRACT_ARROW, compression="zstd") as w:
            rows: list[dict] = []
            for path in files:
                for rec, t in _records(path, ctx):
                    rows.append(_row(rec, t))
                    if len(rows) >= ctx.batch_rows:
                        w.write_table(_table(rows))
                        n += len(rows)
                        rows = []
            if rows:
                w.write_table(_table(rows))
                n += len(rows)
        if ctx.records == 0:
            raise InputError("no records: the input is empty")
        os.replace(tmp, out)
    finally:
        if tmp.exists():
            tmp.unlink()
    return ConvertResult(out=out, n_events=n, files=dict(ctx.formats),
                         invalid=invalid.as_dict())


def _records(path: Path, ctx: _Ctx):
    if not os.access(path, os.R_OK):
        raise InputError("file is not readable (permission denied)", path=str(path))
    if not path.name.endswith(".parquet"):
        yield from _mapped_records(path, ctx, _converter(path, ctx))
        return
    if ctx.format not in ("auto", "contract") or ctx.account_from or ctx.ts_from:
        raise InputError("Parquet inputs must hold contract records (formats and "
                         "--account-from / --ts-from apply to JSON Lines)", path=str(path))
    ctx.formats[str(path)] = "contract"
    try:
        pf = pq.ParquetFile(path)
        for g in range(pf.metadata.num_row_groups):
            off = 0
            for batch in pf.iter_batches(batch_size=ctx.batch_rows, row_groups=[g]):
                for i, rec in enumerate(_py_rows_parquet(batch)):
                    ctx.records += 1
                    try:
                        yield rec, normalize_record(rec)
                    except InvalidRecord as b:
                        ctx.bad(path, b.reason, b.field, b.msg, row_group=g, row=off + i)
                off += batch.num_rows
    except (OSError, pa.ArrowException) as e:
        raise InputError(f"cannot read Parquet file: {e}", path=str(path)) from None
