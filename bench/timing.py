"""Latency sampling shared by the benchmarks: bounded in calls and in time."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable
from typing import Any


def sample(call: Callable[[Any], object], args: Iterable[Any], time_budget: float) -> list[int]:
    """Nanoseconds of ``call(arg)`` for each of ``args``, stopping once ``time_budget`` s pass."""
    clock = time.perf_counter_ns
    deadline = clock() + int(time_budget * 1e9)
    samples: list[int] = []
    for arg in args:
        start = clock()
        call(arg)
        end = clock()
        samples.append(end - start)
        if end > deadline:
            break
    return samples


def percentile(ordered: list[int], fraction: float) -> float:
    """The nearest-rank percentile of sorted nanosecond samples, in microseconds."""
    rank = max(math.ceil(fraction * len(ordered)), 1)
    return ordered[rank - 1] / 1000


def summary(samples: list[int]) -> dict[str, float]:
    """Count, mean, p50, p99 and p99.9 (µs) of nanosecond samples."""
    ordered = sorted(samples)
    return {
        "count": len(ordered),
        "mean_us": sum(ordered) / len(ordered) / 1000,
        "p50_us": percentile(ordered, 0.50),
        "p99_us": percentile(ordered, 0.99),
        "p999_us": percentile(ordered, 0.999),
    }
