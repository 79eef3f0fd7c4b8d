"""Tier orchestration: one key lives in exactly one tier; items flow down and back up.

Writes land in the first enabled tier (hot). A tier over capacity hands its
eviction victims to the next tier down (demotion); the last tier drops them
(eviction). Items idle past a tier's residence ttl move down too. Reads that find
an item in a lower tier move it back to the top (promotion): by default the second
such read, so that items read once stay down (``promote_after``, ``promote_chance``
and ``promote_on_read``: admission.py). A node defers that move until
the read has been answered (``on_deferred``): the move, and the demotions it causes
below, are not the reader's to wait for. Deletes write tombstones that expire after
``tombstone_ttl``, so that a replica that missed the delete cannot resurrect the key.
Every write carries a hybrid-logical-clock version; ``apply`` (replication, transfer)
keeps whichever write is newer.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from memcluster.common.clock import Clock, SystemClock
from memcluster.common.config import LimitsConfig, MemoryConfig
from memcluster.common.versions import HybridClock
from memcluster.node.admission import Admission
from memcluster.node.limits import RequestLimits
from memcluster.node.tiers.base import Item, Tier
from memcluster.node.tiers.cold import ColdTier
from memcluster.node.tiers.memory import HotTier, WarmTier

FLUSH_BATCH = 1000
#: Reads whose promotion may wait at once, and the bytes of their values; past either a
#: read does not queue its item (the next read of it will).
MAX_DEFERRED = 4096
MAX_DEFERRED_BYTES = 16 << 20


@dataclass(slots=True)
class TierCounters:
    """What happened in one tier since the node started."""

    hits: int = 0
    misses: int = 0
    promotions: int = 0  # items this tier handed up on a read
    demotions: int = 0  # items this tier handed down
    evictions: int = 0  # items dropped for good (last tier only)
    expirations: int = 0  # items removed because their own expiry passed


@dataclass(frozen=True, slots=True)
class TierStats:
    """A snapshot of one tier for the stats RPC and the metrics endpoint."""

    name: str
    items: int
    bytes: int
    capacity: int
    counters: TierCounters


class TieredStore:
    """The node's storage: hot -> warm -> cold, single-threaded (the event loop's)."""

    def __init__(
        self,
        memory: MemoryConfig,
        limits: LimitsConfig,
        *,
        origin: int = 0,
        clock: Clock | None = None,
        cold_path: str | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self._clock = clock or SystemClock()
        #: The checks every request passes before it changes anything.
        self.limits = RequestLimits(limits)
        self._memory = memory
        self.origin = origin
        self.hlc = HybridClock(self._clock)
        t = memory.tiers
        tiers: list[Tier] = []
        if t.hot.enabled:
            tiers.append(HotTier(t.hot.capacity, ttl=t.hot.ttl, eviction=t.hot.eviction))
        if t.warm.enabled:
            tiers.append(
                WarmTier(
                    t.warm.capacity,
                    compression_level=t.warm.compression_level,
                    ttl=t.warm.ttl,
                    eviction=t.hot.eviction,
                )
            )
        if t.cold.enabled:
            path = cold_path or t.cold.path
            Path(path).mkdir(parents=True, exist_ok=True)
            self.cold: ColdTier | None = ColdTier(
                path,
                t.cold.capacity,
                t.cold.compression_level,
                clock=self._clock,
                sync_each_commit=t.cold.fsync_interval == 0,
            )
            tiers.append(self.cold)
        else:
            self.cold = None
        if not tiers:
            raise ValueError("memory.tiers: at least one tier must be enabled")
        self.tiers = tiers
        self.counters = {tier.name: TierCounters() for tier in tiers}
        self.churn_bytes = 0  # bytes written into plus removed from tiers
        #: Set by a node to take promotions off the read path: a read that finds an item
        #: in a lower tier answers at once and queues the move; the first key queued calls
        #: this, which is to make ``promote_deferred`` run soon. None: reads promote.
        self.on_deferred: Callable[[], None] | None = None
        #: Items to promote, as the reads found them, oldest read first.
        self._deferred: dict[bytes, Item] = {}
        self._deferred_bytes = 0  # their values' bytes, held outside any tier's accounting
        #: Whether a hit below the first tier promotes (``memory.promote_after``, ...).
        self.admission = Admission(memory, tiers[0].capacity, rng)
        self.configured_hot_capacity = tiers[0].capacity

    # -- reads ---------------------------------------------------------------

    def get(self, key: bytes) -> tuple[Item, str] | None:
        """The live item for ``key`` and the tier that served it; a hit below the first
        tier promotes the item (now, or queued when ``on_deferred`` is set)."""
        self.limits.key(key)
        return self._get(key, self._clock.now())

    def get_many(self, keys: Sequence[bytes]) -> list[tuple[Item, str] | None]:
        """``get`` of each key, all validated first, at one reading of the clock.

        The first tier is asked in one pass, and only its misses go further down. So the
        batch reads as of one instant: a key found in the first tier is answered from
        there even if a promotion for an earlier key of the batch then evicts it (in a
        store that promotes at once, without ``on_deferred``).
        """
        self.limits.keys(keys)
        now = self._clock.now()
        now_ms = int(now * 1000)
        first = self.tiers[0]
        served = first.name
        found: list[tuple[Item, str] | None] = []
        append = found.append
        hits = 0
        for key, item in zip(keys, first.get_many(keys, now), strict=True):
            if item is None:
                # Asked again from the top: an earlier key of this batch may have been
                # promoted into the first tier (the same key twice, say, in a store that
                # promotes at once).
                append(self._get(key, now))
            elif item.tombstone or 0 < item.expires_ms <= now_ms:
                append(self._serve(0, key, item, now))
            else:
                hits += 1
                append((item, served))
        self.counters[served].hits += hits
        return found

    def values_many(self, keys: Sequence[bytes]) -> list[bytes | None]:
        """The value of each key (None when absent), as ``get_many`` would answer it: the
        same promotions, expiry and counters, without an Item per hit in the first tier."""
        self.limits.keys(keys)
        now = self._clock.now()
        first = self.tiers[0]
        values = first.live_values(keys, now)
        misses = values.count(None)
        self.counters[first.name].hits += len(values) - misses
        if misses:
            missing = [i for i, v in enumerate(values) if v is None]
            if self.on_deferred is not None:
                self._values_below(keys, values, missing, now)
                return values
            # Asked again from the top, as get_many does: tombstones and expired items of
            # the first tier are dealt with there, and a key an earlier read of the batch
            # promoted at once is found.
            get = self._get
            for index in missing:
                found = get(keys[index], now)
                if found is not None:
                    values[index] = found[0].value
        return values

    def _values_below(
        self, keys: Sequence[bytes], values: list[bytes | None], missing: list[int], now: float
    ) -> None:
        """Fill in ``values`` at the indexes ``missing`` (the first tier's misses) from the
        tiers below, each asked once for all of them, with the counters a single read of
        each key would leave.

        Only while promotions are deferred: then no read of the batch moves an item up.
        A key the first tier holds as a tombstone or an expired item (``live_values``
        answers neither) is held in no other tier, so only the keys no tier below holds
        are looked at there again, as ``_get`` would.
        """
        tiers, counters = self.tiers, self.counters
        for depth in range(1, len(tiers)):
            rest: list[int] = []
            served = 0
            found_below = tiers[depth].get_many([keys[i] for i in missing], now)
            for index, item in zip(missing, found_below, strict=True):
                if item is None:
                    rest.append(index)
                    continue
                served += 1
                found = self._serve(depth, keys[index], item, now)
                if found is not None:
                    values[index] = found[0].value
            for above in tiers[:depth]:  # as _get counts the tiers it passed
                counters[above.name].misses += served
            missing = rest
            if not missing:
                return
        first = tiers[0]
        for index in missing:
            item = first.get(keys[index], now)
            if item is not None:  # a tombstone, or expired: None, as _serve deals with it
                self._serve(0, keys[index], item, now)
            else:
                for tier in tiers:
                    counters[tier.name].misses += 1

    def _get(self, key: bytes, now: float) -> tuple[Item, str] | None:
        for depth, tier in enumerate(self.tiers):
            item = tier.get(key, now)
            if item is not None:
                return self._serve(depth, key, item, now)
            self.counters[tier.name].misses += 1
        return None

    def _serve(self, depth: int, key: bytes, item: Item, now: float) -> tuple[Item, str] | None:
        """What a read that found ``item`` in tier ``depth`` answers (expiry, tombstones,
        promotion)."""
        tier = self.tiers[depth]
        counters = self.counters[tier.name]
        if item.expired(int(now * 1000)):
            if tier.pop(key) is not None:
                counters.expirations += 1
            else:  # an earlier key of the batch read it and removed it: absent by now
                for below in self.tiers[depth:]:  # a single read's misses on its way down
                    self.counters[below.name].misses += 1
            return None
        if item.tombstone:
            counters.misses += 1
            return None
        counters.hits += 1
        if not depth or key in self._deferred:  # in the first tier, or on its way there
            return item, tier.name
        if self.on_deferred is None:
            if self.admission.promotes(key):
                tier.pop(key)
                counters.promotions += 1
                self._land(key, item, now)
        elif (
            # Admission only where there is room: a read the queue cannot take leaves
            # the key's count as it was, for the next read.
            len(self._deferred) < MAX_DEFERRED
            and self._deferred_bytes < MAX_DEFERRED_BYTES
            and self.admission.promotes(key)
        ):
            if not self._deferred:
                self.on_deferred()
            self._deferred_bytes += len(item.value)
            self._deferred[key] = item
        return item, tier.name

    @property
    def deferred(self) -> int:
        """Promotions queued (see ``on_deferred``)."""
        return len(self._deferred)

    def drop_deferred(self) -> None:
        """Forget the promotions queued (the items stay where they are)."""
        self._deferred.clear()
        self._deferred_bytes = 0

    def promote_deferred(self, limit: int) -> int:
        """Promote up to ``limit`` of the items reads found in lower tiers (see
        ``on_deferred``), into the first tier in one batch; returns how many are still
        waiting.

        An item moves only if a lower tier still holds the very version the read found
        (``Tier.remove_if``): whatever a write or a transfer did meanwhile wins (a key
        rewritten since sits in the first tier already; a newer copy handed over stays
        where it landed until it is read).
        """
        deferred = self._deferred
        now = self._clock.now()
        now_ms = int(now * 1000)
        landing: list[tuple[bytes, Item]] = []
        below = [(tier.remove_if, self.counters[tier.name]) for tier in self.tiers[1:]]
        for _ in range(min(limit, len(deferred))):
            key = next(iter(deferred))
            item = deferred.pop(key)
            self._deferred_bytes -= len(item.value)
            for remove_if, counters in below:
                if remove_if(key, item):
                    if 0 < item.expires_ms <= now_ms:  # Item.expired, without a call per item
                        counters.expirations += 1
                        self._churn([(key, item)])
                    else:
                        counters.promotions += 1
                        landing.append((key, item))
                    break
        if landing:
            self._land_many(landing, now)
        return len(deferred)

    def fetch(self, key: bytes) -> Item | None:
        """The stored item (tombstones included, expired excluded) without touching recency."""
        now_ms = int(self._clock.now() * 1000)
        item = self._peek(key)
        return None if item is None or item.expired(now_ms) else item

    # -- writes --------------------------------------------------------------

    def put(self, key: bytes, value: bytes, ttl: float | None = None, priority: int = 0) -> int:
        """Store a new value; returns its version."""
        return self.write(key, value, ttl, priority).version

    def write(self, key: bytes, value: bytes, ttl: float | None = None, priority: int = 0) -> Item:
        """Store a new value; returns the stored item (to replicate)."""
        self.limits.put(key, value, ttl, priority)
        now = self._clock.now()
        item = Item(value, self.hlc.now(), self.origin, self._expiry(ttl, now), priority)
        self._write(key, item, now)
        return item

    def write_many(self, puts: Sequence[tuple[bytes, bytes, float | None, int]]) -> list[Item]:
        """Validate every put first (a bad one applies none), then store them all."""
        for index, (key, value, ttl, priority) in enumerate(puts):
            self.limits.put(key, value, ttl, priority, where=f"items[{index}]")
        now = self._clock.now()
        self._evict_from_other_tiers([p[0] for p in puts])
        top, version, origin, expiry = self.tiers[0], self.hlc.now, self.origin, self._expiry
        written = []
        churn = 0
        for key, value, ttl, priority in puts:
            item = Item(value, version(), origin, expiry(ttl, now), priority)
            top.put(key, item, now)
            churn += len(key) + len(value)
            written.append(item)
        self.churn_bytes += churn
        # One eviction pass for the batch: the top tier overshoots by one batch at most.
        victims = top.evict_overflow(now)
        if victims:
            self._hand_down(0, victims, now)
        return written

    def discard(self, key: bytes) -> bool:
        """Forget ``key`` without a tombstone (its data moved to its new owners)."""
        removed = False
        for tier in self.tiers:
            item = tier.pop(key)
            if item is not None:
                removed = True
                self.churn_bytes += len(key) + len(item.value)
        return removed

    def discard_many(self, keys: list[bytes]) -> int:
        """``discard`` each key; returns how many were held. Each tier is looked up once
        for the whole batch (the cold tier: one read and one write transaction)."""
        removed: set[bytes] = set()
        for tier in self.tiers:
            held = tier.holding(keys)
            if not held:
                continue
            popped = (
                tier.pop_many(held)
                if isinstance(tier, ColdTier)
                else [(k, i) for k in held if (i := tier.pop(k)) is not None]
            )
            removed.update(k for k, _ in popped)
            self._churn(popped)
        return len(removed)

    def delete(self, key: bytes) -> tuple[bool, Item]:
        """Replace the item with a tombstone; returns (a live item existed, the tombstone)."""
        self.limits.key(key)
        now = self._clock.now()
        existing = self._peek(key)
        existed = (
            existing is not None
            and not existing.tombstone
            and not existing.expired(int(now * 1000))
        )
        expires = int((now + self._memory.tombstone_ttl) * 1000)
        tombstone = Item(b"", self.hlc.now(), self.origin, expires, 0, tombstone=True)
        self._write(key, tombstone, now)
        return existed, tombstone

    def touch(self, key: bytes, ttl: float | None, priority: int | None = None) -> Item | None:
        """Give a live item a new expiry (None: never) and optionally a new priority."""
        self.limits.key(key)
        if ttl is not None:
            self.limits.put(key, b"", ttl)
        if priority is not None:
            self.limits.priority(priority)
        now = self._clock.now()
        item = self._peek(key)
        if item is None or item.tombstone or item.expired(int(now * 1000)):
            return None
        item.expires_ms = self._expiry(ttl, now)
        if priority is not None:
            item.priority = priority
        item.version = self.hlc.now()
        item.origin = self.origin
        self._write(key, item, now)
        return item

    def apply(self, key: bytes, item: Item) -> bool:
        """Store a write made elsewhere if it beats what is held (last writer wins)."""
        return self.apply_many([(key, item)]) == 1

    def apply_many(self, items: Sequence[tuple[bytes, Item]], *, roomy: bool = False) -> int:
        """``apply`` of each pair in order, with one eviction pass for the batch (as
        ``write_many``): replication and migration batches. Returns how many won.

        ``roomy`` lands the winners in the first tier with room for all of them, else in
        the last tier, and pushes nothing down: what a migration hands over. A new
        owner's empty RAM tiers take the items for the cost of a copy (no compression,
        no disk write while they have room); after that each item is compressed once,
        straight into the last tier, instead of again in every tier on its way down;
        and what the node already holds in RAM is not demoted for items nobody has
        asked for yet (the node answers requests meanwhile).
        """
        self.limits.keys([key for key, _ in items])
        now = self._clock.now()
        now_ms = int(now * 1000)
        observe, peek = self.hlc.observe, self._peek
        winners: dict[bytes, Item] = {}
        applied = 0
        for key, item in items:
            if item.expired(now_ms):
                continue
            observe(item.version)
            held = winners.get(key)
            if held is None:
                held = peek(key)
            if held is not None and held.order() >= item.order():
                continue
            winners[key] = item
            applied += 1
        if not winners:
            return 0
        depth = self._roomy(winners) if roomy else 0
        self._evict_from_other_tiers(list(winners), depth)
        landing = self.tiers[depth]
        landing.put_many(list(winners.items()), now)
        self.churn_bytes += sum(len(key) + len(item.value) for key, item in winners.items())
        victims = landing.evict_overflow(now)
        if victims:
            self._hand_down(depth, victims, now)
        return applied

    def _roomy(self, items: dict[bytes, Item]) -> int:
        """The first tier with room for ``items`` as they are (no demotion), else the last."""
        # Raw sizes and a generous per-item overhead: a tier that compresses has more room.
        size = sum(len(key) + len(item.value) for key, item in items.items()) + 64 * len(items)
        for depth, tier in enumerate(self.tiers[:-1]):
            if tier.bytes_held + size <= tier.capacity:
                return depth
        return len(self.tiers) - 1

    # -- background work -----------------------------------------------------

    def maintenance_step(self, budget: int) -> int:
        """Expire and demote at most ``budget`` items per tier; returns items handled."""
        now = self._clock.now()
        handled = 0
        for depth, tier in enumerate(self.tiers):
            expired = tier.pop_expired(now, budget)
            self.counters[tier.name].expirations += len(expired)
            self._churn(expired)
            idle = tier.pop_idle(now, budget)
            handled += len(expired) + len(idle)
            if idle:
                self._hand_down(depth, idle, now)
        return handled

    def set_hot_capacity(self, capacity: int) -> int:
        """Resize the top tier (memory pressure); returns how many items moved down."""
        top = self.tiers[0]
        top.capacity = max(capacity, 0)
        victims = top.evict_overflow(self._clock.now())
        self._hand_down(0, victims, self._clock.now())
        return len(victims)

    def flush_down(self) -> int:
        """Move every item of the RAM tiers into the cold tier (planned shutdown)."""
        if len(self.tiers) < 2 or not isinstance(self.tiers[-1], ColdTier):
            return 0
        cold = self.tiers[-1]
        now = self._clock.now()
        moved = 0
        for depth, tier in enumerate(self.tiers[:-1]):
            batch: list[tuple[bytes, Item]] = []
            for key, _item in tier.scan():
                popped = tier.pop(key)
                if popped is None or popped.expired(int(now * 1000)):
                    continue
                batch.append((key, popped))
                if len(batch) >= FLUSH_BATCH:
                    moved += self._flush_batch(cold, depth, batch, now)
                    batch = []
            moved += self._flush_batch(cold, depth, batch, now)
        cold.evict_overflow(now)
        return moved

    def keys(self) -> Iterator[bytes]:
        """Every stored key (tombstones included) as of the call.

        All tiers are snapshotted at one instant, before anything else can run: an
        item moving between tiers while the caller iterates is neither missed nor seen
        twice (a migration that missed a key would leave it with too few replicas).
        """
        return itertools.chain.from_iterable([tier.keys() for tier in self.tiers])

    def scan(self) -> Iterator[tuple[bytes, Item]]:
        """Every stored item (tombstones included), tier by tier."""
        for tier in self.tiers:
            yield from tier.scan()

    def stats(self) -> list[TierStats]:
        """Per-tier items, bytes, capacity and counters."""
        return [
            TierStats(t.name, len(t), t.bytes_held, t.capacity, self.counters[t.name])
            for t in self.tiers
        ]

    def close(self) -> None:
        """Close every tier (the cold tier's files included)."""
        for tier in self.tiers:
            tier.close()

    # -- internals -----------------------------------------------------------

    def _peek(self, key: bytes) -> Item | None:
        for tier in self.tiers:
            item = tier.peek(key)
            if item is not None:
                return item
        return None

    def _write(self, key: bytes, item: Item, now: float) -> None:
        self._evict_from_other_tiers([key])
        self._land(key, item, now)

    def _evict_from_other_tiers(self, keys: list[bytes], landing: int = 0) -> None:
        """Remove older copies outside the tier ``keys`` land in (its own put replaces
        them there): a key lives in one tier only."""
        for depth, tier in enumerate(self.tiers):
            if depth == landing or not len(tier):
                continue
            held = [k for k in keys if k in tier] if len(keys) == 1 else tier.holding(keys)
            for key in held:
                removed = tier.pop(key)
                if removed is not None:
                    self.churn_bytes += len(key) + len(removed.value)

    def _land(self, key: bytes, item: Item, now: float) -> None:
        self._land_many([(key, item)], now)

    def _land_many(self, items: list[tuple[bytes, Item]], now: float) -> None:
        """Put ``items`` in the first tier, then make room with one eviction pass."""
        top = self.tiers[0]
        top.put_many(items, now)
        self._churn(items)
        victims = top.evict_overflow(now)
        if victims:
            self._hand_down(0, victims, now)

    def _hand_down(self, depth: int, items: list[tuple[bytes, Item]], now: float) -> None:
        """Items leaving tier ``depth``: into the next tier, or gone from the last."""
        while items:
            source = self.counters[self.tiers[depth].name]
            now_ms = int(now * 1000)
            # Item.expired inlined: a step per item of every demotion batch.
            live = [(k, i) for k, i in items if not 0 < i.expires_ms <= now_ms]
            source.expirations += len(items) - len(live)
            if depth + 1 >= len(self.tiers):
                source.evictions += len(live)
                self._churn(live)
                return
            source.demotions += len(live)
            below = self.tiers[depth + 1]
            below.put_many(live, now)
            items = below.evict_overflow(now)
            depth += 1

    def _flush_batch(
        self, cold: Tier, depth: int, batch: list[tuple[bytes, Item]], now: float
    ) -> int:
        if batch:
            cold.put_many(batch, now)
            self.counters[self.tiers[depth].name].demotions += len(batch)
        return len(batch)

    def _churn(self, items: Iterable[tuple[bytes, Item]]) -> None:
        self.churn_bytes += sum(len(k) + len(i.value) for k, i in items)

    def _expiry(self, ttl: float | None, now: float) -> int:
        return 0 if ttl is None else int((now + ttl) * 1000)
