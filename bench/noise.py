"""Machine noise: whether something else took the CPU while a benchmark ran.

On a shared 2-core KVM guest, busy tenants slow every system (Redis's GET at 2.3-4k
calls/s instead of 11-13k) and move every ratio. Three cheap signals show it:

- calibration: a fixed pure-Python CPU loop, timed; the same work each time, so its time
  moves with the CPU this process gets and how fast that CPU runs (other guests on the
  same cores, frequency);
- on CPU: the share of the calibration's wall time this thread ran (its CPU time over
  its wall time): other processes in this guest that want both cores take the rest;
- steal: the share of a span's CPU time the hypervisor gave to other guests (the
  ``steal`` column of ``/proc/stat``'s first line; 0.0 where there is none).

A ``Meter`` takes probes (a calibration, its on-CPU share, the steal since the last);
``summary`` calls them disturbed when the slowest calibration is more than
``MAX_SLOWDOWN`` times the fastest, a calibration ran less than ``MIN_ON_CPU_PCT`` of
its time, or a span's steal exceeds ``MAX_STEAL_PCT``. A run slowed evenly throughout
shows no slowdown: its calibration times, reported for that, can be compared with
other runs' on the same machine.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, NamedTuple

PROC_STAT = Path("/proc/stat")
#: Iterations of the calibration loop: 19-34 ms of CPython 3.11 on this machine.
CALIBRATION_LOOPS = 200_000
#: With nothing else running in this guest (no steal, on CPU 99.8-100%), 40 calibrations
#: in 20 s took 18.6-34.1 ms, in levels that change every few seconds, pinned to either
#: CPU too: 1.8x between the extremes. Disturbed runs ran at a third to a fifth of the
#: usual rates. 2x is above the quiet spread; a tighter line would flag every run.
MAX_SLOWDOWN = 2.0
#: Quiet calibrations ran 99.8-100% of their time; with two other processes busy on the
#: 2 cores, 62-84% (three runnable threads sharing two cores would get 67%).
MIN_ON_CPU_PCT = 90.0
#: Half-minute spans here stole 0-0.9%; 2.2% of all CPU time since boot (6 hours) was
#: stolen. The cells are CPU-bound on 2 cores: a span that lost a twentieth of its CPU
#: time to other guests is not a quiet one.
MAX_STEAL_PCT = 5.0
_STEAL = 7  # user nice system idle iowait irq softirq steal (guest time is inside user)


class CpuTimes(NamedTuple):
    """Jiffies of all CPUs since boot: stolen, and in all (user through steal)."""

    steal: int
    total: int


@dataclass(frozen=True)
class Probe:
    """One look: the calibration's time, its share on CPU, the steal since the last look."""

    calibration_ms: float
    on_cpu_pct: float  # of the calibration's wall time
    steal_pct: float


def calibrate(loops: int = CALIBRATION_LOOPS) -> float:
    """Milliseconds a fixed, deterministic CPU loop of ``loops`` iterations takes."""
    start = time.perf_counter()
    x = 0
    for i in range(loops):
        x = (x * 31 + i) & 0xFFFFFFFF
    return (time.perf_counter() - start) * 1000


def parse_stat(text: str) -> CpuTimes:
    """Steal and total jiffies from the text of ``/proc/stat`` (steal 0 without the column)."""
    fields = text.split("\n", 1)[0].split()
    if not fields or fields[0] != "cpu":
        return CpuTimes(0, 0)
    jiffies = [int(f) for f in fields[1 : _STEAL + 2]]
    steal = jiffies[_STEAL] if len(jiffies) > _STEAL else 0
    return CpuTimes(steal, sum(jiffies))


def read_stat(path: Path = PROC_STAT) -> CpuTimes:
    """``parse_stat`` of ``path``; zeros where it does not exist (no Linux)."""
    try:
        return parse_stat(path.read_text())
    except OSError:
        return CpuTimes(0, 0)


def steal_pct(before: CpuTimes, after: CpuTimes) -> float:
    """Percent of the CPU time between two readings that was stolen (0.0 for no time)."""
    total = after.total - before.total
    return 100 * (after.steal - before.steal) / total if total > 0 else 0.0


class Meter:
    """Probes in order; each probe's steal covers the span since the previous one (the
    first: since the meter was made)."""

    def __init__(self, stat: Path = PROC_STAT) -> None:
        self._stat = stat
        self._last = read_stat(stat)
        self.probes: list[Probe] = []

    def probe(self) -> Probe:
        """Calibrate, then read the steal since the previous probe; recorded and returned."""
        cpu = time.thread_time()
        ms = calibrate()
        cpu_ms = (time.thread_time() - cpu) * 1000
        on_cpu = min(100.0, 100 * cpu_ms / ms)  # its clock brackets calibrate's: can pass 100
        now = read_stat(self._stat)
        probe = Probe(round(ms, 3), round(on_cpu, 1), round(steal_pct(self._last, now), 2))
        self._last = now
        self.probes.append(probe)
        return probe

    def result(self) -> dict[str, Any]:
        """``summary`` of the probes, with the probes themselves under ``probes``."""
        return {**summary(self.probes), "probes": [asdict(p) for p in self.probes]}


def summary(probes: Sequence[Probe]) -> dict[str, Any]:
    """Fastest and slowest calibration (ms), slowdown (slowest / fastest), the lowest
    on-CPU share and the largest steal (%), and whether any crossed its threshold.
    ``probes`` must not be empty."""
    if not probes:
        raise ValueError("no probes to summarize")
    fastest = min(p.calibration_ms for p in probes)
    slowest = max(p.calibration_ms for p in probes)
    slowdown = slowest / fastest
    on_cpu_min = min(p.on_cpu_pct for p in probes)
    steal_max = max(p.steal_pct for p in probes)
    return {
        "calibration_ms_min": fastest,
        "calibration_ms_max": slowest,
        "slowdown": round(slowdown, 3),
        "on_cpu_pct_min": on_cpu_min,
        "steal_pct_max": steal_max,
        "disturbed": (
            slowdown > MAX_SLOWDOWN or on_cpu_min < MIN_ON_CPU_PCT or steal_max > MAX_STEAL_PCT
        ),
    }
