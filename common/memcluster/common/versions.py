"""Item versions: a hybrid logical clock (HLC) plus the writing node's tag.

A version is a 64-bit integer: the high 48 bits are Unix milliseconds, the low 16
bits a logical counter that orders events within one millisecond (and keeps the
clock monotonic when the wall clock steps back or a peer's clock runs ahead).
Ties between two writers with the same version break on the origin tag, then on
tombstone (deletes win), then on the value bytes, so every replica picks the same
winner (as Cassandra breaks timestamp ties).
"""

from __future__ import annotations

import zlib

from memcluster.common.clock import Clock

LOGICAL_BITS = 16
LOGICAL_MASK = (1 << LOGICAL_BITS) - 1


def node_tag(node_id: str) -> int:
    """A stable 16-bit tag for a node id (ties between writers break on it)."""
    return zlib.crc32(node_id.encode()) & 0xFFFF


def version_millis(version: int) -> int:
    """The wall-clock milliseconds part of a version."""
    return version >> LOGICAL_BITS


class HybridClock:
    """Issues strictly increasing versions; ``observe`` folds in versions seen from peers."""

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._last = 0

    def now(self) -> int:
        """A version greater than every version issued or observed so far."""
        physical = int(self._clock.now() * 1000) << LOGICAL_BITS
        self._last = physical if physical > self._last else self._last + 1
        return self._last

    def observe(self, version: int) -> None:
        """Remember a version from elsewhere so that later versions exceed it."""
        self._last = max(self._last, version)
