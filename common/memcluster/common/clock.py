"""Injectable clocks: code that expires, demotes or leases reads time only through one."""

from __future__ import annotations

import time
from typing import Protocol


class Clock(Protocol):
    """Wall-clock seconds since the Unix epoch (float)."""

    def now(self) -> float:
        """The current time."""
        ...


class SystemClock:
    """The real clock."""

    def now(self) -> float:
        """time.time()."""
        return time.time()


class ManualClock:
    """A clock that moves only when told: tests use it instead of sleeping."""

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self._now = start

    def now(self) -> float:
        """The time set so far."""
        return self._now

    def advance(self, seconds: float) -> None:
        """Move forward by ``seconds`` (never backward)."""
        if seconds < 0:
            raise ValueError("a clock does not go backward")
        self._now += seconds
