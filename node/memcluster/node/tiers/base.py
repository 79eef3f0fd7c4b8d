"""What every tier stores (``Item``) and the seam every tier implements (``Tier``).

Every tier passes the same conformance suite (tests/unit/test_tier_conformance.py).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol


@dataclass(slots=True)
class Item:
    """One stored item and its metadata (values are bytes; deletes are tombstones)."""

    value: bytes
    version: int
    origin: int = 0
    expires_ms: int = 0  # absolute Unix milliseconds; 0: never
    priority: int = 0  # higher is evicted later
    tombstone: bool = False

    def expired(self, now_ms: int) -> bool:
        """True once the item's own expiry has passed."""
        return 0 < self.expires_ms <= now_ms

    def order(self) -> tuple[int, int, bool, bytes]:
        """The last-writer-wins sort key: the greater write wins."""
        return (self.version, self.origin, self.tombstone, self.value)


class Tier(Protocol):
    """A bounded key -> Item store with an eviction policy.

    Tiers never decide where items go: ``evict_overflow`` and ``pop_idle`` remove
    items and hand them to the caller (the store), which demotes or drops them.
    ``now`` is wall-clock seconds from the injected clock.
    """

    name: str
    #: Bytes the tier may hold; the store lowers it under memory pressure.
    capacity: int

    @property
    def bytes_held(self) -> int:
        """Keys + stored values + per-item overhead of everything held."""
        ...

    def __len__(self) -> int: ...

    def __contains__(self, key: bytes) -> bool: ...

    def holding(self, keys: list[bytes]) -> list[bytes]:
        """The ``keys`` this tier holds (one lookup pass where the tier has a cheaper one)."""
        ...

    def get(self, key: bytes, now: float) -> Item | None:
        """The item (expired or not), counting an access for the eviction policy."""
        ...

    def get_many(self, keys: Sequence[bytes], now: float) -> list[Item | None]:
        """``get`` of each key, in order (one pass where the tier has a cheaper one)."""
        ...

    def live_values(self, keys: Sequence[bytes], now: float) -> list[bytes | None]:
        """For each key, its value if held here neither a tombstone nor expired (an access
        counted, as ``get`` counts it), else None."""
        ...

    def peek(self, key: bytes) -> Item | None:
        """The item (expired or not) without counting an access."""
        ...

    def put(self, key: bytes, item: Item, now: float) -> None:
        """Store ``item``, replacing any earlier entry for ``key``; may exceed capacity."""
        ...

    def put_many(self, items: list[tuple[bytes, Item]], now: float) -> None:
        """``put`` for each pair (one transaction where the tier has them)."""
        ...

    def pop(self, key: bytes) -> Item | None:
        """Remove and return the item, if held."""
        ...

    def remove_if(self, key: bytes, item: Item) -> bool:
        """Remove ``key`` if this tier holds ``item``'s write of it (the same version and
        origin), without decoding it; True when removed."""
        ...

    def evict_overflow(self, now: float) -> list[tuple[bytes, Item]]:
        """Remove items chosen by the eviction policy until the tier fits its capacity."""
        ...

    def pop_idle(self, now: float, limit: int) -> list[tuple[bytes, Item]]:
        """Remove up to ``limit`` items not accessed for the tier's residence ttl."""
        ...

    def pop_expired(self, now: float, limit: int) -> list[tuple[bytes, Item]]:
        """Remove up to ``limit`` items whose own expiry has passed."""
        ...

    def keys(self) -> Iterator[bytes]:
        """Every key held at the moment of the call (a snapshot taken by the call itself,
        not by the first ``next``), without decoding values."""
        ...

    def scan(self) -> Iterator[tuple[bytes, Item]]:
        """Every held item, without counting accesses (flush, transfer, tests)."""
        ...

    def close(self) -> None:
        """Release resources (files, maps); the tier is unusable afterwards."""
        ...
