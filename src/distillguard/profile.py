"""Per-stage wall time and memory of a pipeline run (behind ``detect --profile``).

:class:`StageProfiler` times named stages with a context manager and records, for each, the
process's resident memory at the end and its *peak* during the stage. On Linux the kernel's
high-water mark is reset at every stage start (``/proc/self/clear_refs``), so the peak is the
stage's own; where that is not possible the peak is the process's peak so far
(``getrusage``), which is still an upper bound.

With ``log`` (a path, appended to, and/or ``echo``, a text stream) every stage start and end,
and every :meth:`StageProfiler.note`, is written as one line as it happens (flushed), so a run
that is killed (out of memory, watchdog) still shows which stage it was in and how much memory
each finished stage took: ``detect`` writes ``profile.log`` into its output directory.

>>> prof = StageProfiler()
>>> with prof.stage("read"):
...     _ = sum(range(1000))
>>> list(prof.timings())
['read']
"""

from __future__ import annotations

import re
import resource
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

__all__ = ["StageProfiler", "StageRecord", "current_rss", "peak_rss", "reset_peak_rss"]

_STATUS = Path("/proc/self/status")
_CLEAR = Path("/proc/self/clear_refs")


def _status_kib(field: str) -> int | None:
    try:
        m = re.search(rf"^{field}:\s+(\d+)\s+kB", _STATUS.read_text(), re.MULTILINE)
    except OSError:
        return None
    return int(m[1]) if m else None


def current_rss() -> int:
    """Resident memory of this process now, in bytes (0 when unknown)."""
    kib = _status_kib("VmRSS")
    return kib * 1024 if kib is not None else 0


def peak_rss() -> int:
    """Peak resident memory, in bytes: since the last :func:`reset_peak_rss`, or since start."""
    kib = _status_kib("VmHWM")
    if kib is not None:
        return kib * 1024
    ru = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return ru if sys.platform == "darwin" else ru * 1024  # macOS bytes, Linux KiB


def reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS mark to the current RSS (Linux ≥ 4.0); False if not possible."""
    try:
        _CLEAR.write_text("5")
    except OSError:
        return False
    return True


@dataclass(frozen=True)
class StageRecord:
    """One timed stage: wall seconds, RSS at its end and peak RSS during it (bytes)."""

    name: str
    seconds: float
    rss_end: int
    rss_peak: int
    peak_is_stage: bool  # False: peak is the process's peak so far, not the stage's own


class StageProfiler:
    """Collects :class:`StageRecord` s; ``records_`` in stage order (a repeated name adds a row).

    Parameters: ``enabled`` (False makes :meth:`stage` a no-op timer that records nothing
    about memory, for zero overhead), ``reset_peak`` (reset the kernel peak at each stage).
    """

    def __init__(self, *, enabled: bool = True, reset_peak: bool = True,
                 log: str | Path | None = None, echo: TextIO | None = None) -> None:
        self.enabled = enabled
        self.reset_peak = reset_peak
        self.records_: list[StageRecord] = []
        self.log_path: Path | None = None
        self.echo = echo
        self._t0 = time.perf_counter()
        self._current: list[str] = []
        if log is not None:
            self.set_log(log)

    def set_log(self, path: str | Path) -> None:
        """Write the live stage log to ``path`` from now on (started afresh, then appended)."""
        self.log_path = Path(path)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self.log_path.write_text("", encoding="utf-8")

    def _emit(self, text: str) -> None:
        if self.log_path is None and self.echo is None:
            return
        mem = (f" rss {_gib(current_rss())} peak {_gib(peak_rss())}" if self.enabled else "")
        line = f"[{time.perf_counter() - self._t0:8.1f}s] {text}{mem}"
        if self.log_path is not None:
            with open(self.log_path, "a", encoding="utf-8") as fh:
                fh.write(line + "\n")
        if self.echo is not None:
            print(line, file=self.echo, flush=True)

    def note(self, message: str) -> None:
        """Log a progress line inside the current stage (time, RSS and peak so far)."""
        where = self._current[-1] if self._current else "-"
        self._emit(f"  {where}: {message}")

    @contextmanager
    def stage(self, name: str):
        """Time the body as stage ``name`` (recorded even when the body raises)."""
        own = self.enabled and self.reset_peak and reset_peak_rss()
        self._emit(f"start {name}")
        self._current.append(name)
        t0 = time.perf_counter()
        failed = True
        try:
            yield self
            failed = False
        finally:
            dt = time.perf_counter() - t0
            self._current.pop()
            if self.enabled:
                self.records_.append(StageRecord(name, dt, current_rss(), peak_rss(), own))
            else:
                self.records_.append(StageRecord(name, dt, 0, 0, False))
            self._emit(f"{'FAILED' if failed else 'end'} {name} {dt:.2f}s")

    def timings(self) -> dict[str, float]:
        """Seconds per stage name (repeated names summed), in first-seen order."""
        out: dict[str, float] = {}
        for r in self.records_:
            out[r.name] = out.get(r.name, 0.0) + r.seconds
        return out

    def total(self) -> float:
        return sum(r.seconds for r in self.records_)

    def max_peak(self) -> int:
        """Largest peak RSS over the recorded stages, in bytes."""
        return max((r.rss_peak for r in self.records_), default=0)

    def table(self, title: str = "profile"):
        """A ``rich.table.Table``: stage, seconds, share of total, RSS at end, peak RSS."""
        from rich.table import Table

        total = self.total() or 1.0
        t = Table(title=title)
        t.add_column("stage")
        for col in ("seconds", "share", "RSS end", "peak RSS"):
            t.add_column(col, justify="right")
        for r in self.records_:
            t.add_row(r.name, f"{r.seconds:.2f}", f"{100 * r.seconds / total:.0f} %",
                      _gib(r.rss_end) if self.enabled else "-",
                      (_gib(r.rss_peak) + ("" if r.peak_is_stage else " *"))
                      if self.enabled else "-")
        t.add_row("total", f"{self.total():.2f}", "100 %", "",
                  _gib(self.max_peak()) if self.enabled else "-", style="bold")
        return t

    def render(self, file=None, title: str = "profile") -> None:
        """Print :meth:`table` to ``file`` (default stderr); ``*`` marks process-wide peaks."""
        from rich.console import Console

        Console(file=file or sys.stderr).print(self.table(title))


def _gib(n: int) -> str:
    return f"{n / 2**30:.2f} GiB"
