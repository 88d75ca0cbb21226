"""Source log formats mapped onto the contract record (contract.md §1).

Each module maps one record of a format users already have to contract record dicts:

========================  ====================================================================
``contract``              the contract itself (no mapping)
``litellm``               LiteLLM ``StandardLoggingPayload`` JSONL (:mod:`.litellm`)
``otel``                  OTLP JSON spans with OpenTelemetry GenAI attributes (:mod:`.otel`)
``openai-batch``          OpenAI Batch API input JSONL (:mod:`.openai_batch`)
``anthropic-batch``       Anthropic Message Batches JSONL (:mod:`.anthropic_batch`)
========================  ====================================================================

``auto`` (the default) picks the format of each file from its first record
(:func:`sniff`). A format that lacks ``account_id`` or ``ts`` takes them from
``--account-from`` / ``--ts-from`` (:class:`FieldSource`); without one the record is
rejected with a message naming the option.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from ..errors import ConfigError
from . import anthropic_batch, litellm, openai_batch, otel
from ._base import RecordError, get_path

__all__ = ["FORMATS", "FORMAT_CHOICES", "FieldSource", "RecordError", "Converter", "sniff",
           "converter", "get_path"]

#: Explicit formats, in sniffing order after ``contract``.
FORMATS = ("contract", "litellm", "otel", "openai-batch", "anthropic-batch")
#: Values accepted by ``format=`` / ``--format``.
FORMAT_CHOICES = ("auto", *FORMATS)

_MODULES = {"litellm": litellm, "otel": otel, "openai-batch": openai_batch,
            "anthropic-batch": anthropic_batch}


def sniff(rec: object) -> str:
    """The format of one parsed JSON record (``contract`` when no other format matches)."""
    if type(rec) is dict:
        for name in ("otel", "litellm", "openai-batch", "anthropic-batch"):
            if _MODULES[name].sniff(rec):
                return name
    return "contract"


def check_format(fmt: str) -> str:
    if fmt not in FORMAT_CHOICES:
        raise ConfigError(f"unknown log format {fmt!r}: expected one of "
                          f"{', '.join(FORMAT_CHOICES)}")
    return fmt


@dataclass(frozen=True)
class FieldSource:
    """Where a contract field comes from when the format lacks it (or to override it).

    ``spec`` is ``const:VALUE`` (a constant, e.g. the account that submitted a batch file),
    ``mtime`` (``ts`` only: the file's modification time) or a field path in the source
    record: dot-separated keys and list indices (``metadata.user_api_key_team_id``,
    ``body.metadata.account_id``); for ``otel`` an attribute key (``enduser.id``) of the span
    or its resource.
    """

    field: str
    spec: str

    def __post_init__(self) -> None:
        if not self.spec or not self.spec.strip():
            raise ConfigError(f"--{self.field.split('_')[0]}-from: empty value")
        if self.spec == "mtime" and self.field != "ts":
            raise ConfigError("'mtime' is only valid for --ts-from")

    def resolve(self, view: dict, mtime: float | None) -> object:
        if self.spec.startswith("const:"):
            return self.spec[6:]
        if self.spec == "mtime":
            return mtime
        return get_path(view, self.spec)


class Converter:
    """Maps the records of one file to contract record dicts (see :meth:`records`)."""

    def __init__(self, fmt: str, *, account_from: str | None = None, ts_from: str | None = None,
                 mtime: float | None = None) -> None:
        self.format = fmt
        self._mod = _MODULES.get(fmt)
        self.account = FieldSource("account_id", account_from) if account_from else None
        self.ts = FieldSource("ts", ts_from) if ts_from else None
        self.mtime = mtime
        #: whether records pass through unchanged (contract without overrides)
        self.identity = self._mod is None and self.account is None and self.ts is None

    def records(self, rec: dict) -> Iterator[dict | RecordError]:
        """Contract record dicts of one source record, or a :class:`RecordError` in place of
        each exchange that cannot be mapped (a line-level problem raises it)."""
        if self._mod is None:
            pairs = ((rec, rec),)
        else:
            pairs = self._mod.records(rec)
        for item in pairs:
            if isinstance(item, RecordError):
                yield item
                continue
            try:
                yield self._fill(*item)
            except RecordError as e:
                yield e

    def _fill(self, out: dict, view: dict) -> dict:
        if self.account is not None:
            acc = self.account.resolve(view, self.mtime)
            if acc is None or acc == "":
                raise RecordError("missing_account_id", "account_id",
                                  f"missing account_id: field {self.account.spec!r} named "
                                  f"by --account-from is absent")
            out["account_id"] = acc
        elif self._mod is not None and out.get("account_id") in (None, ""):
            raise RecordError("missing_account_id", "account_id",
                              f"missing account_id: {self._mod.ACCOUNT_HINT}")
        if self.ts is not None:
            ts = self.ts.resolve(view, self.mtime)
            if ts is None or ts == "":
                raise RecordError("missing_ts", "ts", f"missing timestamp: field "
                                  f"{self.ts.spec!r} named by --ts-from is absent")
            out["ts"] = ts
        elif self._mod is not None and out.get("ts") is None:
            raise RecordError("missing_ts", "ts", f"missing timestamp: {self._mod.TS_HINT}")
        return out


def converter(fmt: str, **kw) -> Converter:
    """A :class:`Converter` for an explicit format (not ``auto``)."""
    if fmt not in FORMATS:
        raise ConfigError(f"unknown log format {fmt!r}: expected one of {', '.join(FORMATS)}")
    return Converter(fmt, **kw)
