"""StageProfiler: per-stage time and memory records and the rich table."""

from __future__ import annotations

import io
import sys
import time

import numpy as np
import pytest

from distillguard import profile
from distillguard.profile import StageProfiler, current_rss, peak_rss, reset_peak_rss

linux = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc needed")


def test_stages_recorded_in_order_with_times():
    prof = StageProfiler()
    with prof.stage("a"):
        time.sleep(0.02)
    with prof.stage("b"):
        pass
    with prof.stage("a"):
        time.sleep(0.01)
    assert [r.name for r in prof.records_] == ["a", "b", "a"]
    t = prof.timings()
    assert list(t) == ["a", "b"]
    assert t["a"] >= 0.03 - 1e-3 and t["b"] < t["a"]
    assert prof.total() == pytest.approx(sum(r.seconds for r in prof.records_))


def test_stage_recorded_when_body_raises():
    prof = StageProfiler()
    with pytest.raises(ValueError), prof.stage("boom"):
        raise ValueError("x")
    assert [r.name for r in prof.records_] == ["boom"]


@linux
def test_peak_is_per_stage_when_kernel_allows():
    prof = StageProfiler()
    big = 400 * 2**20
    with prof.stage("alloc"):
        a = np.ones(big // 8)  # 400 MiB touched
        a[::512] = 2.0
        del a
    with prof.stage("small"):
        b = np.ones(1000)
        del b
    alloc, small = prof.records_
    assert alloc.rss_peak >= alloc.rss_end + big * 0.9
    if alloc.peak_is_stage and small.peak_is_stage:
        # the reset at "small" forgets the 400 MiB peak of "alloc"
        assert small.rss_peak < alloc.rss_peak - big * 0.9
    else:  # no reset possible: peak so far is monotone
        assert small.rss_peak >= alloc.rss_peak
    assert prof.max_peak() == max(alloc.rss_peak, small.rss_peak)


@linux
def test_rss_helpers_positive_and_ordered():
    assert current_rss() > 0
    reset_peak_rss()
    assert peak_rss() >= current_rss() * 0.9


def test_peak_falls_back_to_getrusage(monkeypatch, tmp_path):
    monkeypatch.setattr(profile, "_STATUS", tmp_path / "missing")
    monkeypatch.setattr(profile, "_CLEAR", tmp_path / "nodir" / "clear_refs")
    assert current_rss() == 0
    assert peak_rss() > 0
    assert reset_peak_rss() is False
    prof = StageProfiler()
    with prof.stage("x"):
        pass
    assert prof.records_[0].peak_is_stage is False


def test_disabled_records_time_only():
    prof = StageProfiler(enabled=False)
    with prof.stage("x"):
        time.sleep(0.005)
    r = prof.records_[0]
    assert r.seconds > 0 and r.rss_end == 0 and r.rss_peak == 0


def test_table_renders_all_stages_and_total():
    prof = StageProfiler()
    for name in ("read", "fingerprint", "content"):
        with prof.stage(name):
            pass
    buf = io.StringIO()
    prof.render(file=buf, title="detect profile")
    text = buf.getvalue()
    for word in ("detect profile", "read", "fingerprint", "content", "total", "GiB"):
        assert word in text
    assert prof.table().row_count == 4


def test_live_log_shows_stages_as_they_end_and_a_failed_one(tmp_path):
    echo = io.StringIO()
    log = tmp_path / "out" / "profile.log"
    prof = StageProfiler(log=log, echo=echo)
    with prof.stage("read"):
        prof.note("100 rows")
    lines = log.read_text().splitlines()
    # written while the run goes on, not only at the end
    assert [ln.split("] ", 1)[1].split()[:2] for ln in lines] == [
        ["start", "read"], ["read:", "100"], ["end", "read"]]
    with pytest.raises(MemoryError), prof.stage("content"):
        raise MemoryError
    text = log.read_text()
    assert "start content" in text and "FAILED content" in text
    assert "GiB" in text
    assert echo.getvalue().splitlines() == text.splitlines()


def test_no_log_unless_asked(tmp_path, capsys):
    prof = StageProfiler()
    with prof.stage("x"):
        prof.note("quiet")
    assert prof.log_path is None
    assert capsys.readouterr().err == ""
