"""Which reads below the first tier move their item back up (promotion admission).

A read that finds an item in warm or cold may promote it into hot, which makes room
by demoting hot's least valuable items: a promotion costs a move up, a compression
and a move down, several times a read's work. ``memory.promote_after`` says how many
reads below the first tier an item needs before it moves: at 2 (the default) the
first read serves the item from where it is and remembers its key, the second read
promotes it. Items read once in a while, scans and the long tail of a skewed
workload stay down, and hot's room goes to the items read again, which is the
second-hit rule of RocksDB's compressed secondary cache and of the kernel's
inactive/active page lists. At 1 every such read promotes.

The keys read once are remembered in a dict, by their hash (a few dozen bytes each,
whatever the key's length: two keys that share a hash share a count, which at worst
promotes one item a read early), in the order of their latest read, up to a bound
sized from the first tier's capacity (``probation_keys``); past it the older half is
forgotten, so their next read counts from one again (an item read that rarely is not
worth a move). A count is the key's, whichever version of its item each read found.
``memory.promote_chance`` then draws for each read that would promote; one that
loses the draw starts its count over.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Callable

from memcluster.common.config import MemoryConfig

#: Keys read once below the first tier that are remembered at most (~50-90 bytes each:
#: a dict entry and the key's hash, as an int) ...
MAX_PROBATION_KEYS = 1 << 16
#: ... and at least; in between, one per this many bytes of first-tier capacity.
MIN_PROBATION_KEYS = 1 << 10
CAPACITY_PER_PROBATION_KEY = 256


def probation_keys(first_capacity: int) -> int:
    """How many keys read once a store remembers, for its first tier's capacity."""
    wanted = first_capacity // CAPACITY_PER_PROBATION_KEY
    return max(MIN_PROBATION_KEYS, min(MAX_PROBATION_KEYS, wanted))


class Admission:
    """Decides, read by read, whether an item found below the first tier moves up."""

    def __init__(
        self, memory: MemoryConfig, first_capacity: int, rng: random.Random | None = None
    ) -> None:
        self.after = memory.promote_after
        self.limit = probation_keys(first_capacity)
        #: Keys read below the first tier and not promoted yet: hash(key) -> reads counted.
        self._reads: dict[int, int] = {}
        chance = memory.promote_chance
        self._draw = (rng or random.Random()).random if chance < 1 else None
        self._chance = chance
        #: The decision, bound once to the cheapest form the configuration allows.
        self.promotes: Callable[[bytes], bool]
        if not memory.promote_on_read:
            self.promotes = _never
        elif self.after == 1 and self._draw is None:
            self.promotes = _always
        else:
            self.promotes = self._decide

    @property
    def remembered(self) -> int:
        """Keys read below the first tier whose count is still running."""
        return len(self._reads)

    def _decide(self, key: bytes) -> bool:
        if self.after > 1:
            reads, mark = self._reads, hash(key)  # bytes cache their hash
            seen = reads.pop(mark, 0) + 1
            if seen < self.after:
                if len(reads) >= self.limit:
                    for old in list(itertools.islice(reads, len(reads) // 2)):
                        del reads[old]
                reads[mark] = seen
                return False
        return self._draw is None or self._draw() < self._chance


def _always(_key: bytes) -> bool:
    return True


def _never(_key: bytes) -> bool:
    return False
