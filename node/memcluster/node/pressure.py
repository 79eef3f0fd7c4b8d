"""Adaptive hot-tier sizing under memory pressure.

The node reads the fraction of system memory in use (psutil) every check
interval. Above the high watermark it shrinks the hot tier by a step (its items
move down to the compressed tiers); at the critical watermark it halves it and
counts an OOM near-miss (once per excursion). Once usage falls back below the high
watermark minus a hysteresis band, the hot tier grows back step by step to its
configured capacity.
"""

from __future__ import annotations

from collections.abc import Callable

import psutil

from memcluster.common.config import PressureConfig

SHRINK_STEP = 0.10
HYSTERESIS = 0.05


def system_memory_used() -> float:
    """Fraction of system memory in use (what the kernel could not hand out)."""
    vm = psutil.virtual_memory()
    return 1.0 - vm.available / vm.total


class PressureController:
    """Decides the hot tier's capacity from memory readings; pure logic, no timers."""

    def __init__(
        self,
        config: PressureConfig,
        configured_capacity: int,
        read_used: Callable[[], float] = system_memory_used,
    ) -> None:
        self._config = config
        self._configured = configured_capacity
        self._floor = int(configured_capacity * config.min_hot_fraction)
        self._read = read_used
        self.capacity = configured_capacity
        self.oom_near_misses = 0
        self.last_used = 0.0
        self._critical = False

    def check(self) -> int | None:
        """Take one reading; return the new hot capacity if it should change."""
        used = self.last_used = self._read()
        cfg = self._config
        if used >= cfg.critical_watermark:
            if not self._critical:
                self.oom_near_misses += 1
                self._critical = True
            target = max(self._floor, self.capacity // 2)
        elif used >= cfg.high_watermark:
            self._critical = False
            target = max(self._floor, int(self.capacity * (1 - SHRINK_STEP)))
        elif used < cfg.high_watermark - HYSTERESIS:
            self._critical = False
            target = min(self._configured, int(self.capacity * (1 + SHRINK_STEP)) + 1)
        else:
            self._critical = False
            target = self.capacity
        if target == self.capacity:
            return None
        self.capacity = target
        return target
