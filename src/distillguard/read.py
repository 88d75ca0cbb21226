"""Read traffic logs (contract.md §1) into the normalised frames of :mod:`distillguard.schema`.

Containers are chosen by file name (``*.jsonl``, ``*.jsonl.gz``, ``*.jsonl.zst``,
``*.parquet``); a directory means every such file below it (sorted; hidden files and names
starting with ``_`` or ``.``, like ``_SUCCESS``, are ignored).

Derivations (documented here once, used by every container):

- ``prompt``: the ``prompt`` field when it is a non-empty string, else the text of the last
  *user turn* of ``messages``. A user turn is a ``role: user`` message that is not made only of
  ``tool_result`` parts (Anthropic style tool results travel in user messages); its text is its
  string content or its text parts joined by ``"\\n"``.
- ``system``: the ``system`` field (string, or a list of text parts joined by ``"\\n"``), else
  the text of the ``system``/``developer`` role messages joined by ``"\\n"``.
- ``n_turns``: messages that are not ``system``/``developer`` messages (so it does not depend
  on where the system prompt travels); ``n_user_turns``: user turns as defined above. Both are
  1 when only ``prompt`` is given (or ``messages`` is empty).
- ``tool_names``: sorted unique names from ``tools`` (``name``, or OpenAI
  ``{type: function, function: {name}}``, or the ``type`` of a built-in tool); ``[]`` when none.
- ``has_tool_results``: a ``tool_result`` part, or a ``role: tool``/``function`` message.
- ``has_image``: an ``image``/``image_url``/``input_image`` part (also inside tool results).
- ``thinking``: bool → 0/1, int → budget, ``{type: enabled, budget_tokens: N}`` → N
  (``{type: disabled}`` → 0). ``logprobs``: bool → 0/1, int → k; ``logprobs: true`` with an
  int ``top_logprobs`` → that k (at least 1).
- ``ts``/``created_at``: RFC 3339 string (no offset = UTC; numeric strings = epoch seconds)
  or a number = Unix epoch seconds.
- ``ip_prefix``: ``/24`` for IPv4, ``/48`` for IPv6 (IPv4-mapped v6 → the v4 /24); null for an
  unparsable address (the ``ip`` itself is kept).
- ``system_hash``/``tools_hash``: first 8 bytes of BLAKE2b (little endian) of the UTF-8 text
  (tools: sorted names joined by ``"\\x1f"``); stable across runs and versions.
- ``account_id``/string ids given as JSON integers are turned into strings; int fields accept
  integer-valued floats and numeric strings. Blank JSONL lines are ignored.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import ipaddress
import math
import os
import queue
import shutil
import tempfile
import threading
import weakref
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import orjson
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from .errors import InputError
from .formats import Converter, RecordError, check_format, sniff
from .schema import (
    ACCOUNT_FIELDS,
    ACCOUNT_SCHEMA,
    EVENT_SCHEMA,
    LABEL_SCHEMA,
    OPTIONAL_EVENT_FIELDS,
    RELEASE_SCHEMA,
    TS,
    conform,
)

__all__ = [
    "LOG_SUFFIXES", "InvalidCounts", "Log", "expand_paths", "iter_event_batches", "read_log",
    "read_accounts", "read_releases", "read_labels", "stable_hash64", "account_partition",
    "auto_partitions", "normalize_record", "records_frame", "InvalidRecord",
]

LOG_SUFFIXES = (".jsonl", ".jsonl.gz", ".jsonl.zst", ".parquet")
#: Also read (as JSON Lines) when named explicitly, or inside directories with an explicit
#: non-contract ``format`` (the OTel collector's file exporter often writes ``*.json``).
JSON_SUFFIXES = (".json", ".json.gz", ".json.zst")
#: Contract fields whose presence (raw value given, non-null) is tracked while reading.
PRESENCE_FIELDS = tuple(OPTIONAL_EVENT_FIELDS) + tuple(ACCOUNT_FIELDS)

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_MAX_EPOCH_S = 253_402_300_799  # 9999-12-31T23:59:59Z
_STR_FIELDS = ("request_id", "api_key_id", "model", "response", "ip", "country", "user_agent",
               "tls_fingerprint")
_INT_FIELDS = ("input_tokens", "output_tokens", "max_tokens", "status", "asn")
_ACC_STR_FIELDS = ("tier", "email_domain", "payment_fingerprint", "billing_country")
_SYSTEM_ROLES = frozenset(("system", "developer"))
_TOOL_ROLES = frozenset(("tool", "function"))
_TEXT_PARTS = frozenset(("text", "input_text", "output_text"))
_IMAGE_PARTS = frozenset(("image", "image_url", "input_image"))
_TOOL_RESULT_PARTS = frozenset(("tool_result", "function_call_output"))
_TRUE = frozenset(("true", "t", "yes", "y", "1", "enabled"))
_FALSE = frozenset(("false", "f", "no", "n", "0", "disabled", ""))
_INT64_MAX = 2**63 - 1

# Internal frame columns that are not in EVENT_SCHEMA: raw presence flags of derived fields.
_FLAG_COLS = ("_has_messages", "_has_prompt", "_has_system", "_has_tools")


# --------------------------------------------------------------------------------------------
# Invalid-record bookkeeping
# --------------------------------------------------------------------------------------------

class InvalidCounts:
    """Counts of skipped records by reason (``malformed_json``, ``missing_ts``, ``bad_ts``,
    ``missing_account_id``, ``missing_prompt``, ``bad_type:<field>``), with one example
    location per reason in :attr:`examples`."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.examples: dict[str, str] = {}

    def add(self, reason: str, n: int = 1, example: str | None = None) -> None:
        self.counts[reason] += n
        if example is not None and reason not in self.examples:
            self.examples[reason] = example

    def merge(self, other: InvalidCounts) -> None:
        for reason, n in other.counts.items():
            self.add(reason, n, other.examples.get(reason))

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def as_dict(self) -> dict[str, int]:
        return dict(sorted(self.counts.items()))

    def __repr__(self) -> str:
        return f"InvalidCounts(total={self.total}, {self.as_dict()})"


class InvalidRecord(Exception):
    """A contract violation found in one record by :func:`normalize_record`.

    ``reason`` is the counting key used by ``--skip-invalid`` (e.g. ``bad_type:temperature``),
    ``field`` the field at fault, ``msg`` the human message. Callers that know the record's
    position turn it into an :class:`~distillguard.errors.InputError`
    (see ``stream.normalize``)."""

    def __init__(self, reason: str, field: str | None, msg: str) -> None:
        self.reason, self.field, self.msg = reason, field, msg


def _short(v: object, n: int = 60) -> str:
    r = repr(v)
    return r if len(r) <= n else r[: n - 3] + "..."


def _tname(v: object) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean",
            int: "an integer", float: "a number"}.get(type(v), type(v).__name__)


def _bad_type(f: str, v: object, want: str) -> InvalidRecord:
    return InvalidRecord(f"bad_type:{f}", f, f"expected {want}, got {_tname(v)} {_short(v)}")


class _Ctx:
    """Reading options and running counters shared by the container readers."""

    def __init__(self, skip_invalid: bool, invalid: InvalidCounts, batch_rows: int,
                 on_bytes: Callable[[int], None] | None = None, *, format: str = "auto",
                 account_from: str | None = None, ts_from: str | None = None) -> None:
        self.format = check_format(format)
        self.account_from = account_from
        self.ts_from = ts_from
        self.formats: dict[str, str] = {}  # file -> format it was read as
        self.skip = skip_invalid
        self.invalid = invalid
        self.batch_rows = max(1, int(batch_rows))
        self.on_bytes = on_bytes
        self.records = 0  # every record met, valid or not

    def bad(self, path: Path, reason: str, field: str | None, msg: str, *, line: int | None = None,
            row_group: int | None = None, row: int | None = None) -> None:
        err = InputError(msg, path=str(path), line=line, row_group=row_group, row=row,
                         field=field, reason=reason)
        if not self.skip:
            raise err
        self.invalid.add(reason, 1, str(err))

    def advance(self, n: int) -> None:
        if self.on_bytes is not None and n:
            self.on_bytes(n)


# --------------------------------------------------------------------------------------------
# Scalar coercion (per value; used by the JSONL path and the Parquet fallback)
# --------------------------------------------------------------------------------------------

def _ts_us(v: object, f: str = "ts") -> int:
    """Microseconds since the epoch (UTC) from an RFC 3339 string or epoch seconds."""
    t = type(v)
    if t is str:
        s = v.strip()
        try:
            dt = datetime.fromisoformat(s)
        except ValueError:
            try:
                return _ts_us(float(s), f)
            except (ValueError, InvalidRecord):
                raise InvalidRecord("bad_ts" if f == "ts" else f"bad_type:{f}", f,
                           f"unparsable timestamp {_short(v)}") from None
        if dt.tzinfo is None:
            dt = dt.replace(tzinfo=timezone.utc)
        d = dt - _EPOCH
        return (d.days * 86400 + d.seconds) * 1_000_000 + d.microseconds
    if t is int or t is float:
        if not (math.isfinite(v) and -_MAX_EPOCH_S <= v <= _MAX_EPOCH_S):
            raise InvalidRecord("bad_ts" if f == "ts" else f"bad_type:{f}", f,
                       f"epoch seconds out of range {_short(v)}")
        return v * 1_000_000 if t is int else round(v * 1e6)
    if isinstance(v, datetime):  # Parquet timestamp columns on the per-row path
        dt = v if v.tzinfo is not None else v.replace(tzinfo=timezone.utc)
        d = dt - _EPOCH
        return (d.days * 86400 + d.seconds) * 1_000_000 + d.microseconds
    raise InvalidRecord("bad_ts" if f == "ts" else f"bad_type:{f}", f,
               f"unparsable timestamp: expected RFC 3339 string or epoch seconds, "
               f"got {_tname(v)} {_short(v)}")


def _as_str(v: object, f: str) -> str | None:
    if v is None or type(v) is str:
        return v
    if type(v) is int:
        return str(v)
    raise _bad_type(f, v, "a string")


def _as_int(v: object, f: str) -> int | None:
    if v is None:
        return None
    t = type(v)
    if t is int:
        if -_INT64_MAX <= v <= _INT64_MAX:
            return v
    elif t is float:
        if math.isfinite(v) and v.is_integer() and abs(v) < 2**62:
            return int(v)
    elif t is str:
        try:
            return _as_int(int(v.strip()), f)
        except (ValueError, InvalidRecord):
            pass
    raise _bad_type(f, v, "an integer")


def _as_float(v: object, f: str) -> float | None:
    if v is None:
        return None
    t = type(v)
    if t is float or t is int:
        return float(v)
    if t is str:
        try:
            return float(v)
        except ValueError:
            pass
    raise _bad_type(f, v, "a number")


def _as_bool(v: object, f: str) -> bool | None:
    if v is None or type(v) is bool:
        return v
    if type(v) is int and v in (0, 1):
        return bool(v)
    if type(v) is str:
        s = v.strip().lower()
        if s in _TRUE:
            return True
        if s in _FALSE:
            return False
    raise _bad_type(f, v, "a boolean")


def _flag_int(v: object, f: str) -> int | None:
    """thinking / logprobs: bool → 0/1, int → budget/k, Anthropic dict → budget."""
    if v is None:
        return None
    t = type(v)
    if t is bool:
        return int(v)
    if t is int and v >= 0:
        return v
    if t is float and v >= 0 and v.is_integer():
        return int(v)
    if t is dict:
        kind = v.get("type")
        if kind == "disabled" or v.get("enabled") is False:
            return 0
        budget = v.get("budget_tokens")
        if type(budget) is int and budget >= 0:
            return max(budget, 1)
        return 1
    if t is str:
        s = v.strip().lower()
        if s in _TRUE:
            return 1
        if s in _FALSE:
            return 0
        if s.isdigit():
            return int(s)
    raise _bad_type(f, v, "a boolean or an integer")


# --------------------------------------------------------------------------------------------
# Nested fields (messages, system, tools)
# --------------------------------------------------------------------------------------------

def _content(content: object) -> tuple[str | None, bool, bool, bool]:
    """(text, has_image, has_tool_result, only_tool_results) of one message content."""
    if content is None:
        return None, False, False, False
    if type(content) is str:
        return content, False, False, False
    if type(content) is dict:
        content = [content]
    if type(content) is not list:
        raise _bad_type("messages", content, "content as a string or a list of parts")
    texts: list[str] = []
    img = tr = False
    for p in content:
        if type(p) is str:
            texts.append(p)
            continue
        if type(p) is not dict:
            raise _bad_type("messages", p, "a content part object")
        kind = p.get("type")
        if kind in _TEXT_PARTS or (kind is None and type(p.get("text")) is str):
            x = p.get("text")
            if type(x) is str:
                texts.append(x)
        elif kind in _IMAGE_PARTS:
            img = True
        elif kind in _TOOL_RESULT_PARTS:
            tr = True
            inner = p.get("content")
            if type(inner) is list:
                img = img or any(type(q) is dict and q.get("type") in _IMAGE_PARTS for q in inner)
    return ("\n".join(texts) if texts else None), img, tr, (tr and not texts)


def _messages(msgs: object) -> tuple[str | None, str | None, int, int, bool, bool]:
    """(prompt, system, n_turns, n_user_turns, has_tool_results, has_image) of ``messages``."""
    if type(msgs) is not list:
        raise _bad_type("messages", msgs, "a list of {role, content}")
    prompt = None
    sys_texts: list[str] = []
    n_turns = n_user = 0
    tr = img = False
    for m in msgs:
        if type(m) is not dict:
            raise _bad_type("messages", m, "a message object {role, content}")
        role = m.get("role")
        text, i, t, only_tr = _content(m.get("content"))
        img |= i
        tr |= t
        if role in _SYSTEM_ROLES:
            if text is not None:
                sys_texts.append(text)
            continue
        n_turns += 1
        if role in _TOOL_ROLES:
            tr = True
        elif role == "user" and not only_tr:
            n_user += 1
            if text is not None:
                prompt = text
    return prompt, ("\n".join(sys_texts) if sys_texts else None), n_turns, n_user, tr, img


def _system(v: object) -> str | None:
    if v is None or type(v) is str:
        return v
    if type(v) is list:
        text, _, _, _ = _content(v)
        return text
    raise _bad_type("system", v, "a string or a list of text parts")


def _tools(v: object) -> str:
    """Sorted unique tool names joined by ``"\\x1f"`` ("" when none)."""
    if v is None:
        return ""
    if type(v) is not list:
        raise _bad_type("tools", v, "a list of tool definitions")
    names = set()
    for t in v:
        if type(t) is not dict:
            raise _bad_type("tools", t, "a tool definition object")
        n = t.get("name")
        if n is None:
            fn = t.get("function")
            if type(fn) is dict:
                n = fn.get("name")
        if n is None and t.get("type") not in (None, "function"):
            n = t.get("type")
        if type(n) is str and n:
            names.add(n)
    return "\x1f".join(sorted(names))


# Column order of the per-record tuples built by normalize_record (ts and created_at as epoch µs).
_PY_COLS = (
    "ts", "account_id", "request_id", "api_key_id", "model", "prompt", "system", "n_turns",
    "n_user_turns", "tool_names", "has_tool_results", "has_image", "response", "input_tokens",
    "output_tokens", "max_tokens", "temperature", "thinking", "logprobs", "status", "ip", "asn",
    "country", "user_agent", "tls_fingerprint", *_FLAG_COLS, *ACCOUNT_FIELDS,
)
_PY_DTYPES = {**EVENT_SCHEMA, **ACCOUNT_SCHEMA, "ts": pl.Int64, "created_at": pl.Int64,
              "tool_names": pl.String,
              **{c: pl.Boolean for c in _FLAG_COLS}}


def normalize_record(rec: dict) -> tuple:
    """Validate and normalise one raw contract record (a dict as read from JSON Lines).

    Returns a tuple in the column order of :func:`records_frame`; raises
    :class:`InvalidRecord`. The file readers, the format converters and the online path
    (``stream.normalize``) all use this one function, so a record means the same everywhere."""
    g = rec.get
    ts = g("ts")
    if ts is None:
        raise InvalidRecord("missing_ts", "ts", "missing timestamp")
    ts = _ts_us(ts)
    acc = g("account_id")
    if acc is None or acc == "":
        raise InvalidRecord("missing_account_id", "account_id", "missing account_id")
    if type(acc) is not str:
        if type(acc) is not int or type(acc) is bool:
            raise _bad_type("account_id", acc, "a string")
        acc = str(acc)
    prompt = raw_prompt = g("prompt")
    if prompt is not None and type(prompt) is not str:
        raise _bad_type("prompt", prompt, "a string")
    msgs = g("messages")
    has_msgs = msgs is not None
    if has_msgs:
        m_prompt, m_sys, n_turns, n_user, tr, img = _messages(msgs)
    has_prompt = bool(prompt)
    if not has_msgs or not msgs:
        if not has_prompt:
            raise InvalidRecord("missing_prompt", "prompt", "record has neither messages nor prompt")
        m_prompt = m_sys = None
        n_turns = n_user = 1
        tr = img = False
    if not has_prompt:
        prompt = m_prompt
    system = g("system")
    has_sys = system is not None
    system = _system(system) if has_sys else m_sys
    tools = g("tools")
    tool_names = _tools(tools)
    logprobs = g("logprobs")
    if logprobs is True:
        k = g("top_logprobs")
        logprobs = max(k, 1) if type(k) is int else 1
    else:
        logprobs = _flag_int(logprobs, "logprobs")
    created = g("created_at")
    return (
        ts, acc, _as_str(g("request_id"), "request_id"), _as_str(g("api_key_id"), "api_key_id"),
        _as_str(g("model"), "model"), prompt, system, n_turns, n_user, tool_names, tr, img,
        _as_str(g("response"), "response"), _as_int(g("input_tokens"), "input_tokens"),
        _as_int(g("output_tokens"), "output_tokens"), _as_int(g("max_tokens"), "max_tokens"),
        _as_float(g("temperature"), "temperature"), _flag_int(g("thinking"), "thinking"),
        logprobs, _as_int(g("status"), "status"), _as_str(g("ip"), "ip"),
        _as_int(g("asn"), "asn"), _as_str(g("country"), "country"),
        _as_str(g("user_agent"), "user_agent"), _as_str(g("tls_fingerprint"), "tls_fingerprint"),
        has_msgs, raw_prompt is not None, has_sys, tools is not None,
        None if created is None else _ts_us(created, "created_at"),
        _as_str(g("tier"), "tier"), _as_str(g("email_domain"), "email_domain"),
        _as_str(g("payment_fingerprint"), "payment_fingerprint"),
        _as_str(g("billing_country"), "billing_country"), _as_bool(g("verified"), "verified"),
    )


def records_frame(rows: list[tuple]) -> pl.DataFrame:
    """Event frame (EVENT_SCHEMA + inline account fields) from :func:`normalize_record`
    tuples, built column by column."""
    cols = list(zip(*rows)) if rows else [()] * len(_PY_COLS)
    df = pl.DataFrame([pl.Series(name, list(vals), dtype=_PY_DTYPES[name], strict=False)
                       for name, vals in zip(_PY_COLS, cols)])
    df = df.with_columns(pl.col("ts").cast(pl.Datetime("us")).dt.replace_time_zone("UTC"),
                         pl.when(pl.col("tool_names") != "")
                         .then(pl.col("tool_names").str.split("\x1f"))
                         .otherwise(pl.lit([], dtype=pl.List(pl.String))).alias("tool_names"),
                         pl.col("created_at").cast(pl.Datetime("us")).dt.replace_time_zone("UTC"))
    return _finish(df)


# --------------------------------------------------------------------------------------------
# Batch-level derivations: hashes and IP prefixes over unique values
# --------------------------------------------------------------------------------------------

def stable_hash64(text: str) -> int:
    """Stable unsigned 64-bit hash of a string (BLAKE2b, 8 bytes, little endian)."""
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest(), "little")


def _nulls(name: str, n: int, dtype: pl.DataType) -> pl.Series:
    """An all-null Series (built natively: a Python list of ``None`` is scanned per value)."""
    return pl.repeat(None, n, dtype=dtype, eager=True).alias(name)


def _falses(n: int) -> pl.Series:
    return pl.repeat(False, n, dtype=pl.Boolean, eager=True)


def _map_unique(s: pl.Series, fn: Callable[[str], object], dtype: pl.DataType) -> pl.Series:
    """Apply ``fn`` to the unique non-null values of ``s`` only, and map the results back."""
    u = s.drop_nulls().unique()
    if len(u) == 0:
        return _nulls(s.name, len(s), dtype)
    vals = pl.Series([fn(x) for x in u.to_list()], dtype=dtype)
    return s.replace_strict(u, vals, default=None, return_dtype=dtype)


def _ip_prefix(ip: str) -> str | None:
    try:
        a = ipaddress.ip_address(ip.strip())
    except ValueError:
        return None
    if a.version == 6 and a.ipv4_mapped is not None:
        a = a.ipv4_mapped
    if a.version == 4:
        return f"{ipaddress.IPv4Address(int(a) & 0xFFFFFF00)}/24"
    return f"{ipaddress.IPv6Address(int(a) & ~((1 << 80) - 1))}/48"


_OCTET = r"(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_V4_RE = rf"^{_OCTET}\.{_OCTET}\.{_OCTET}\.{_OCTET}$"


def _ip_prefix_col(s: pl.Series) -> pl.Series:
    """ip_prefix of the unique addresses (they repeat), mapped back: canonical dotted IPv4
    vectorised; anything else via ``ipaddress``."""
    u = s.drop_nulls().unique()
    if len(u) == 0:
        return _nulls("ip_prefix", len(s), pl.String)
    is4 = u.str.contains(_V4_RE)
    v4 = u.str.extract(r"^(\d+\.\d+\.\d+)\.", 1) + ".0/24"
    other = pl.select(pl.when(~is4).then(u)).to_series()
    rest = _map_unique(other, _ip_prefix, pl.String)
    pref = pl.select(pl.when(is4).then(v4).otherwise(rest)).to_series()
    return s.replace_strict(u, pref, default=None, return_dtype=pl.String).alias("ip_prefix")


def _tools_hash(names: list[str]) -> int | None:
    """``tools_hash`` of a sorted tool-name list (None when empty)."""
    return stable_hash64("\x1f".join(names)) if names else None


def _finish(df: pl.DataFrame) -> pl.DataFrame:
    """Add hashes and ip_prefix, and order/cast columns: EVENT_SCHEMA, account fields, flags.

    ``tools_hash`` is computed from ``tool_names`` unless ``df`` has it already."""
    df = df.with_columns(tool_names=pl.col("tool_names").fill_null([]))
    if "tools_hash" not in df.columns:
        tool_key = (pl.when(pl.col("tool_names").list.len() > 0)
                    .then(pl.col("tool_names").list.join("\x1f")))
        keys = df.select(tool_key.alias("k"))["k"]
        df = df.with_columns(tools_hash=_map_unique(keys, stable_hash64, pl.UInt64))
    df = df.with_columns(
        system_hash=_map_unique(df["system"], stable_hash64, pl.UInt64),
        ip_prefix=_ip_prefix_col(df["ip"]),
    )
    return conform(df, {**EVENT_SCHEMA, **ACCOUNT_SCHEMA, **{c: pl.Boolean for c in _FLAG_COLS}})


# --------------------------------------------------------------------------------------------
# JSON Lines
# --------------------------------------------------------------------------------------------

class _CountingReader(io.RawIOBase):
    """Wraps a binary file to report bytes read (compressed bytes for .gz/.zst)."""

    def __init__(self, fh, ctx: _Ctx) -> None:
        self._fh, self._ctx = fh, ctx

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        n = self._fh.readinto(b)
        self._ctx.advance(n or 0)
        return n

    def close(self) -> None:
        self._fh.close()
        super().close()


def _open_lines(path: Path, ctx: _Ctx):
    raw = io.BufferedReader(_CountingReader(open(path, "rb"), ctx), buffer_size=1 << 20)
    name = path.name
    if name.endswith(".gz"):
        return gzip.GzipFile(fileobj=raw, mode="rb")
    if name.endswith(".zst"):
        import zstandard

        return io.BufferedReader(zstandard.ZstdDecompressor().stream_reader(
            raw, read_across_frames=True, closefd=True),
                                 buffer_size=1 << 20)
    return raw


def _sniff_file(path: Path) -> str:
    """Format of a JSON Lines file from its first non-blank line (``contract`` if unparsable)."""
    quiet = _Ctx(False, InvalidCounts(), 1)
    try:
        with _open_lines(path, quiet) as fh:
            for line in fh:
                if line.strip():
                    try:
                        return sniff(orjson.loads(line))
                    except orjson.JSONDecodeError:
                        return "contract"
    except Exception:  # unreadable: the reader reports it with its own message
        return "contract"
    return "contract"


def _converter(path: Path, ctx: _Ctx) -> Converter:
    fmt = _sniff_file(path) if ctx.format == "auto" else ctx.format
    ctx.formats[str(path)] = fmt
    mtime = os.path.getmtime(path) if ctx.ts_from == "mtime" else None
    return Converter(fmt, account_from=ctx.account_from, ts_from=ctx.ts_from, mtime=mtime)


def _numbered_lines(path: Path, ctx: _Ctx) -> Iterator[tuple[int, bytes]]:
    """(1-based line number, line) of a JSON Lines file of any compression; an unopenable
    file or a corrupt stream becomes an ``InputError`` naming the file and the last line."""
    lineno = 0
    try:
        fh = _open_lines(path, ctx)
    except OSError as e:
        raise InputError(f"cannot open: {e.strerror or e}", path=str(path)) from None
    with fh:
        lines = iter(fh)
        while True:
            try:
                line = next(lines)
            except StopIteration:
                return
            except Exception as e:  # corrupt compressed stream, I/O error
                raise InputError(f"cannot read after line {lineno}: {e}",
                                 path=str(path)) from None
            lineno += 1
            yield lineno, line


def _iter_jsonl(path: Path, ctx: _Ctx) -> Iterator[pl.DataFrame]:
    conv = _converter(path, ctx)
    if not conv.identity:
        yield from _iter_jsonl_mapped(path, ctx, conv)
        return
    rows: list[tuple] = []
    loads, JSONDecodeError, norm = orjson.loads, orjson.JSONDecodeError, normalize_record
    for lineno, line in _numbered_lines(path, ctx):
        try:
            rec = loads(line)
        except JSONDecodeError as e:
            if not line.strip():
                continue
            ctx.records += 1
            ctx.bad(path, "malformed_json", None, f"malformed JSON: {e}", line=lineno)
            continue
        ctx.records += 1
        if type(rec) is not dict:
            ctx.bad(path, "malformed_json", None,
                    f"line is not a JSON object but {_tname(rec)}", line=lineno)
            continue
        try:
            rows.append(norm(rec))
        except InvalidRecord as b:
            ctx.bad(path, b.reason, b.field, b.msg, line=lineno)
            continue
        if len(rows) >= ctx.batch_rows:
            yield records_frame(rows)
            rows = []
    if rows:
        yield records_frame(rows)


def _mapped_records(path: Path, ctx: _Ctx, conv: Converter) -> Iterator[tuple[dict, tuple]]:
    """(contract record, normalised tuple) of each valid exchange of a JSON Lines file of
    any format, mapped by ``conv``; invalid ones go to ``ctx.bad``."""
    suffix = "" if conv.format == "contract" else f" ({conv.format} format)"
    for lineno, line in _numbered_lines(path, ctx):
        if not line.strip():
            continue
        try:
            rec = orjson.loads(line)
        except orjson.JSONDecodeError as e:
            ctx.records += 1
            ctx.bad(path, "malformed_json", None, f"malformed JSON: {e}", line=lineno)
            continue
        if type(rec) is not dict:
            ctx.records += 1
            ctx.bad(path, "malformed_json", None,
                    f"line is not a JSON object but {_tname(rec)}", line=lineno)
            continue
        try:
            for out in conv.records(rec):
                ctx.records += 1
                try:
                    if type(out) is RecordError:
                        raise out
                    yield out, normalize_record(out)
                except (InvalidRecord, RecordError) as b:
                    ctx.bad(path, b.reason, b.field, b.msg + suffix, line=lineno)
        except RecordError as b:  # the line as a whole cannot be mapped
            ctx.records += 1
            ctx.bad(path, b.reason, b.field, b.msg + suffix, line=lineno)


def _iter_jsonl_mapped(path: Path, ctx: _Ctx, conv: Converter) -> Iterator[pl.DataFrame]:
    """JSON Lines of another format (or with field overrides), batched as frames."""
    rows: list[tuple] = []
    for _, row in _mapped_records(path, ctx, conv):
        rows.append(row)
        if len(rows) >= ctx.batch_rows:
            yield records_frame(rows)
            rows = []
    if rows:
        yield records_frame(rows)


# --------------------------------------------------------------------------------------------
# Parquet
# --------------------------------------------------------------------------------------------

def _is_str(dt: pl.DataType) -> bool:
    return dt in (pl.String, pl.Categorical) or isinstance(dt, (pl.Categorical, pl.Enum))


def _is_ts_like(dt: pl.DataType) -> bool:
    return (isinstance(dt, pl.Datetime) or dt == pl.Date or dt.is_numeric() or _is_str(dt)
            or dt == pl.Null)


def _struct_fields(dt: pl.DataType) -> dict[str, pl.DataType] | None:
    if isinstance(dt, pl.List) and isinstance(dt.inner, pl.Struct):
        return {f.name: f.dtype for f in dt.inner.fields}
    return None


def _vectorisable(schema: dict[str, pl.DataType]) -> bool:
    """Whether every contract column has a shape the vectorised Parquet path handles."""
    for name, dt in schema.items():
        if dt == pl.Null:
            continue
        if name in ("ts", "created_at"):
            ok = _is_ts_like(dt)
        elif name in ("account_id", *_STR_FIELDS, *_ACC_STR_FIELDS, "prompt", "system"):
            ok = _is_str(dt) or dt.is_integer()
        elif name in (*_INT_FIELDS, "thinking", "logprobs"):
            ok = dt.is_integer() or _is_str(dt) or dt == pl.Boolean and name in (
                "thinking", "logprobs")
        elif name == "temperature":
            ok = dt.is_numeric() or _is_str(dt)
        elif name == "verified":
            ok = dt == pl.Boolean
        elif name == "messages":
            f = _struct_fields(dt)
            ok = (f is not None and _is_str(f.get("role", pl.Null))
                  and _is_str(f.get("content", pl.Null)))
        elif name == "tools":
            f = _struct_fields(dt)
            ok = f is not None and _is_str(f.get("name", pl.Null))
        else:
            continue
        if not ok:
            return False
    return True


def _vec_ts(s: pl.Series, f: str) -> tuple[pl.Series, pl.Series]:
    """(timestamp[us, UTC], bad mask) from a Parquet ts-like column."""
    dt = s.dtype
    if isinstance(dt, pl.Datetime):
        out = (s.dt.replace_time_zone("UTC") if dt.time_zone is None
               else s.dt.convert_time_zone("UTC")).dt.cast_time_unit("us")
        return out, _falses(len(s))
    if dt == pl.Date:
        return s.cast(pl.Datetime("us")).dt.replace_time_zone("UTC"), _falses(len(s))
    if dt == pl.Null:
        return _nulls(s.name, len(s), TS), _falses(len(s))
    if dt.is_numeric():
        x = s.cast(pl.Float64)
        ok = x.is_finite() & (x.abs() <= _MAX_EPOCH_S)
        us = (s.cast(pl.Int64, strict=False) * 1_000_000 if dt.is_integer()
              else (x * 1e6).round().cast(pl.Int64, strict=False))
        us = pl.select(pl.when(ok).then(us)).to_series()
    else:
        def parse(v: str) -> int | None:
            try:
                return _ts_us(v, f)
            except InvalidRecord:
                return None
        us = _map_unique(s.cast(pl.String), parse, pl.Int64)
    bad = s.is_not_null() & us.is_null()
    return us.cast(pl.Datetime("us")).dt.replace_time_zone("UTC"), bad


def _vec_messages(msgs: pl.Series) -> pl.DataFrame:
    """Per-row ``m_prompt`` (last user message with content), ``m_sys_n`` / ``m_sys`` (system
    messages with content: count, texts joined by newlines), ``n_turns`` (non-system
    messages), ``n_user`` and ``tr`` (any tool-role message) of a List(Struct(role, content))
    column.

    One pass over the flattened messages with index arithmetic (row of each message from the
    list lengths), instead of one ``list.eval`` per output: the flat ``content`` is gathered
    only at the chosen indices.
    """
    n = len(msgs)
    lens = msgs.list.len().fill_null(0).to_numpy().astype(np.int64)
    flat = msgs.explode(keep_nulls=False, empty_as_null=False).struct.unnest()
    role = flat["role"].cast(pl.String)
    content = flat["content"].cast(pl.String)
    row = np.repeat(np.arange(n, dtype=np.int64), lens)
    has_c = content.is_not_null().to_numpy()
    is_user = (role == "user").fill_null(False).to_numpy()
    is_sys = role.is_in(list(_SYSTEM_ROLES)).fill_null(False).to_numpy()
    is_tool = role.is_in(list(_TOOL_ROLES)).fill_null(False).to_numpy()

    def count(mask: np.ndarray) -> np.ndarray:
        return np.bincount(row[mask], minlength=n)

    # index of the last user message with content of each row (-1: none)
    last = np.full(n, -1, dtype=np.int64)
    iu = np.flatnonzero(is_user & has_c)
    last[row[iu]] = iu  # later messages of a row overwrite earlier ones
    idx = pl.Series(last)
    m_prompt = content.gather(pl.select(pl.when(idx >= 0).then(idx)).to_series())
    sys_c = is_sys & has_c
    m_sys_n = count(sys_c)
    if (m_sys_n > 1).any():  # several system messages in a row: join their texts
        js = (pl.DataFrame({"r": row[sys_c], "c": content.filter(pl.Series(sys_c))})
              .group_by("r", maintain_order=True).agg(pl.col("c").str.join("\n")))
        m_sys = (pl.DataFrame({"r": np.arange(n, dtype=np.int64)})
                 .join(js, on="r", how="left", maintain_order="left")["c"])
    elif m_sys_n.any():  # at most one per row (the usual case): gather it
        last_sys = np.full(n, -1, dtype=np.int64)
        isy = np.flatnonzero(sys_c)
        last_sys[row[isy]] = isy
        idx_sys = pl.Series(last_sys)
        m_sys = content.gather(pl.select(pl.when(idx_sys >= 0).then(idx_sys)).to_series())
    else:
        m_sys = pl.repeat(None, n, dtype=pl.String, eager=True)
    return pl.DataFrame({
        "m_prompt": m_prompt, "m_sys_n": m_sys_n, "m_sys": m_sys,
        "n_turns": count(~is_sys), "n_user": count(is_user), "tr": count(is_tool) > 0,
    })


def _vec_frame(df: pl.DataFrame) -> tuple[pl.DataFrame, pl.Series]:
    """Normalise a Parquet batch with the vectorised path; returns (frame, reason per row)."""
    n = len(df)
    cols = df.columns
    out: dict[str, pl.Series] = {}
    reasons: list[pl.Series] = []

    def col(name: str) -> pl.Series:
        return df[name] if name in cols else _nulls(name, n, pl.Null)

    def cast(name: str, dtype: pl.DataType) -> pl.Series:
        raw = col(name)
        if raw.dtype == pl.Null:
            return _nulls(name, n, dtype)
        if isinstance(raw.dtype, (pl.Categorical, pl.Enum)):
            raw = raw.cast(pl.String)
        v = raw.cast(dtype, strict=False)
        reasons.append(pl.select(pl.when(raw.is_not_null() & v.is_null())
                                 .then(pl.lit(f"bad_type:{name}"))).to_series())
        return v.alias(name)

    ts_raw = col("ts")
    ts, ts_bad = _vec_ts(ts_raw, "ts")
    acc = cast("account_id", pl.String)
    prompt = cast("prompt", pl.String)
    msgs = col("messages")
    if msgs.dtype == pl.Null:
        msgs = _nulls("messages", n, pl.List(pl.Struct(
            {"role": pl.String, "content": pl.String})))
    has_msgs = msgs.list.len().fill_null(0) > 0
    has_prompt = prompt.fill_null("") != ""
    head = pl.select(
        pl.when(ts_raw.is_null()).then(pl.lit("missing_ts"))
        .when(ts_bad).then(pl.lit("bad_ts"))
        .when(acc.fill_null("") == "").then(
            pl.when(col("account_id").is_null() | (acc == "")).then(pl.lit("missing_account_id"))
            .otherwise(pl.lit("bad_type:account_id")))
        .when(~has_msgs & ~has_prompt).then(pl.lit("missing_prompt"))
    ).to_series()
    reasons.insert(0, head)

    mf = _vec_messages(msgs)
    hm = pl.lit(has_msgs)
    system = cast("system", pl.String)
    tools = col("tools")
    tf = _struct_fields(tools.dtype)
    if tf is not None:
        name = pl.element().struct.field("name")
        if isinstance(tf.get("function"), pl.Struct) and "name" in {
                x.name for x in tf["function"].fields}:
            name = pl.coalesce(name, pl.element().struct.field("function").struct.field("name"))
        # Tool sets repeat a lot: sort/dedupe (and hash) each distinct raw name sequence
        # once. (A filter inside list.eval, or list.unique/sort, cost 10-100x more.)
        keys = pl.select(pl.lit(tools).list.eval(name).list.join("\x1f", ignore_nulls=True)
                         .alias("k"))["k"]
        u = keys.drop_nulls().unique()
        sets = [sorted(set(k.split("\x1f")) - {""}) for k in u.to_list()]
        lut = pl.DataFrame({"k": u, "v": pl.Series(sets, dtype=pl.List(pl.String)),
                            "h": pl.Series([_tools_hash(x) for x in sets], dtype=pl.UInt64)})
        per_row = pl.DataFrame({"k": keys}).join(lut, on="k", how="left", maintain_order="left")
        tool_names, tools_hash = per_row["v"], per_row["h"]
    else:
        tool_names = _nulls("tool_names", n, pl.List(pl.String))
        tools_hash = _nulls("tools_hash", n, pl.UInt64)

    frame = pl.DataFrame({"ts": ts, "account_id": acc}).with_columns(
        prompt=pl.when(pl.lit(has_prompt)).then(pl.lit(prompt)).when(hm).then(mf["m_prompt"]),
        system=pl.when(pl.lit(system).is_not_null()).then(pl.lit(system))
        .when(hm & (mf["m_sys_n"] > 0)).then(mf["m_sys"]),
        n_turns=pl.when(hm).then(mf["n_turns"]).otherwise(1),
        n_user_turns=pl.when(hm).then(mf["n_user"]).otherwise(1),
        has_tool_results=pl.when(hm).then(mf["tr"]).otherwise(False),
        has_image=pl.lit(False),
        tool_names=tool_names,
        tools_hash=tools_hash,
        _has_messages=msgs.is_not_null(),
        _has_prompt=prompt.is_not_null(),
        _has_system=system.is_not_null(),
        _has_tools=tools.is_not_null(),
    )
    for f in _STR_FIELDS + _ACC_STR_FIELDS:
        out[f] = cast(f, pl.String)
    for f in _INT_FIELDS + ("thinking", "logprobs"):
        out[f] = cast(f, pl.Int64)
    out["temperature"] = cast("temperature", pl.Float64)
    out["verified"] = cast("verified", pl.Boolean)
    created, created_bad = _vec_ts(col("created_at"), "created_at")
    out["created_at"] = created
    reasons.append(pl.select(pl.when(created_bad).then(pl.lit("bad_type:created_at"))).to_series())
    for f in ("thinking", "logprobs"):
        reasons.append(pl.select(pl.when(out[f] < 0).then(pl.lit(f"bad_type:{f}"))).to_series())
    frame = frame.with_columns(**out)
    reasons = [r for r in reasons if r.null_count() < n]  # most checks find nothing
    reason = (pl.select(pl.coalesce(reasons)).to_series() if reasons
              else _nulls("reason", n, pl.String))
    return _finish(frame), reason


_JSON_COLS = ("messages", "tools", "system", "thinking", "logprobs")


def _py_rows_parquet(batch: pa.RecordBatch) -> list[dict]:
    """Records of a batch for the per-row fallback, JSON-string nested fields decoded."""
    recs = batch.to_pylist()
    names = batch.schema.names
    decode = [c for c in _JSON_COLS if c in names and (
        pa.types.is_string(batch.schema.field(c).type)
        or pa.types.is_large_string(batch.schema.field(c).type)
        or pa.types.is_string_view(batch.schema.field(c).type))]
    for c in decode:
        for rec in recs:
            v = rec.get(c)
            if type(v) is str:
                s = v.lstrip()
                if c in ("messages", "tools") or s[:1] in ("{", "["):
                    try:
                        rec[c] = orjson.loads(v)
                    except orjson.JSONDecodeError:
                        rec[c] = _BadJSON(v)
    return recs


class _BadJSON(str):
    """A JSON-string column value that did not parse (reported as bad_type)."""


def _iter_parquet(path: Path, ctx: _Ctx) -> Iterator[pl.DataFrame]:
    if ctx.format not in ("auto", "contract"):
        raise InputError(f"format {ctx.format!r} is read from JSON Lines only; Parquet files "
                         "must hold contract records", path=str(path))
    if ctx.account_from or ctx.ts_from:
        raise InputError("--account-from / --ts-from apply to JSON Lines only; Parquet files "
                         "must hold contract columns", path=str(path))
    ctx.formats[str(path)] = "contract"
    try:
        pf = pq.ParquetFile(path)
    except (OSError, pa.ArrowException) as e:
        raise InputError(f"cannot read Parquet file: {e}", path=str(path)) from None
    try:
        polars_schema = dict(pl.from_arrow(pf.schema_arrow.empty_table()).schema)
    except Exception as e:  # an Arrow type polars does not know
        raise InputError(f"unsupported Parquet schema: {e}", path=str(path)) from None
    vec = _vectorisable(polars_schema)
    md = pf.metadata
    size = os.path.getsize(path)
    total_rows = max(md.num_rows, 1)
    for g in range(md.num_row_groups):
        offset = 0
        try:
            batches = _prefetch(pf.iter_batches(batch_size=ctx.batch_rows, row_groups=[g],
                                                use_threads=True))
            for batch in batches:
                ctx.records += batch.num_rows
                yield from _parquet_batch(path, ctx, batch, g, offset, vec)
                offset += batch.num_rows
        except (OSError, pa.ArrowException) as e:
            raise InputError(f"cannot read Parquet row group {g}: {e}", path=str(path)) from None
        ctx.advance(int(size * md.row_group(g).num_rows / total_rows))


def _parquet_batch(path: Path, ctx: _Ctx, batch: pa.RecordBatch, g: int, offset: int,
                   vec: bool) -> Iterator[pl.DataFrame]:
    if vec:
        df = pl.from_arrow(batch)
        assert isinstance(df, pl.DataFrame)
        frame, reason = _vec_frame(df)
        bad = reason.is_not_null()
        if bad.any():
            idx = bad.arg_true()
            if not ctx.skip:
                i = int(idx[0])
                rsn = reason[i]
                fld = "prompt" if rsn == "missing_prompt" else rsn.removeprefix(
                    "bad_").removeprefix("missing_").removeprefix("type:")
                fld = "ts" if rsn in ("missing_ts", "bad_ts") else fld
                v = df[fld][i] if fld in df.columns else None
                msg = {"missing_ts": "missing timestamp",
                       "bad_ts": f"unparsable timestamp {_short(v)}",
                       "missing_account_id": "missing account_id",
                       "missing_prompt": "record has neither messages nor prompt"}.get(
                    rsn, f"wrong type or value {_short(v)}")
                ctx.bad(path, rsn, fld, msg, row_group=g, row=offset + i)
            for i in idx.to_list():
                ctx.bad(path, reason[i], None, reason[i], row_group=g, row=offset + i)
            frame = frame.filter(~bad)
        if len(frame):
            yield frame
        return
    rows: list[tuple] = []
    for i, rec in enumerate(_py_rows_parquet(batch)):
        try:
            for c in _JSON_COLS:
                if type(rec.get(c)) is _BadJSON:
                    raise InvalidRecord(f"bad_type:{c}", c, f"invalid JSON string {_short(str(rec[c]))}")
            rows.append(normalize_record(rec))
        except InvalidRecord as b:
            ctx.bad(path, b.reason, b.field, b.msg, row_group=g, row=offset + i)
    if rows:
        yield records_frame(rows)


# --------------------------------------------------------------------------------------------
# Public API: events
# --------------------------------------------------------------------------------------------

def _is_log_name(name: str) -> bool:
    return name.endswith(LOG_SUFFIXES)


def expand_paths(paths: str | os.PathLike | Iterable[str | os.PathLike], *,
                 format: str = "auto") -> list[Path]:
    """The log files named by ``paths`` (files and directories), in reading order.

    A file named explicitly may also be ``*.json[.gz|.zst]`` (JSON Lines of any format);
    inside a directory such files are taken only with an explicit non-contract ``format``.
    """
    check_format(format)
    dir_suffixes = LOG_SUFFIXES + (JSON_SUFFIXES if format not in ("auto", "contract") else ())
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    out: list[Path] = []
    seen: set[Path] = set()
    for p in map(Path, paths):
        if p.is_dir():
            found = sorted(
                f for f in p.rglob("*")
                if f.name.endswith(dir_suffixes) and f.is_file()
                and not any(part.startswith((".", "_")) for part in f.relative_to(p).parts))
            if not found:
                raise InputError("directory holds no log file (*.jsonl, *.jsonl.gz, "
                                 "*.jsonl.zst, *.parquet)", path=str(p))
        elif p.is_file():
            if not p.name.endswith(LOG_SUFFIXES + JSON_SUFFIXES):
                raise InputError("unknown log container: expected *.jsonl, *.jsonl.gz, "
                                 "*.jsonl.zst, *.parquet (or *.json Lines)", path=str(p))
            found = [p]
        elif p.exists():
            raise InputError("not a regular file or directory", path=str(p))
        else:
            raise InputError("no such file or directory", path=str(p))
        for f in found:
            key = f.resolve()
            if key not in seen:
                seen.add(key)
                out.append(f)
    if not out:
        raise InputError("no input log given")
    return out


def _iter_frames(files: list[Path], ctx: _Ctx) -> Iterator[tuple[Path, pl.DataFrame]]:
    """Internal frames (EVENT_SCHEMA + ACCOUNT_FIELDS + presence flags) per file."""
    for path in files:
        if not os.access(path, os.R_OK):
            raise InputError("file is not readable (permission denied)", path=str(path))
        reader = _iter_parquet if path.name.endswith(".parquet") else _iter_jsonl
        for frame in reader(path, ctx):
            yield path, frame
    if ctx.records == 0:
        raise InputError("no records: the input is empty",
                         path=", ".join(map(str, files)) if len(files) < 4 else None)


def iter_event_batches(paths, *, skip_invalid: bool = False, invalid: InvalidCounts | None = None,
                       batch_rows: int = 100_000, format: str = "auto",
                       account_from: str | None = None,
                       ts_from: str | None = None) -> Iterator[pl.DataFrame]:
    """Stream the events of ``paths`` as frames of at most ``batch_rows`` rows.

    Each frame has exactly the columns of ``schema.EVENT_SCHEMA`` followed by those
    ``schema.ACCOUNT_FIELDS`` given inline in that batch (normalised as ``ACCOUNT_SCHEMA``).
    Invalid records raise :class:`InputError`, or with ``skip_invalid`` are counted in
    ``invalid`` and left out. ``format`` (``auto``: by content, per file), ``account_from``
    and ``ts_from`` are described in :mod:`distillguard.formats`.
    """
    ctx = _Ctx(skip_invalid, invalid if invalid is not None else InvalidCounts(), batch_rows,
               format=format, account_from=account_from, ts_from=ts_from)
    event_cols = list(EVENT_SCHEMA)
    for _, frame in _iter_frames(expand_paths(paths, format=format), ctx):
        acc = [f for f in ACCOUNT_FIELDS if frame[f].null_count() < len(frame)]
        yield frame.select(event_cols + acc)


class _Progress:
    """A rich progress bar over bytes read, on stderr (no-op when disabled)."""

    def __init__(self, enabled: bool, total: int) -> None:
        self._p = None
        if enabled:
            from rich.console import Console
            from rich.progress import (BarColumn, DownloadColumn, Progress, TextColumn,
                                       TimeRemainingColumn, TransferSpeedColumn)
            self._p = Progress(TextColumn("reading"), BarColumn(), DownloadColumn(),
                               TransferSpeedColumn(), TimeRemainingColumn(),
                               console=Console(stderr=True), transient=True)
            self._task = self._p.add_task("read", total=total)

    def __enter__(self) -> _Progress:
        if self._p is not None:
            self._p.start()
        return self

    def __exit__(self, *exc) -> None:
        if self._p is not None:
            self._p.stop()

    def advance(self, n: int) -> None:
        if self._p is not None:
            self._p.advance(self._task, n)


@dataclass
class Log:
    """A read traffic log: events cached as Parquet and scanned lazily.

    ``accounts`` has a row for every account in the accounts table or seen in events (table
    values win, else the first non-null inline value in event order); ``releases`` comes from
    the releases CSV, else each model's first appearance (min ``ts``) in the log. Use as a
    context manager, or call :meth:`close`, to delete a temporary cache.
    """

    events: pl.LazyFrame
    accounts: pl.DataFrame
    releases: pl.DataFrame
    invalid: InvalidCounts
    n_events: int
    files: list[str]
    cache_path: str | None = None
    #: one lazy scan per account partition (see ``read_log(partitions=)``); [events] if one
    parts: list[pl.LazyFrame] = field(default_factory=list)
    #: this log's events only, per partition (== parts unless read with a history)
    new_parts: list[pl.LazyFrame] = field(default_factory=list)
    n_new_events: int | None = None
    #: inline account fields and first model uses as read (before the tables), for the state
    inline_accounts: pl.DataFrame | None = None
    first_seen: pl.DataFrame | None = None
    #: seed of the prompt sample drawn while reading (None: not drawn)
    sample_seed: int | None = None
    #: this log's prompt sample with its hash ``_h`` (``read_log(sample_seed=)``); the cache
    #: then holds no ``prompt`` / ``system`` text (those columns are null in ``parts``)
    sample: pl.DataFrame | None = None
    sample_max: int | None = None
    _tmpdir: str | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if not self.parts:
            self.parts = [self.events]
        if not self.new_parts:
            self.new_parts = self.parts
        if self.n_new_events is None:
            self.n_new_events = self.n_events
        if self._tmpdir is not None:
            self._finalizer = weakref.finalize(self, shutil.rmtree, self._tmpdir, True)

    def close(self) -> None:
        """Delete the temporary event cache (if this Log created one)."""
        if self._tmpdir is not None:
            self._finalizer()

    def __enter__(self) -> Log:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def account_partition(account_id: pl.Expr, partitions: int) -> pl.Expr:
    """Partition number (UInt32, ``0 ≤ p < partitions``) of each account id.

    A seeded 64-bit hash of the id modulo ``partitions``: every event of an account lands in
    the same partition, so per-account stages are pure functions of one partition.
    """
    return (account_id.hash(seed=0x5EED) % partitions).cast(pl.UInt32)


def sample_hash(seed: int) -> pl.Expr:
    """The seeded hash that orders each account's events for the prompt sample
    (``content_signals.sample_prompts``): account id, timestamp and the prompt's first 64
    characters. ``read_log(sample_seed=)`` draws the sample on it while the prompts are in
    memory."""
    return pl.concat_str([pl.col("account_id"), pl.col("ts").cast(pl.String),
                          pl.col("prompt").str.slice(0, 64)], ignore_nulls=True).hash(seed=seed)


#: columns of the prompt sample (``content_signals.sample_prompts``, ``Log.sample``)
SAMPLE_COLUMNS = ("account_id", "ts", "prompt", "system", "tool_names", "model", "system_hash",
                  "tools_hash")
#: text columns of the sample (held as ``Categorical``: a sample repeats prompts many times)
_SAMPLE_TEXT = ("prompt", "system")


class _BottomK:
    """Each account's ``k`` events with the smallest sampling hash ``_h`` (ties: the earlier
    event), kept while the log is read, so that the prompt sample needs no second pass over
    the text and the cache holds no prompts.

    Events are added in input order. Accounts that already hold ``k`` events get a cut-off
    (their ``k``-th smallest hash): later events at or above it can never enter and are
    dropped at once (on random hashes, an account of ``n`` events admits about
    ``k·(1 + ln(n/k))`` of them). What is left is pruned to ``k`` per account whenever it has
    doubled, so the work stays linear and memory bounded by about twice the sample.
    Hashing and keeping run on a worker thread of their own (used as a context manager),
    beside the normalisation on the main thread and the cache writer.
    """

    #: events held before the first prune (later: twice what the last prune kept)
    min_prune = 500_000

    def __init__(self, k: int, columns: list) -> None:
        self.k = max(1, int(k))
        self.columns = columns  # expressions giving SAMPLE_COLUMNS and ``_h``
        self.frames: list[pl.DataFrame] = []
        self.rows = 0
        self.kept = 0
        self.cut: pl.DataFrame | None = None

    def __enter__(self) -> _BottomK:
        self._bg = _Background()
        return self

    def __exit__(self, *exc) -> None:
        self._bg.close(wait=exc[0] is None)

    def add(self, frame: pl.DataFrame) -> None:
        """Queue a normalised event batch (input order)."""
        self._bg.submit(self._add, frame)

    def _add(self, frame: pl.DataFrame) -> None:
        frame = frame.select(self.columns)
        if self.cut is not None:
            frame = (frame.join(self.cut, on="account_id", how="left", maintain_order="left")
                     .filter(pl.col("_cut").is_null() | (pl.col("_h") < pl.col("_cut")))
                     .drop("_cut"))
        if frame.is_empty():
            return
        self.frames.append(frame.with_columns(pl.col(c).cast(pl.Categorical)
                                              for c in _SAMPLE_TEXT))
        self.rows += len(frame)
        if self.rows > max(2 * self.kept, self.min_prune):
            self._prune()

    def _prune(self) -> None:
        if not self.frames:
            return
        kept = (pl.concat(self.frames) if len(self.frames) > 1 else self.frames[0]).filter(
            pl.col("_h").rank("ordinal").over("account_id") <= self.k)
        self.frames, self.rows, self.kept = [kept], len(kept), len(kept)
        self.cut = (kept.group_by("account_id").agg(_cut=pl.col("_h").max(), _n=pl.len())
                    .filter(pl.col("_n") >= self.k).drop("_n"))

    def result(self, schema: dict[str, pl.DataType]) -> pl.DataFrame:
        """The sample sorted by account and time (ties in input order), with ``_h``."""
        self._prune()
        if not self.frames:
            return pl.DataFrame(schema={**schema, **{c: pl.Categorical for c in _SAMPLE_TEXT}})
        return self.frames[0].sort("account_id", "ts", maintain_order=True)


#: events per account partition aimed at by :func:`auto_partitions`
PARTITION_EVENTS = 2_000_000


def auto_partitions(paths, *, format: str = "auto", per_partition: int = PARTITION_EVENTS
                    ) -> int:
    """Account partitions for a log: about one per ``per_partition`` events (at least 1).

    Parquet row counts come from the file footers; JSON Lines are estimated from their size
    (~1 KB per record, ~5 KB when compressed).
    """
    rows = 0
    for f in expand_paths(paths, format=format):
        if f.name.endswith(".parquet"):
            try:
                rows += pq.ParquetFile(f).metadata.num_rows
                continue
            except (OSError, pa.ArrowException):
                pass  # the reader reports it
        size = os.path.getsize(f)
        rows += size // (5000 if f.name.endswith((".gz", ".zst")) else 1000)
    return max(1, math.ceil(rows / per_partition))


_NO_DICT = frozenset(("request_id", "response"))
#: columns that later stages filter on (row-group statistics can skip data); statistics of
#: the others are not written (their min/max cost ~15 % of the cache's write time)
_STATS = ("ts", "account_id", "model")


class _PartitionWriter:
    """Parquet cache writer: one file, or one file per account partition (rows buffered per
    partition to ``batch_rows`` so row groups stay large)."""

    def __init__(self, paths: list[Path], schema: pa.Schema, batch_rows: int) -> None:
        self.schema, self.batch_rows = schema, max(1, batch_rows)
        # no dictionary for the all-distinct columns: trying one costs more than writing.
        # LZ4: uncompressed was faster to write at 1M, but 11 GB at 16M (vs ~3 GB), past
        # what the page cache absorbs; the compression runs on the writer thread
        dic = [c for c in schema.names if c not in _NO_DICT]
        stats = [c for c in _STATS if c in schema.names]
        self.writers = [pq.ParquetWriter(p, schema, compression="lz4", use_dictionary=dic,
                                         write_statistics=stats)
                        for p in paths]
        self.pending: list[list[pl.DataFrame]] = [[] for _ in paths]
        self.rows = [0] * len(paths)

    def _put(self, i: int, frame: pl.DataFrame) -> None:
        # (string views, compat_level=newest, would save a copy but polars 1.44 exported an
        # invalid list<string_view> for a concatenated tool_names column at 16M)
        self._bg.submit(self.writers[i].write_table, frame.to_arrow().cast(self.schema))

    def _flush(self, i: int) -> None:
        if self.pending[i]:
            self._put(i, pl.concat(self.pending[i]))
            self.pending[i], self.rows[i] = [], 0

    def write(self, frame: pl.DataFrame) -> None:
        if len(self.writers) == 1:
            self._put(0, frame)
            return
        part = frame.select(account_partition(pl.col("account_id"), len(self.writers)))
        for (i,), sub in frame.with_columns(_p=part.to_series()).partition_by(
                "_p", as_dict=True, include_key=False, maintain_order=True).items():
            self.pending[i].append(sub)
            self.rows[i] += len(sub)
            if self.rows[i] >= self.batch_rows:
                self._flush(i)

    def __enter__(self) -> _PartitionWriter:
        self._bg = _Background()
        return self

    def __exit__(self, *exc) -> None:
        try:
            if exc[0] is None:
                for i in range(len(self.writers)):
                    self._flush(i)
        finally:
            try:
                self._bg.close(wait=exc[0] is None)
            finally:
                for w in self.writers:
                    w.close()


class _Background:
    """One worker thread running submitted calls in order (bounded queue).

    Arrow's Parquet writer and reader release the GIL, so the cache is encoded and written,
    and the next input batch decoded, while the main thread normalises: read uses both
    cores. The first error is re-raised in the main thread by the next ``submit`` or by
    ``close``.
    """

    def __init__(self, depth: int = 3) -> None:
        self._q: queue.Queue = queue.Queue(maxsize=depth)
        self._err: BaseException | None = None
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def _run(self) -> None:
        while True:
            item = self._q.get()
            if item is None:
                return
            if self._err is None:
                try:
                    item[0](*item[1:])
                except BaseException as e:  # noqa: BLE001 - handed to the main thread
                    self._err = e

    def _check(self) -> None:
        if self._err is not None:
            err, self._err = self._err, None
            raise err

    def submit(self, fn, *args) -> None:
        self._check()
        self._q.put((fn, *args))

    def close(self, wait: bool = True) -> None:
        if not wait:
            self._err = self._err or RuntimeError("cancelled")  # skip what is queued
        self._q.put(None)
        self._t.join()
        if wait:
            self._check()


def _prefetch(it: Iterator, depth: int = 2) -> Iterator:
    """Iterate ``it`` on a background thread, ``depth`` items ahead (errors re-raised here,
    in order)."""
    q: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()
    end = object()

    def run() -> None:
        try:
            for x in it:
                while not stop.is_set():
                    try:
                        q.put((x, None), timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            q.put((end, None))
        except BaseException as e:  # noqa: BLE001 - re-raised by the consumer
            q.put((end, e))

    t = threading.Thread(target=run, daemon=True)
    t.start()
    try:
        while True:
            x, err = q.get()
            if x is end:
                if err is not None:
                    raise err
                return
            yield x
    finally:
        stop.set()
        while t.is_alive():  # unblock a producer waiting on a full queue
            try:
                q.get_nowait()
            except queue.Empty:
                t.join(0.05)


def _merge_accounts(acc: pl.DataFrame, new: pl.DataFrame) -> pl.DataFrame:
    """First non-null value per account and field, ``acc`` (earlier) before ``new``."""
    both = pl.concat([acc, new], how="vertical")
    return both.group_by("account_id", maintain_order=True).agg(
        [pl.col(f).drop_nulls().first() for f in ACCOUNT_FIELDS])


def read_log(paths, *, accounts=None, releases=None, skip_invalid: bool = False,
             cache_dir=None, progress: bool = False, batch_rows: int = 100_000,
             format: str = "auto", account_from: str | None = None,
             ts_from: str | None = None, partitions: int = 1, history=None,
             sample_seed: int | None = None, sample_max: int = 64) -> Log:
    """Read a traffic log (files/directories), an optional accounts table and releases CSV.

    Events are streamed in batches into ``<cache_dir>/events.parquet`` (or a temporary
    directory that :meth:`Log.close` removes), so memory stays bounded by the batch size and
    the number of accounts; ``Log.events`` scans that cache in input order. ``format``,
    ``account_from`` and ``ts_from``: see :func:`iter_event_batches`.

    ``partitions`` > 1 splits the cache by account: ``events-pNNN.parquet`` holds the
    accounts with :func:`account_partition` ``== NNN``, each account's events in input order.
    ``Log.parts`` scans one partition each (per-account stages run partition by partition,
    with bounded memory); ``Log.events`` scans them all (partition order, then input order).

    ``history``: a :class:`distillguard.state.State` of earlier logs (``detect --state``); its
    events (text-free) come before this log's in every partition, its inline account fields
    and first model uses are merged as if it had been read first. ``Log.new_parts`` then scan
    this log's events only (what the prompt sample is drawn from).

    ``sample_seed``: draw this log's prompt sample while reading — for each account the
    ``sample_max`` events with the smallest :func:`sample_hash` of that seed, exactly what
    ``content_signals.sample_prompts(max_prompts=sample_max, seed=sample_seed,
    keep_hash=True)`` returns from the cache — into ``Log.sample``, and leave the ``prompt``
    and ``system`` text out of the cache (null columns): nothing after the sample reads it,
    and it is most of what the cache would write and later decode again.
    """
    files = expand_paths(paths, format=format)
    table = read_accounts(accounts) if accounts is not None else None
    rel = read_releases(releases) if releases is not None else None
    tmpdir = None
    if cache_dir is None:
        tmpdir = tempfile.mkdtemp(prefix="distillguard-")
        cdir = Path(tmpdir)
    else:
        cdir = Path(cache_dir)
        cdir.mkdir(parents=True, exist_ok=True)
    parts = max(1, int(partitions))
    caches = ([cdir / "events.parquet"] if parts == 1
              else [cdir / f"events-p{i:03d}.parquet" for i in range(parts)])
    invalid = InvalidCounts()
    cache_schema = dict(EVENT_SCHEMA)
    event_cols = list(EVENT_SCHEMA)
    write_cols: list = list(event_cols)
    sampler = None
    if sample_seed is not None:
        sampler = _BottomK(sample_max, [*SAMPLE_COLUMNS, sample_hash(sample_seed).alias("_h")])
        write_cols = [pl.lit(None, dtype=EVENT_SCHEMA[c]).alias(c) if c in _SAMPLE_TEXT
                      else c for c in event_cols]
    arrow_schema = pl.DataFrame(schema=cache_schema).to_arrow().schema
    acc_schema = {k: v for k, v in ACCOUNT_SCHEMA.items()}
    inline = pl.DataFrame(schema=acc_schema)
    pending: list[pl.DataFrame] = []
    first_seen = pl.DataFrame(schema={"model": pl.String, "released_at": TS})
    n_events = 0
    total = sum(os.path.getsize(f) for f in files)
    try:
        with _Progress(progress, total) as bar, _PartitionWriter(
                caches, arrow_schema, batch_rows) as writer, (
                sampler if sampler is not None else contextlib.nullcontext()):
            ctx = _Ctx(skip_invalid, invalid, batch_rows, bar.advance, format=format,
                       account_from=account_from, ts_from=ts_from)
            for _, frame in _iter_frames(files, ctx):
                n_events += len(frame)
                writer.write(frame.select(write_cols))
                if sampler is not None:
                    sampler.add(frame)
                pending.append(frame.group_by("account_id", maintain_order=True).agg(
                    [pl.col(f).drop_nulls().first() for f in ACCOUNT_FIELDS]))
                if len(pending) >= 16:
                    inline = _merge_accounts(inline, pl.concat(pending))
                    pending = []
                fs = (frame.filter(pl.col("model").is_not_null()).group_by("model")
                      .agg(released_at=pl.col("ts").min()))
                first_seen = (pl.concat([first_seen, fs]).group_by("model")
                              .agg(pl.col("released_at").min()))
    except BaseException:
        if tmpdir is not None:
            shutil.rmtree(tmpdir, ignore_errors=True)
        raise
    if pending:
        inline = _merge_accounts(inline, pl.concat(pending))
    new_parts = [pl.scan_parquet(c) for c in caches]
    parts = new_parts
    sample = (sampler.result({c: EVENT_SCHEMA[c] for c in SAMPLE_COLUMNS} | {"_h": pl.UInt64})
              if sampler is not None else None)
    n_new = n_events
    if history is not None:
        inline = _merge_accounts(conform(history.inline_accounts, ACCOUNT_SCHEMA), inline)
        first_seen = (pl.concat([history.first_seen.cast(RELEASE_SCHEMA), first_seen])
                      .group_by("model").agg(pl.col("released_at").min()))
        old = history.with_text()
        k = len(new_parts)
        parts = [pl.concat([old.filter(account_partition(pl.col("account_id"), k) == i)
                            if k > 1 else old, c]) for i, c in enumerate(parts)]
        n_events += history.n_events
        for reason, n in history.invalid.items():
            invalid.add(reason, n)
    if table is not None:
        merged = table.join(inline, on="account_id", how="full", coalesce=True, suffix="_inline",
                            maintain_order="left_right")
        merged = merged.with_columns(
            [pl.coalesce(f, f"{f}_inline").alias(f) for f in ACCOUNT_FIELDS])
        # Order: accounts as seen in events first, then table-only accounts.
        order = inline.select("account_id").with_row_index("_o")
        merged = (merged.join(order, on="account_id", how="left")
                  .sort("_o", nulls_last=True, maintain_order=True))
        acc_out = conform(merged, ACCOUNT_SCHEMA)
    else:
        acc_out = conform(inline, ACCOUNT_SCHEMA)
    releases_out = rel if rel is not None else conform(first_seen.sort("released_at", "model"),
                                                       RELEASE_SCHEMA)
    return Log(events=pl.concat(parts) if len(parts) > 1 else parts[0], accounts=acc_out,
               releases=releases_out, invalid=invalid, n_events=n_events,
               files=[str(f) for f in files],
               cache_path=str(caches[0]) if len(caches) == 1 else str(cdir),
               parts=parts, new_parts=new_parts, n_new_events=n_new,
               inline_accounts=conform(inline, ACCOUNT_SCHEMA),
               first_seen=conform(first_seen, RELEASE_SCHEMA), sample_seed=sample_seed,
               sample=sample, sample_max=sample_max if sample is not None else None,
               _tmpdir=tmpdir)


# --------------------------------------------------------------------------------------------
# Side tables: accounts, releases, labels
# --------------------------------------------------------------------------------------------

def _table_records(path: Path, what: str) -> tuple[list[dict], str]:
    """Rows of a small side table as dicts, and the unit used to locate rows in errors."""
    if not path.is_file():
        raise InputError("no such file" if not path.exists() else "not a regular file",
                         path=str(path))
    name = path.name.lower()
    try:
        if name.endswith(".csv"):
            df = pl.read_csv(path, infer_schema=False)
            return df.to_dicts(), "row"
        if name.endswith(".parquet"):
            return pq.read_table(path).to_pylist(), "row"
        if name.endswith((".jsonl", ".jsonl.gz", ".jsonl.zst")):
            ctx = _Ctx(False, InvalidCounts(), 1)
            recs = []
            with _open_lines(path, ctx) as fh:
                for lineno, line in enumerate(fh, 1):
                    if not line.strip():
                        recs.append(None)
                        continue
                    try:
                        rec = orjson.loads(line)
                    except orjson.JSONDecodeError as e:
                        raise InputError(f"malformed JSON: {e}", path=str(path),
                                         line=lineno, reason="malformed_json") from None
                    if type(rec) is not dict:
                        raise InputError("line is not a JSON object", path=str(path),
                                         line=lineno, reason="malformed_json")
                    recs.append(rec)
            return recs, "line"
    except InputError:
        raise
    except Exception as e:  # unreadable CSV / Parquet / compressed stream
        raise InputError(f"cannot read {what}: {e}", path=str(path)) from None
    raise InputError(f"unknown {what} format: expected .csv, .parquet or .jsonl[.gz|.zst]",
                     path=str(path))


def _where(unit: str, i: int) -> dict:
    return {"line": i} if unit == "line" else {"row": i}


def read_accounts(path) -> pl.DataFrame:
    """Read an accounts table (CSV, Parquet or JSONL) into ``ACCOUNT_SCHEMA``.

    Rows are located in errors 1-based (CSV/Parquet: data rows, header not counted; JSONL:
    lines). A duplicated ``account_id`` keeps its first row.
    """
    path = Path(path)
    recs, unit = _table_records(path, "accounts table")
    cols: dict[str, list] = {f: [] for f in ACCOUNT_SCHEMA}
    seen: set[str] = set()
    for i, rec in enumerate(recs, 1):
        if rec is None:
            continue
        try:
            acc = rec.get("account_id")
            if acc is None or acc == "":
                raise InvalidRecord("missing_account_id", "account_id", "missing account_id")
            acc = _as_str(acc, "account_id")
            created = rec.get("created_at")
            if created == "":
                created = None
            row = (acc, None if created is None else _ts_us(created, "created_at"),
                   *(_as_str(rec.get(f) or None, f) for f in _ACC_STR_FIELDS),
                   _as_bool(rec.get("verified"), "verified"))
        except InvalidRecord as b:
            raise InputError(b.msg, path=str(path), field=b.field, reason=b.reason,
                             **_where(unit, i)) from None
        if acc in seen:
            continue
        seen.add(acc)
        for f, v in zip(ACCOUNT_SCHEMA, row):
            cols[f].append(v)
    df = pl.DataFrame({f: pl.Series(f, v, dtype=pl.Int64 if f == "created_at"
                                    else ACCOUNT_SCHEMA[f]) for f, v in cols.items()})
    df = df.with_columns(pl.col("created_at").cast(pl.Datetime("us")).dt.replace_time_zone("UTC"))
    return conform(df, ACCOUNT_SCHEMA)


def _require_columns(recs_cols: Iterable[str], needed: Iterable[str], path: Path) -> None:
    have = set(recs_cols)
    for c in needed:
        if c not in have:
            raise InputError(f"missing column '{c}'", path=str(path), field=c,
                             reason=f"missing_column:{c}")


def read_releases(path) -> pl.DataFrame:
    """Read a model releases CSV ``model,released_at`` into ``RELEASE_SCHEMA``."""
    path = Path(path)
    recs, unit = _table_records(path, "releases table")
    if unit == "row" and path.name.lower().endswith(".csv"):
        _require_columns(pl.read_csv(path, n_rows=0, infer_schema=False).columns,
                         RELEASE_SCHEMA, path)
    models, times = [], []
    for i, rec in enumerate(recs, 1):
        if rec is None:
            continue
        try:
            m = rec.get("model")
            if m is None or m == "":
                raise InvalidRecord("missing_model", "model", "missing model")
            t = rec.get("released_at")
            if t is None or t == "":
                raise InvalidRecord("missing_released_at", "released_at", "missing released_at")
            models.append(_as_str(m, "model"))
            times.append(_ts_us(t, "released_at"))
        except InvalidRecord as b:
            raise InputError(b.msg, path=str(path), field=b.field, reason=b.reason,
                             **_where(unit, i)) from None
    df = pl.DataFrame({"model": pl.Series(models, dtype=pl.String),
                       "released_at": pl.Series(times, dtype=pl.Int64)})
    df = df.with_columns(pl.col("released_at").cast(pl.Datetime("us"))
                         .dt.replace_time_zone("UTC"))
    return conform(df.group_by("model", maintain_order=True).agg(pl.col("released_at").min()),
                   RELEASE_SCHEMA)


def read_labels(path) -> pl.DataFrame:
    """Read labels ``account_id,label,campaign[,segment]`` (label: attack/benign).

    Returns ``LABEL_SCHEMA`` columns (+ ``segment`` when given); an empty campaign is null.
    """
    path = Path(path)
    recs, unit = _table_records(path, "labels table")
    if path.name.lower().endswith(".csv"):
        _require_columns(pl.read_csv(path, n_rows=0, infer_schema=False).columns,
                         ("account_id", "label"), path)
    has_segment = any(rec is not None and "segment" in rec for rec in recs)
    out: dict[str, list] = {"account_id": [], "label": [], "campaign": [], "segment": []}
    for i, rec in enumerate(recs, 1):
        if rec is None:
            continue
        try:
            acc = rec.get("account_id")
            if acc is None or acc == "":
                raise InvalidRecord("missing_account_id", "account_id", "missing account_id")
            label = rec.get("label")
            if label not in ("attack", "benign"):
                raise InvalidRecord("bad_label", "label",
                           f"label must be 'attack' or 'benign', got {_short(label)}")
            out["account_id"].append(_as_str(acc, "account_id"))
            out["label"].append(label)
            out["campaign"].append(_as_str(rec.get("campaign") or None, "campaign"))
            out["segment"].append(_as_str(rec.get("segment") or None, "segment"))
        except InvalidRecord as b:
            raise InputError(b.msg, path=str(path), field=b.field, reason=b.reason,
                             **_where(unit, i)) from None
    schema = {**LABEL_SCHEMA, "segment": pl.String}
    df = pl.DataFrame({k: pl.Series(k, v, dtype=schema[k]) for k, v in out.items()})
    return df if has_segment else df.drop("segment")
