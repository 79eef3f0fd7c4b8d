"""Cold-tier latency: ColdTier get/peek and put_many, then TieredStore gets that promote.

A ColdTier in a temporary directory is filled with ~1 KB JSON user profiles through
``put_many`` in batches of ``PUT_BATCH`` (one synced LMDB transaction each, as the
store's demotions and shutdown flushes do). Then uniformly random keys are read
one call at a time with ``get`` (which notes the access and applies the notes in a
synced write every ``TOUCH_BATCH`` gets) and with ``peek`` (read-only).

Then a TieredStore opens the same directory as its cold tier (hot and warm empty)
and reads distinct random keys: each read misses hot and warm, hits cold and
promotes the item (a synced removal from LMDB, a put into hot; the store promotes on
every such read, ``memory.promote_after: 1``, so that each timed read is the one
that promotes, as the second is by default). Reading the same keys again measures
hot hits through the same store, for contrast.

Disk use per item is reported twice: the tier's own accounting (``bytes_held``) and
the size of LMDB's data file, which also holds B-tree page slack and free pages.
"""

from __future__ import annotations

import os
import random
import tempfile
import time
from typing import Any

from bench import dataset, timing
from memcluster.common.config import NodeConfig
from memcluster.node.store import TieredStore
from memcluster.node.tiers.base import Item
from memcluster.node.tiers.cold import TOUCH_BATCH, ColdTier

PUT_BATCH = 1000
CAPACITY = 10 << 30  # never evicts at these sizes
SEED = 7


def key(i: int) -> bytes:
    """The i-th cold benchmark key."""
    return b"user:%08d" % i


def measure_cold(items: int, gets: int, promotions: int, time_budget: float) -> dict[str, Any]:
    """Fill, then time ``gets`` gets and peeks and ``promotions`` store reads (each phase
    stopping after ``time_budget`` seconds)."""
    values = dataset.values("medium", items, SEED)
    rng = random.Random(SEED)
    with tempfile.TemporaryDirectory(prefix="bench-cold-") as path:
        cold = ColdTier(path, CAPACITY, 5)
        try:
            put = _fill(cold, values, time_budget)
            loaded = len(cold)
            keys = [key(rng.randrange(loaded)) for _ in range(gets)]
            now = time.time()
            get = timing.summary(timing.sample(lambda k: cold.get(k, now), keys, time_budget))
            peek = timing.summary(timing.sample(cold.peek, keys, time_budget))
            held = cold.bytes_held
            file_bytes = os.stat(os.path.join(path, "data.mdb")).st_size
        finally:
            cold.close()
        store = _store(path)
        try:
            distinct = [key(i) for i in rng.sample(range(loaded), min(promotions, loaded))]
            promote = timing.sample(_expect(store, "cold"), distinct, time_budget)
            hot = timing.sample(_expect(store, "hot"), distinct[: len(promote)], time_budget)
        finally:
            store.close()
    return {
        "items": loaded,
        "value_bytes_avg": sum(map(len, values[:loaded])) / loaded,
        "bytes_held_per_item": held / loaded,
        "file_bytes_per_item": file_bytes / loaded,
        "touch_batch": TOUCH_BATCH,
        "put_many": put,
        "get": get,
        "peek": peek,
        "store_get_cold_promote": timing.summary(promote),
        "store_get_hot": timing.summary(hot),
    }


def _fill(cold: ColdTier, values: list[bytes], time_budget: float) -> dict[str, float]:
    """put_many in batches until every value is in or the budget is spent; throughput."""
    deadline = time.monotonic() + time_budget
    now = time.time()
    start = time.perf_counter()
    done = 0
    while done < len(values) and time.monotonic() < deadline:
        batch = values[done : done + PUT_BATCH]
        cold.put_many([(key(done + j), Item(v, 1)) for j, v in enumerate(batch)], now)
        done += len(batch)
    seconds = time.perf_counter() - start
    raw = sum(map(len, values[:done]))
    return {
        "batch": PUT_BATCH,
        "items_per_s": done / seconds,
        "mb_per_s": raw / seconds / 1e6,
        "batch_ms": seconds / -(-done // PUT_BATCH) * 1000,
    }


def _store(path: str) -> TieredStore:
    tiers = {"cold": {"path": path, "capacity": CAPACITY}}
    config = NodeConfig.from_mapping({"memory": {"tiers": tiers, "promote_after": 1}})
    return TieredStore(config.memory, config.limits)


def _expect(store: TieredStore, tier: str) -> Any:
    """A store read that fails loudly unless ``tier`` served it (the benchmark's premise)."""

    def get(k: bytes) -> None:
        found = store.get(k)
        if found is None or found[1] != tier:
            raise RuntimeError(f"{k!r} was served by {found and found[1]}, not by {tier}")

    return get
