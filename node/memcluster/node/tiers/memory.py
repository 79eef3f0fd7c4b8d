"""The in-RAM tiers: hot (values as they are) and warm (values zstd-compressed).

Both keep one ``bytes`` record per key (see record.py) in a plain dict. The dict's
insertion order is the recency order: a put or a read moves the key to the end,
so the front holds the least recently used items. Eviction looks at a window of
the oldest items and removes the lowest priority first (LRU), or the lowest
priority then the lowest use counter (LFU: Redis's logarithmic counter with time
decay, kept in the record header). Survivors of higher priority get a second
chance at the back of the order. Evictions run in batches down to a low
watermark so that the scan of the dict's front is amortised over many puts.

Per-item expiry is indexed by whole seconds (a dict of buckets and a heap of
bucket times), so expiring costs nothing until an item is due; stale index
entries (keys since removed or re-timed) are skipped when their second comes.
"""

from __future__ import annotations

import heapq
import math
import random
from collections.abc import Callable, Iterator
from itertools import islice

from memcluster.node.tiers import record
from memcluster.node.tiers.base import Item
from memcluster.node.tiers.codec import Codec

#: Bytes of Python overhead per item beyond key and record lengths: two bytes
#: objects' headers (2 x 33), the dict entry and its index share, allocator rounding.
#: Measured with tracemalloc at 200k items of 12-byte keys and 126-byte records.
ITEM_OVERHEAD = 112
EVICTION_WINDOW = 16
LOW_WATERMARK = 0.99  # evict down to this fraction of capacity once over it
LFU_INIT = 5  # new items start warm enough not to be evicted at once (as Redis)
LFU_LOG_FACTOR = 10
LFU_DECAY_SECONDS = 60.0  # the counter drops by one per idle minute
ACCESS_GRANULARITY = 1  # seconds: finer access times would rewrite records on every read

Encode = Callable[[bytes], bytes]
Decode = Callable[[bytes], bytes]

_HDR = record.HEADER_SIZE
_meta = record.meta
_pack = record.HEADER.pack


class MemoryTier:
    """A byte-bounded, insertion-ordered dict of packed records (see module docstring)."""

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
        self._data: dict[bytes, bytes] = {}
        self._bytes = 0
        self._expiry: dict[int, list[bytes]] = {}
        self._expiry_heap: list[int] = []
        self._expiry_entries = 0

    # Subclasses override these two: how a value is stored and read back.
    def _encode(self, value: bytes) -> bytes:
        return value

    def _decode(self, payload: bytes) -> bytes:
        return payload

    @property
    def bytes_held(self) -> int:
        """Keys + records + ITEM_OVERHEAD per item."""
        return self._bytes

    def __len__(self) -> int:
        return len(self._data)

    def __contains__(self, key: bytes) -> bool:
        return key in self._data

    def holding(self, keys: list[bytes]) -> list[bytes]:
        """The ``keys`` held here."""
        data = self._data
        return [k for k in keys if k in data]

    def get(self, key: bytes, now: float) -> Item | None:
        """The item, moved to the back of the recency order (its LFU counter bumped)."""
        rec = self._data.pop(key, None)
        if rec is None:
            return None
        version, origin, expires_ms, access, priority, flags, lfu = _meta(rec)
        now_s = int(now)
        if self.eviction == "lfu":
            counter = self._lfu_bump(self._lfu_decay(lfu, access, now))
        else:
            counter = lfu
        if counter != lfu or now_s - access >= ACCESS_GRANULARITY:
            rec = _pack(version, origin, expires_ms, now_s, priority, flags, counter) + rec[_HDR:]
        self._data[key] = rec
        return Item(
            self._decode(rec[_HDR:]),
            version,
            origin,
            expires_ms,
            priority,
            bool(flags & record.TOMBSTONE),
        )

    def peek(self, key: bytes) -> Item | None:
        """The item without counting an access."""
        rec = self._data.get(key)
        if rec is None:
            return None
        return record.unpack(rec, self._decode(rec[_HDR:]))

    def put(self, key: bytes, item: Item, now: float) -> None:
        """Store ``item`` at the back of the recency order; the caller evicts overflow."""
        rec = record.pack(item, self._encode(item.value), int(now), LFU_INIT)
        old = self._data.pop(key, None)
        if old is not None:
            self._bytes -= len(key) + len(old) + ITEM_OVERHEAD
        self._data[key] = rec
        self._bytes += len(key) + len(rec) + ITEM_OVERHEAD
        if item.expires_ms:
            self._index_expiry(key, item.expires_ms)

    def put_many(self, items: list[tuple[bytes, Item]], now: float) -> None:
        """``put`` each pair."""
        for key, item in items:
            self.put(key, item, now)

    def pop(self, key: bytes) -> Item | None:
        """Remove and return the item."""
        rec = self._remove(key)
        if rec is None:
            return None
        return record.unpack(rec, self._decode(rec[_HDR:]))

    def evict_overflow(self, now: float) -> list[tuple[bytes, Item]]:
        """Remove items, least valuable first, until bytes held <= LOW_WATERMARK x capacity."""
        if self._bytes <= self.capacity:
            return []
        target = int(self.capacity * LOW_WATERMARK)
        victims: list[tuple[bytes, Item]] = []
        while self._bytes > target and self._data:
            average = self._bytes // len(self._data) or 1
            wanted = min(len(self._data), (self._bytes - target) // average + EVICTION_WINDOW)
            # One pass over the dict's front per batch: see the module docstring.
            candidates = list(islice(self._data, wanted + wanted // 4))
            for start in range(0, len(candidates), EVICTION_WINDOW):
                if self._bytes <= target:
                    break
                self._evict_window(
                    candidates[start : start + EVICTION_WINDOW], now, target, victims
                )
        return victims

    def pop_idle(self, now: float, limit: int) -> list[tuple[bytes, Item]]:
        """Remove up to ``limit`` items from the front not accessed within ``ttl``."""
        if self.ttl <= 0:
            return []
        cutoff = now - self.ttl
        idle: list[bytes] = []
        for key in islice(self._data, limit):
            if _meta(self._data[key])[3] > cutoff:
                break
            idle.append(key)
        return [(key, item) for key in idle if (item := self.pop(key)) is not None]

    def pop_expired(self, now: float, limit: int) -> list[tuple[bytes, Item]]:
        """Remove up to ``limit`` items whose own expiry has passed (examining as many)."""
        now_ms = int(now * 1000)
        due_second = math.floor(now)
        removed: list[tuple[bytes, Item]] = []
        examined = 0
        heap = self._expiry_heap
        while heap and heap[0] <= due_second and examined < limit:
            bucket = self._expiry[heap[0]]
            while bucket and examined < limit:
                key = bucket.pop()
                examined += 1
                self._expiry_entries -= 1
                rec = self._data.get(key)
                if rec is not None and 0 < _meta(rec)[2] <= now_ms:
                    item = self.pop(key)
                    assert item is not None
                    removed.append((key, item))
            if not bucket:
                del self._expiry[heapq.heappop(heap)]
        return removed

    def keys(self) -> Iterator[bytes]:
        """Every key held at the call (a snapshot, taken before the first ``next``)."""
        return iter(list(self._data))

    def scan(self) -> Iterator[tuple[bytes, Item]]:
        """Every item held when the scan started and still held when reached."""
        for key in list(self._data):
            item = self.peek(key)
            if item is not None:
                yield key, item

    def close(self) -> None:
        """Drop everything (RAM tiers hold nothing that outlives the process)."""
        self._data.clear()
        self._expiry.clear()
        self._expiry_heap.clear()
        self._bytes = self._expiry_entries = 0

    def _remove(self, key: bytes) -> bytes | None:
        rec = self._data.pop(key, None)
        if rec is not None:
            self._bytes -= len(key) + len(rec) + ITEM_OVERHEAD
        return rec

    def _evict_window(
        self, window: list[bytes], now: float, target: int, victims: list[tuple[bytes, Item]]
    ) -> None:
        scored = []
        for position, key in enumerate(window):
            rec = self._data.get(key)
            if rec is None:
                continue
            _v, _o, _e, access, priority, _f, lfu = _meta(rec)
            use = self._lfu_decay(lfu, access, now) if self.eviction == "lfu" else 0
            scored.append((priority, use, position, key))
        scored.sort()
        evicted_priority: int | None = None
        for priority, _use, _position, key in scored:
            if self._bytes <= target:
                break
            item = self.pop(key)
            assert item is not None
            victims.append((key, item))
            evicted_priority = priority
        if evicted_priority is None:
            return
        # Second chance: survivors that outrank every victim move to the back.
        for priority, _use, _position, key in scored:
            if priority > evicted_priority and key in self._data:
                self._data[key] = self._data.pop(key)

    def _index_expiry(self, key: bytes, expires_ms: int) -> None:
        second = -(-expires_ms // 1000)
        bucket = self._expiry.get(second)
        if bucket is None:
            bucket = self._expiry[second] = []
            heapq.heappush(self._expiry_heap, second)
        bucket.append(key)
        self._expiry_entries += 1
        if self._expiry_entries > 2 * len(self._data) + 1024:
            self._rebuild_expiry_index()

    def _rebuild_expiry_index(self) -> None:
        """Drop stale index entries (keys removed or re-timed since they were indexed)."""
        self._expiry.clear()
        self._expiry_heap.clear()
        self._expiry_entries = 0
        for key, rec in self._data.items():
            expires_ms = _meta(rec)[2]
            if expires_ms:
                second = -(-expires_ms // 1000)
                bucket = self._expiry.setdefault(second, [])
                bucket.append(key)
                self._expiry_entries += 1
        self._expiry_heap = list(self._expiry)
        heapq.heapify(self._expiry_heap)

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
        self.codec = Codec(compression_level)

    def _encode(self, value: bytes) -> bytes:
        return self.codec.compress(value)

    def _decode(self, payload: bytes) -> bytes:
        return self.codec.decompress(payload)
