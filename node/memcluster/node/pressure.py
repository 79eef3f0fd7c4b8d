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
from pathlib import Path

import psutil

from memcluster.common.config import PressureConfig

CGROUP_ROOT = Path("/sys/fs/cgroup")
SHRINK_STEP = 0.10
HYSTERESIS = 0.05


def system_memory_used(cgroup_root: Path = CGROUP_ROOT) -> float:
    """Fraction of the memory this process may use that is in use.

    In a container with a memory limit (Kubernetes, ``docker run -m``) that is the
    cgroup's working set (usage minus reclaimable page cache, as the kubelet counts it)
    over the limit: the host's free memory says nothing about an OOM kill there.
    Elsewhere it is the machine's memory that the kernel could not hand out.
    """
    vm = psutil.virtual_memory()
    cgroup = cgroup_memory(cgroup_root)
    if cgroup is not None and cgroup[1] < vm.total:
        used, limit = cgroup
        return used / limit
    return 1.0 - vm.available / vm.total


def cgroup_memory(root: Path = CGROUP_ROOT) -> tuple[int, int] | None:
    """(working set, limit) of this process's memory cgroup, or None without a limit."""
    for limit_file, usage_file, stat_file, inactive_key in (
        ("memory.max", "memory.current", "memory.stat", "inactive_file"),  # cgroup v2
        (
            "memory/memory.limit_in_bytes",
            "memory/memory.usage_in_bytes",
            "memory/memory.stat",
            "total_inactive_file",
        ),
    ):
        try:
            raw_limit = (root / limit_file).read_text().strip()
            usage = int((root / usage_file).read_text())
        except (OSError, ValueError):
            continue
        if not raw_limit.isdigit():
            return None  # "max": no limit
        inactive = 0
        try:
            for line in (root / stat_file).read_text().splitlines():
                name, _, value = line.partition(" ")
                if name == inactive_key:
                    inactive = int(value)
        except (OSError, ValueError):
            pass
        return max(usage - inactive, 0), int(raw_limit)
    return None


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
