"""bench.noise: /proc/stat parsing, steal over a span, probes and the disturbed verdict.

No test judges speed: the calibration is only checked to take some time.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import noise
from bench.noise import CpuTimes, Probe

#: The first lines of a real /proc/stat: user nice system idle iowait irq softirq steal
#: guest guest_nice. Guest time is already inside user and nice.
STAT = """cpu  1877983 289 231006 2063660 7440 0 85209 97242 500 7
cpu0 935439 111 115698 1035089 4632 0 41657 48715 250 3
intr 123 0 0
"""
STAT_TOTAL = 1877983 + 289 + 231006 + 2063660 + 7440 + 0 + 85209 + 97242


def quiet(ms: float = 20.0) -> Probe:
    return Probe(calibration_ms=ms, on_cpu_pct=100.0, steal_pct=0.0)


def test_parse_stat_reads_steal_and_the_total_without_guest_time() -> None:
    assert noise.parse_stat(STAT) == CpuTimes(steal=97242, total=STAT_TOTAL)


def test_parse_stat_without_a_steal_column_gives_zero_steal() -> None:
    assert noise.parse_stat("cpu  10 0 5 80 3 1 1\n") == CpuTimes(steal=0, total=100)


@pytest.mark.parametrize("text", ["", "\n", "intr 1 2 3\ncpu 1 2 3 4 5 6 7 8\n"])
def test_parse_stat_without_a_cpu_line_first_gives_zeros(text: str) -> None:
    assert noise.parse_stat(text) == CpuTimes(0, 0)


def test_read_stat_reads_a_file_and_gives_zeros_where_there_is_none(tmp_path: Path) -> None:
    stat = tmp_path / "stat"
    stat.write_text(STAT)
    assert noise.read_stat(stat) == CpuTimes(97242, STAT_TOTAL)
    assert noise.read_stat(tmp_path / "missing") == CpuTimes(0, 0)


def test_steal_pct_is_the_stolen_share_of_the_span() -> None:
    assert noise.steal_pct(CpuTimes(100, 1000), CpuTimes(130, 1600)) == pytest.approx(5.0)
    assert noise.steal_pct(CpuTimes(100, 1000), CpuTimes(100, 1000)) == 0.0
    assert noise.steal_pct(CpuTimes(0, 0), CpuTimes(0, 0)) == 0.0  # no /proc/stat


def test_calibrate_takes_some_time() -> None:
    assert noise.calibrate() > 0
    assert noise.calibrate(1000) > 0


def test_meter_probes_steal_since_the_previous_probe(tmp_path: Path) -> None:
    stat = tmp_path / "stat"
    stat.write_text("cpu  400 0 100 500 0 0 0 0\n")
    meter = noise.Meter(stat)
    stat.write_text("cpu  800 0 200 900 0 0 0 100\n")  # 100 of 1,000 jiffies stolen
    first = meter.probe()
    stat.write_text("cpu  1800 0 200 1900 0 0 0 100\n")  # none of the next 2,000
    second = meter.probe()
    assert (first.steal_pct, second.steal_pct) == (10.0, 0.0)
    for probe in (first, second):
        assert probe.calibration_ms > 0
        assert 0 < probe.on_cpu_pct <= 100
    result = meter.result()
    assert result["steal_pct_max"] == 10.0 and result["disturbed"]
    assert result["probes"] == [
        {"calibration_ms": p.calibration_ms, "on_cpu_pct": p.on_cpu_pct, "steal_pct": p.steal_pct}
        for p in (first, second)
    ]
    json.dumps(result)  # it goes into the bench's JSON results as it is


def test_meter_without_proc_stat_reports_no_steal(tmp_path: Path) -> None:
    meter = noise.Meter(tmp_path / "missing")
    assert meter.probe().steal_pct == 0.0


def test_summary_of_quiet_probes() -> None:
    summary = noise.summary([quiet(20.0), quiet(25.0), quiet(22.0)])
    assert summary == {
        "calibration_ms_min": 20.0,
        "calibration_ms_max": 25.0,
        "slowdown": 1.25,
        "on_cpu_pct_min": 100.0,
        "steal_pct_max": 0.0,
        "disturbed": False,
    }


@pytest.mark.parametrize(("factor", "disturbed"), [(0.99, False), (1.01, True)])
def test_summary_flags_a_slowdown_beyond_the_threshold(factor: float, disturbed: bool) -> None:
    slowest = 20.0 * noise.MAX_SLOWDOWN * factor
    assert noise.summary([quiet(20.0), quiet(slowest)])["disturbed"] is disturbed


@pytest.mark.parametrize(("delta", "disturbed"), [(0.5, False), (-0.5, True)])
def test_summary_flags_a_calibration_off_the_cpu(delta: float, disturbed: bool) -> None:
    off = Probe(calibration_ms=20.0, on_cpu_pct=noise.MIN_ON_CPU_PCT + delta, steal_pct=0.0)
    assert noise.summary([quiet(), off])["disturbed"] is disturbed


@pytest.mark.parametrize(("delta", "disturbed"), [(-0.5, False), (0.5, True)])
def test_summary_flags_steal_beyond_the_threshold(delta: float, disturbed: bool) -> None:
    stolen = Probe(calibration_ms=20.0, on_cpu_pct=100.0, steal_pct=noise.MAX_STEAL_PCT + delta)
    assert noise.summary([quiet(), stolen])["disturbed"] is disturbed


def test_summary_needs_probes() -> None:
    with pytest.raises(ValueError, match="no probes"):
        noise.summary([])
