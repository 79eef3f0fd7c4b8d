"""The in-RAM tiers: hot (values as they are) and warm (values zstd-compressed).

Both keep their records in an ``Arena`` (arena.py): packed into memory maps behind
an index of 64-bit slots, because one Python object per item would cost more than
a small value. This module holds the policy; the arena holds the bytes.

Eviction is sampled, as Redis does, since the arena keeps no recency order: it ranks
several times as many candidates as it must remove and removes the least valuable,
lowest priority first, then least recently used (LRU) or least used (LFU: Redis's
logarithmic counter with time decay). The access time (whole seconds) and the counter
live in each record's header and are updated in place. Candidates are random draws
plus the records under the arena's eviction hand, which walks segments oldest first:
victims then cluster in old segments, which empty and are unmapped without copying.
A tier with fewer items than the sample is ranked whole, so small tiers evict
exactly. Evictions run in batches a little below capacity so that ranking is
amortised.

Idle demotion and expiry are the arena's bounded walks over the segments that can
hold something due; reads do not check expiry (the store does, and removes what it
finds expired).
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence

from memcluster.node.tiers.arena import (
    HEADER_SIZE,
    TOMBSTONE,
    Arena,
    Meta,
    Removed,
)
from memcluster.node.tiers.base import Item
from memcluster.node.tiers.codec import Codec
from memcluster.node.tiers.index import LOC_BITS, LOC_MASK

#: Index bytes charged per item: an 8-byte slot at about half load (the index's
#: shards fill to 75% and then double or split).
INDEX_SHARE = 16
#: Bytes charged per payload kept as its own bytes object (see arena.BIG_PAYLOAD).
BIG_OVERHEAD = 33
EVICTION_RANDOM = 2  # records drawn at random per record evicted ...
#: ... and taken from under the arena's eviction hand (see Arena.sweep): one, so that
#: the hand moves no faster than eviction and leaves emptied segments behind it.
EVICTION_SWEPT = 1
EVICTION_BATCH = 64  # evict about this many items below capacity at once
LOW_WATERMARK = 0.99  # ... but never more than down to this fraction of capacity
#: Records examined per record asked for by pop_idle / pop_expired: a cleanup step of
#: 1,000 stays within a few milliseconds; a step that finds fewer ends the cleanup
#: round, and the next round resumes where the walk stopped.
WALK_BUDGET = 4
LFU_INIT = 5  # new items start warm enough not to be evicted at once (as Redis)
LFU_LOG_FACTOR = 10
LFU_DECAY_SECONDS = 60.0  # the counter drops by one per idle minute
ACCESS_GRANULARITY = 1  # seconds: finer access times would rewrite headers on every read
_PRIORITY_BIAS = 1 << 15  # priorities are 16-bit signed: biased, they rank as unsigned


class MemoryTier:
    """A byte-bounded store of packed records with sampled eviction (see module docstring)."""

    name = "memory"

    def __init__(
        self,
        capacity: int,
        *,
        ttl: float = 0.0,
        eviction: str = "lru",
        rng: random.Random | None = None,
    ) -> None:
        if eviction not in ("lru", "lfu"):
            raise ValueError(f"eviction must be 'lru' or 'lfu', not {eviction!r}")
        self.capacity = capacity
        #: Residence time: an item idle this long is handed down by pop_idle (0: never).
        self.ttl = ttl
        self.eviction = eviction
        self._rng = rng or random.Random()
        self._arena = Arena()
        #: Whether payloads are stored encoded (a subclass overrides ``_decode``).
        self._decodes = type(self)._decode is not MemoryTier._decode

    # Subclasses override these two: how a value is stored and read back.
    def _encode(self, value: bytes) -> bytes:
        return value

    def _decode(self, payload: bytes) -> bytes:
        return payload

    @property
    def bytes_held(self) -> int:
        """Live records (header, key, payload) + ``INDEX_SHARE`` per item + large payloads."""
        arena = self._arena
        return arena.record_bytes + len(arena) * INDEX_SHARE + arena.big_count * BIG_OVERHEAD

    def __len__(self) -> int:
        return len(self._arena)

    def __contains__(self, key: bytes) -> bool:
        return self._arena.find(key) != 0

    def holding(self, keys: list[bytes]) -> list[bytes]:
        """The ``keys`` held here."""
        find = self._arena.find
        return [k for k in keys if find(k)]

    def get(self, key: bytes, now: float) -> Item | None:
        """The item, its access time refreshed (its LFU counter bumped)."""
        found = self._arena.read(key)
        return None if found is None else self._served(found, now)

    def get_many(self, keys: Sequence[bytes], now: float) -> list[Item | None]:
        """``get`` of each key, in one loop (a batch read's tiers). The headers are all
        read first: a key asked twice has its access noted twice from the same header
        (one LFU bump, as ``live_values``)."""
        served = self._served
        return [None if f is None else served(f, now) for f in self._arena.read_many(keys)]

    def live_values(self, keys: Sequence[bytes], now: float) -> list[bytes | None]:
        """The value of each key held here live (neither a tombstone nor expired), its
        access noted as ``get`` notes it; None for every other key (a batch read's first
        tier, when only values are wanted: no Item per hit)."""
        now_ms = int(now * 1000)
        stale = int(now) - ACCESS_GRANULARITY  # an LRU access time to refresh: at most this
        if self.eviction == "lru":  # as _note_read does for LRU, in the arena's loop
            values = self._arena.read_live(keys, now_ms, stale, int(now))
            if self._decodes:
                decode = self._decode
                return [None if v is None else decode(v) for v in values]
            return values
        decode, note = self._decode, self._note_read
        values = []
        append = values.append
        for found in self._arena.read_many(keys):
            if found is None:
                append(None)
                continue
            loc, meta, payload = found
            if meta[5] & TOMBSTONE or 0 < meta[2] <= now_ms:
                append(None)
                continue
            note(loc, meta, now)
            append(decode(payload))
        return values

    def _served(self, found: tuple[int, Meta, bytes], now: float) -> Item:
        """The item of a record that a read found, its access noted."""
        loc, meta, payload = found
        self._note_read(loc, meta, now)
        version, origin, expires_ms, _access, priority, flags = meta[:6]
        return Item(
            self._decode(payload), version, origin, expires_ms, priority, bool(flags & TOMBSTONE)
        )

    def _note_read(self, loc: int, meta: Meta, now: float) -> None:
        """A read of the record at ``loc``: its access time and (LFU) counter, in place."""
        access, lfu = meta[3], meta[6]
        now_s = int(now)
        if self.eviction == "lfu":
            counter = self._lfu_bump(self._lfu_decay(lfu, access, now))
        else:
            counter = lfu
        if counter != lfu or now_s - access >= ACCESS_GRANULARITY:
            self._arena.set_access(loc, now_s, counter)

    def peek(self, key: bytes) -> Item | None:
        """The item without counting an access."""
        found = self._arena.read(key)
        return None if found is None else self._item(found[1], found[2])

    def put(self, key: bytes, item: Item, now: float) -> None:
        """Store ``item``, replacing any earlier entry; the caller evicts overflow."""
        self._arena.store(
            key,
            item.version,
            item.origin,
            item.expires_ms,
            int(now),
            item.priority,
            TOMBSTONE if item.tombstone else 0,
            LFU_INIT,
            self._encode(item.value),
        )

    def put_many(self, items: list[tuple[bytes, Item]], now: float) -> None:
        """``put`` each pair (in one loop: promotions and demotions come in batches)."""
        store, encode, access = self._arena.store, self._encode, int(now)
        for key, item in items:
            store(
                key,
                item.version,
                item.origin,
                item.expires_ms,
                access,
                item.priority,
                TOMBSTONE if item.tombstone else 0,
                LFU_INIT,
                encode(item.value),
            )

    def pop(self, key: bytes) -> Item | None:
        """Remove and return the item."""
        removed = self._arena.remove(key)
        return None if removed is None else self._item(removed[1], removed[2])

    def remove_if(self, key: bytes, item: Item) -> bool:
        """Remove ``key`` if held at ``item``'s version (see ``Tier.remove_if``)."""
        return self._arena.remove_if(key, item.version, item.origin)

    def evict_overflow(self, now: float) -> list[tuple[bytes, Item]]:
        """Remove the least valuable of sampled items until bytes held fit the capacity."""
        held = self.bytes_held
        if held <= self.capacity:
            return []
        arena = self._arena
        average = held // len(arena) if len(arena) else 1
        slack = min(self.capacity * (1 - LOW_WATERMARK), EVICTION_BATCH * average)
        target = int(self.capacity - slack)
        lfu = self.eviction == "lfu"
        victims: list[tuple[bytes, Item]] = []
        while held > target and len(arena):
            average = held // len(arena) or 1
            wanted = (held - target) // average + 1
            sample = arena.sample(wanted * EVICTION_RANDOM + 16, self._rng.random)
            if len(sample) < len(arena):
                sample += arena.sweep(wanted * EVICTION_SWEPT)
            # One int per candidate, ordered as (priority, [use,] access), location below:
            # ints sort several times faster than tuples.
            if lfu:
                decay = self._lfu_decay
                ranks = {
                    (((p + _PRIORITY_BIAS) << 8 | decay(c, a, now)) << 32 | a) << LOC_BITS | loc
                    for p, a, c, loc in sample
                }
            else:
                ranks = {
                    ((p + _PRIORITY_BIAS) << 32 | a) << LOC_BITS | loc for p, a, _c, loc in sample
                }
            ranked = sorted(ranks)  # a set: the hand and the random draws may meet
            for rank in ranked[:wanted]:
                loc = rank & LOC_MASK
                key, meta, payload = arena.remove_at(loc)
                victims.append((key, self._item(meta, payload)))
                # An estimate (exact but for large payloads' handles), made exact below.
                held -= HEADER_SIZE + len(key) + len(payload) + INDEX_SHARE
                if held <= target:
                    break
            held = self.bytes_held
        return victims

    def pop_idle(self, now: float, limit: int) -> list[tuple[bytes, Item]]:
        """Remove up to ``limit`` items not accessed within ``ttl``, oldest segments first."""
        if self.ttl <= 0 or limit <= 0:
            return []
        cutoff = int(now - self.ttl)
        return self._items(self._arena.pop_idle(cutoff, limit, limit * WALK_BUDGET))

    def pop_expired(self, now: float, limit: int) -> list[tuple[bytes, Item]]:
        """Remove up to ``limit`` items whose own expiry has passed."""
        if limit <= 0:
            return []
        return self._items(self._arena.pop_expired(int(now * 1000), limit, limit * WALK_BUDGET))

    def keys(self) -> Iterator[bytes]:
        """Every key held at the call (a snapshot, taken before the first ``next``)."""
        return iter(self._arena.key_list())

    def scan(self) -> Iterator[tuple[bytes, Item]]:
        """Every item held when the scan started and still held when reached."""
        for key in self._arena.key_list():
            item = self.peek(key)
            if item is not None:
                yield key, item

    def close(self) -> None:
        """Drop everything, unmap the arena (RAM tiers hold nothing that outlives the process)."""
        self._arena.clear()

    def _item(self, meta: tuple[int, ...], payload: bytes) -> Item:
        version, origin, expires_ms, _access, priority, flags = meta[:6]
        return Item(
            self._decode(payload), version, origin, expires_ms, priority, bool(flags & TOMBSTONE)
        )

    def _items(self, removed: list[Removed]) -> list[tuple[bytes, Item]]:
        return [(key, self._item(meta, payload)) for key, meta, payload in removed]

    def _lfu_decay(self, counter: int, access: int, now: float) -> int:
        periods = int((now - access) / LFU_DECAY_SECONDS)
        return max(counter - periods, 0) if periods > 0 else counter

    def _lfu_bump(self, counter: int) -> int:
        if counter >= 255:
            return 255
        base = max(counter - LFU_INIT, 0)
        if self._rng.random() < 1.0 / (base * LFU_LOG_FACTOR + 1):
            return counter + 1
        return counter


class HotTier(MemoryTier):
    """RAM, values stored as they are."""

    name = "hot"


class WarmTier(MemoryTier):
    """RAM, values zstd-compressed (with a dictionary trained on small values)."""

    name = "warm"

    def __init__(
        self,
        capacity: int,
        *,
        compression_level: int = 3,
        ttl: float = 0.0,
        eviction: str = "lru",
        rng: random.Random | None = None,
    ) -> None:
        super().__init__(capacity, ttl=ttl, eviction=eviction, rng=rng)
        self.codec = Codec(compression_level, background=True)

    def _encode(self, value: bytes) -> bytes:
        return self.codec.compress(value)

    def _decode(self, payload: bytes) -> bytes:
        return self.codec.decompress(payload)
