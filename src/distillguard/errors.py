"""Errors that the CLI turns into a one-line message and exit code 2."""

from __future__ import annotations


class DistillguardError(Exception):
    """Base class: a problem the user can fix; printed without traceback, exit 2."""

    exit_code = 2


class InputError(DistillguardError):
    """Bad input, located as precisely as possible.

    ``str(err)`` reads ``FILE:LINE: field 'ts': unparsable timestamp 'abc'`` for JSON Lines,
    ``FILE: row group G, row R: field ...`` for Parquet, ``FILE: row R`` for CSV.
    """

    def __init__(
        self,
        message: str,
        *,
        path: str | None = None,
        line: int | None = None,
        row_group: int | None = None,
        row: int | None = None,
        field: str | None = None,
        reason: str | None = None,
    ) -> None:
        self.message = message
        self.path = path
        self.line = line
        self.row_group = row_group
        self.row = row
        self.field = field
        self.reason = reason or "invalid"
        super().__init__(self._format())

    def _format(self) -> str:
        where = self.path or ""
        if self.line is not None:
            where += f":{self.line}"
        elif self.row_group is not None:
            where += f": row group {self.row_group}, row {self.row}"
        elif self.row is not None:
            where += f": row {self.row}"
        field = f"field '{self.field}': " if self.field else ""
        return f"{where}: {field}{self.message}" if where else f"{field}{self.message}"


class ConfigError(DistillguardError):
    """A bad scenario, policy or option value."""
