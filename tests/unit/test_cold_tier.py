"""The cold tier against a real LMDB environment in a temporary directory."""

from __future__ import annotations

import json
import logging
import random
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import lmdb
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from memcluster.common.clock import ManualClock
from memcluster.common.config import NodeConfig
from memcluster.common.errors import InternalError, InvalidRequest
from memcluster.node.runtime import NodeRuntime
from memcluster.node.tiers import record
from memcluster.node.tiers.base import Item
from memcluster.node.tiers.cold import (
    DIGEST_KEY_LEN,
    DIGEST_MARKER,
    LONG_KEY,
    RAW_KEY_MAX,
    ColdTier,
    stored_key,
)

NOW = 1_700_000_000.0
GiB = 1 << 30
DEADLINE = 10.0  # seconds a wait for another thread may take before the test fails


@pytest.fixture
def path(tmp_path: Path) -> str:
    return str(tmp_path / "cold")


@pytest.fixture
def tier(path: str) -> Iterator[ColdTier]:
    cold = ColdTier(path, GiB)
    yield cold
    cold.close()


def doc(i: int) -> bytes:
    """A small JSON document, similar to its neighbours as real ones are."""
    tags = ["alpha", "beta", "gamma"][: i % 4]
    user = {"id": i, "user": f"user-{i}", "email": f"u{i}@example.com", "tags": tags}
    return json.dumps(user | {"active": i % 3 == 0, "score": (i * 7919) % 1000}).encode()


def noise(n: int, seed: int | bytes = 0) -> bytes:
    return random.Random(seed).randbytes(n)


@pytest.mark.parametrize(
    "value",
    [b"", doc(1), noise(64 << 10), b"x" * (64 << 10), noise(1 << 20), b"y" * (1 << 20)],
    ids=["empty", "json", "64k-random", "64k-repetitive", "1m-random", "1m-repetitive"],
)
def test_put_get_pop_round_trip(tier: ColdTier, value: bytes) -> None:
    item = Item(value, version=7, origin=3, expires_ms=1_800_000_000_000, priority=-5)
    tier.put(b"k", item, NOW)
    assert b"k" in tier and len(tier) == 1
    assert tier.get(b"k", NOW) == item
    assert tier.peek(b"k") == item
    assert tier.bytes_held > len(b"k")
    assert tier.pop(b"k") == item
    assert b"k" not in tier and len(tier) == 0 and tier.bytes_held == 0
    assert tier.get(b"k", NOW) is None and tier.pop(b"k") is None


def test_metadata_and_tombstones_round_trip(tier: ColdTier) -> None:
    items = {
        b"tomb": Item(b"", version=2**63, origin=65535, tombstone=True),
        b"hi": Item(b"v", version=1, priority=record.PRIORITY_MAX, expires_ms=1),
        b"lo": Item(b"v", version=1, priority=record.PRIORITY_MIN),
    }
    tier.put_many(list(items.items()), NOW)
    assert {k: tier.peek(k) for k in items} == items
    assert dict(tier.scan()) == items


def test_put_replaces_and_batches_keep_the_last(tier: ColdTier) -> None:
    tier.put(b"k", Item(b"one" * 100, 1), NOW)
    tier.put_many([(b"k", Item(b"two", 2)), (b"j", Item(b"x", 1)), (b"k", Item(b"three", 3))], NOW)
    assert len(tier) == 2
    assert tier.peek(b"k") == Item(b"three", 3)
    popped = tier.pop_many([b"k", b"absent", b"j"])
    assert popped == [(b"k", Item(b"three", 3)), (b"j", Item(b"x", 1))]
    assert tier.bytes_held == 0


def test_empty_key_is_refused(tier: ColdTier) -> None:
    with pytest.raises(InvalidRequest):
        tier.put(b"", Item(b"v", 1), NOW)
    with pytest.raises(InvalidRequest):
        tier.put_many([(b"ok", Item(b"v", 1)), (b"", Item(b"v", 1))], NOW)
    assert len(tier) == 0  # the batch is refused whole
    assert b"" not in tier and tier.get(b"", NOW) is None and tier.peek(b"") is None
    assert tier.pop(b"") is None and tier.pop_many([b""]) == []


def test_reopen_keeps_items_counters_and_bytes(path: str) -> None:
    tier = ColdTier(path, GiB)
    tier.put_many(
        [(b"k%d" % i, Item(doc(i) * (i % 5), i, priority=i % 3)) for i in range(300)], NOW
    )
    tier.pop(b"k7")
    before = (dict(tier.scan()), len(tier), tier.bytes_held)
    tier.close()
    tier = ColdTier(path, GiB)
    assert (dict(tier.scan()), len(tier), tier.bytes_held) == before
    tier.close()


def test_trained_dictionary_survives_reopen(path: str) -> None:
    tier = ColdTier(path, GiB)
    values = {b"doc:%d" % i: doc(i) for i in range(2500)}
    for index, (key, value) in enumerate(values.items()):
        if index == 2000:
            tier._codec.settle()  # the sample is full: let the worker thread's training land
        tier.put(key, Item(value, 1), NOW)
    tier.close()
    with lmdb.open(path, max_dbs=4) as env, env.begin() as txn:
        meta = env.open_db(b"meta", txn=txn, create=False)
        items = env.open_db(b"items", txn=txn, create=False)
        assert txn.get(b"dict:2", db=meta) is not None
        # The later records really use it (payload kind 2), so reading them needs it.
        assert (txn.get(b"doc:2499", db=items) or b"")[
            record.HEADER_SIZE : record.HEADER_SIZE + 1
        ] == b"\x02"
    tier = ColdTier(path, GiB)
    assert {key: tier.peek(key) for key in values} == {k: Item(v, 1) for k, v in values.items()}
    tier.close()


CRASHER = """
import os, sys
from memcluster.node.tiers.base import Item
from memcluster.node.tiers.cold import (
    DIGEST_KEY_LEN,
    DIGEST_MARKER,
    LONG_KEY,
    RAW_KEY_MAX,
    ColdTier,
    stored_key,
)
tier = ColdTier(sys.argv[1], 1 << 30)
n = int(sys.argv[2])
for i in range(n // 2):
    tier.put(b"k%d" % i, Item(b"v%d" % i * 50, i), 1.7e9)
tier.put_many([(b"k%d" % i, Item(b"v%d" % i * 50, i)) for i in range(n // 2, n)], 1.7e9)
tier.get(b"k0", 1.7e9)
print("done", flush=True)
os.kill(os.getpid(), 9)
"""


def test_everything_put_survives_kill_9(path: str) -> None:
    n = 200
    proc = subprocess.run(
        [sys.executable, "-c", CRASHER, path, str(n)], capture_output=True, timeout=120, check=False
    )
    assert proc.stdout == b"done\n", proc.stderr
    assert proc.returncode == -9
    tier = ColdTier(path, GiB)
    assert len(tier) == n
    assert all(tier.peek(b"k%d" % i) == Item(b"v%d" % i * 50, i) for i in range(n))
    tier.close()


def fill(tier: ColdTier, keys: list[bytes], priority: int = 0) -> None:
    for key in keys:
        tier.put(key, Item(noise(200, seed=key), 1, priority=priority), NOW)


def keys(*names: str) -> list[bytes]:
    return [name.encode() for name in names]


def full_tier(path: str, n: int) -> ColdTier:
    """A tier exactly at capacity with ``n`` same-size items k0..k(n-1)."""
    tier = ColdTier(path, GiB)
    fill(tier, [b"k%d" % i for i in range(n)])
    tier.capacity = tier.bytes_held
    return tier


def test_eviction_drops_the_oldest_until_within_capacity(path: str) -> None:
    tier = full_tier(path, 10)
    assert tier.evict_overflow(NOW) == []
    fill(tier, keys("n1", "n2", "n3"))
    evicted = tier.evict_overflow(NOW)
    assert [key for key, _ in evicted] == keys("k0", "k1", "k2")
    assert all(item.value == noise(200, seed=key) for key, item in evicted)
    assert tier.bytes_held <= tier.capacity and len(tier) == 10
    tier.close()


def test_eviction_weighs_priority(path: str) -> None:
    tier = ColdTier(path, GiB)
    fill(tier, keys("vi"), priority=5)
    fill(tier, [b"k%d" % i for i in range(9)])
    tier.capacity = tier.bytes_held
    fill(tier, keys("n1", "n2"))
    assert [key for key, _ in tier.evict_overflow(NOW)] == keys("k0", "k1")
    assert b"vi" in tier
    tier.close()


def test_get_refreshes_recency_and_survives_reopen(path: str) -> None:
    tier = full_tier(path, 10)
    capacity = tier.capacity
    tier.get(b"k0", NOW)
    tier.peek(b"k1")  # no access
    tier.close()
    tier = ColdTier(path, capacity)
    fill(tier, keys("n1", "n2"))
    assert [key for key, _ in tier.evict_overflow(NOW)] == keys("k1", "k2")
    assert b"k0" in tier
    tier.close()


def test_shrinking_capacity_evicts_down_to_nothing(path: str) -> None:
    tier = full_tier(path, 50)
    tier.capacity = 0
    assert len(tier.evict_overflow(NOW)) == 50
    assert len(tier) == 0 and tier.bytes_held == 0
    tier.close()


def test_pop_expired_works_in_bounded_steps(path: str) -> None:
    clock = ManualClock(NOW)
    tier = ColdTier(path, GiB, clock=clock)
    expires_ms = int((clock.now() + 10) * 1000)
    tier.put_many([(b"z%02d" % i, Item(b"go", 1, expires_ms=expires_ms)) for i in range(10)], NOW)
    assert tier.pop_expired(clock.now(), 100) == []  # not yet; the sweep wraps to the start
    tier.put_many([(b"a%04d" % i, Item(b"keep", 1)) for i in range(1000)], clock.now())
    clock.advance(10)
    # 256 entries per call: the first three calls see only the a-keys.
    assert [tier.pop_expired(clock.now(), 1) for _ in range(3)] == [[], [], []]
    removed = []
    for _ in range(30):
        removed += tier.pop_expired(clock.now(), 1)
    assert sorted(key for key, _ in removed) == [b"z%02d" % i for i in range(10)]
    assert all(item.expired(expires_ms) for _, item in removed)
    assert len(tier) == 1000
    assert tier.pop_expired(clock.now(), 1000) == []
    assert tier.pop_idle(clock.now(), 1000) == []
    tier.close()


def test_scan_tolerates_changes_between_chunks(tier: ColdTier) -> None:
    tier.put_many([(b"k%04d" % i, Item(b"v", i)) for i in range(1000)], NOW)
    seen = []
    for key, item in tier.scan():
        seen.append(key)
        assert tier.pop(key) == item
    assert seen == sorted(b"k%04d" % i for i in range(1000))
    assert len(tier) == 0


def test_compression_shrinks_what_is_held(tier: ColdTier) -> None:
    values = [
        json.dumps([{"row": i, "col": j, "label": f"cell {i}:{j}"} for j in range(90)])[:4096]
        for i in range(1000)
    ]
    raw = 0
    for i, value in enumerate(values):
        tier.put(b"doc:%d" % i, Item(value.encode(), 1), NOW)
        raw += len(value)
    assert raw >= 1000 * 4000
    assert tier.bytes_held < raw / 5


def test_map_grows_when_full(path: str) -> None:
    tier = ColdTier(path, GiB, map_size=1 << 20)
    tier.put_many([(b"big%d" % i, Item(noise(1 << 20, seed=i), 1)) for i in range(3)], NOW)
    assert len(tier) == 3
    tier.close()


def test_corrupt_record_names_its_key(path: str, caplog: pytest.LogCaptureFixture) -> None:
    tier = ColdTier(path, GiB)
    fill(tier, keys("good", "bad"))
    tier.close()
    with lmdb.open(path, max_dbs=4) as env, env.begin(write=True) as txn:
        items = env.open_db(b"items", txn=txn, create=False)
        data = bytearray(txn.get(b"bad", db=items) or b"")
        data[record.HEADER_SIZE] = 200  # a zstd dictionary nobody trained
        txn.put(b"bad", bytes(data), db=items)
    tier = ColdTier(path, GiB)
    with pytest.raises(InternalError, match=r"key b'bad'.*dictionary 200"):
        tier.peek(b"bad")
    with pytest.raises(InternalError, match="b'bad'"):
        tier.pop(b"bad")
    with pytest.raises(InternalError, match="b'bad'"):
        list(tier.scan())
    assert b"bad" in tier  # a failed pop removes nothing
    # Eviction drops it (logged) rather than wedging on it.
    tier.capacity = 0
    with caplog.at_level(logging.ERROR):
        assert tier.evict_overflow(NOW) == [(b"good", Item(noise(200, seed=b"good"), 1))]
    assert "unreadable" in caplog.text and len(tier) == 0
    tier.close()


# flush may run on another thread (the node's periodic fsync); nothing else may.


def test_flush_on_another_thread_beside_writes_and_close(path: str) -> None:
    tier = ColdTier(path, GiB, sync_each_commit=False)
    flushes = threading.Condition()
    count = 0
    errors: list[BaseException] = []
    stop = threading.Event()

    def flush_until_stopped() -> None:
        nonlocal count
        try:
            while not stop.is_set():
                tier.flush()
                with flushes:
                    count += 1
                    flushes.notify_all()
        except BaseException as exc:
            errors.append(exc)

    def flushed(more: int) -> bool:
        """Wait until ``more`` flushes beyond those counted so far have finished."""
        with flushes:
            target = count + more
            return flushes.wait_for(lambda: count >= target or bool(errors), DEADLINE)

    flusher = threading.Thread(target=flush_until_stopped)
    flusher.start()
    try:
        written: dict[bytes, Item] = {}
        for batch in range(20):
            assert flushed(1)  # each batch lands while the thread is flushing
            items = [(b"k%d-%d" % (batch, i), Item(doc(batch * 10 + i), batch)) for i in range(10)]
            tier.put_many(items, NOW)
            written.update(items)
            assert tier.get(items[0][0], NOW) == items[0][1]  # a touch for close to apply
            assert tier.pop(items[-1][0]) == written.pop(items[-1][0])
        tier.close()
        assert flushed(2)  # flushes after close: no-ops, and nothing raises
    finally:
        stop.set()
        flusher.join(DEADLINE)
    assert not flusher.is_alive() and errors == []
    tier.flush()  # a closed environment's sync would raise
    tier = ColdTier(path, GiB)
    assert dict(tier.scan()) == written and len(tier) == 180
    tier.close()


class _SlowSync:
    """An LMDB environment whose first ``sync`` blocks until ``release`` is set."""

    def __init__(self, env: Any) -> None:
        self._env = env
        self.entered = threading.Event()
        self.release = threading.Event()
        self.calls: list[str] = []

    def sync(self, force: bool = False) -> None:
        first = not self.calls
        self.calls.append("sync")
        if first:
            self.entered.set()
            assert self.release.wait(DEADLINE)
        self._env.sync(force)
        self.calls.append("synced")

    def close(self) -> None:
        self.calls.append("close")
        self._env.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._env, name)


class _WatchedLock:
    """The tier's flush lock, telling when a thread has come to wait for it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.waited = threading.Event()

    def __enter__(self) -> None:
        if self._lock.locked():
            self.waited.set()
        self._lock.acquire()

    def __exit__(self, *exc: object) -> None:
        self._lock.release()


def test_close_waits_for_a_flush_under_way(path: str, monkeypatch: pytest.MonkeyPatch) -> None:
    tier = ColdTier(path, GiB, sync_each_commit=False)
    fill(tier, keys("a", "b"))
    tier.get(b"a", NOW)  # close applies it: a write transaction beside the flush
    slow = _SlowSync(tier._env)
    monkeypatch.setattr(tier, "_env", slow)
    lock = _WatchedLock()
    monkeypatch.setattr(tier, "_sync_lock", lock)
    errors: list[BaseException] = []
    closed = threading.Event()

    def run(step: Callable[[], None], done: threading.Event | None = None) -> None:
        try:
            step()
        except BaseException as exc:
            errors.append(exc)
        if done is not None:
            done.set()

    flusher = threading.Thread(target=run, args=(tier.flush,))
    flusher.start()
    assert slow.entered.wait(DEADLINE)
    closer = threading.Thread(target=run, args=(tier.close, closed))
    closer.start()
    try:
        assert lock.waited.wait(DEADLINE)  # close has come to the lock the flush holds
        assert not closed.is_set() and "close" not in slow.calls
    finally:
        slow.release.set()
    assert closed.wait(DEADLINE)
    flusher.join(DEADLINE)
    closer.join(DEADLINE)
    assert errors == []
    assert slow.calls == ["sync", "synced", "sync", "synced", "close"]
    tier.flush()  # after close: nothing
    assert slow.calls[-1] == "close"
    tier = ColdTier(path, GiB)
    assert sorted(key for key, _ in tier.scan()) == keys("a", "b")
    tier.close()


async def test_node_fsyncs_the_cold_tier_off_its_event_loop(
    path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = NodeConfig.from_mapping({"memory": {"tiers": {"cold": {"path": path}}}})
    runtime = NodeRuntime(config, "n1", "127.0.0.1:1")
    cold = runtime.store.cold
    assert cold is not None
    threads: list[threading.Thread] = []
    flush = cold.flush

    def recorded() -> None:
        threads.append(threading.current_thread())
        flush()

    monkeypatch.setattr(cold, "flush", recorded)
    try:
        await runtime._fsync()
    finally:
        runtime.store.close()
    assert len(threads) == 1 and threads[0] is not threading.current_thread()


# Long keys: LMDB takes at most 511 bytes; longer keys go under a digest form.


def long_key(n: int, tag: bytes = b"") -> bytes:
    """An ``n``-byte key; keys differing only past byte 511 must stay distinct."""
    return (b"long:" + tag + b"-" * n)[: n - 4] + b"%04d" % (n % 10_000)


def raw_items(path: str) -> dict[bytes, bytes]:
    """The ``items`` database as LMDB holds it (the tier must be closed)."""
    with lmdb.open(path, max_dbs=4) as env, env.begin() as txn:
        return dict(txn.cursor(db=env.open_db(b"items", txn=txn, create=False)))


def test_key_forms_around_the_thresholds() -> None:
    marker = bytes([DIGEST_MARKER])
    with tempfile.TemporaryDirectory() as root, lmdb.open(root) as env:
        assert env.max_key_size() > RAW_KEY_MAX
    for key in (b"k", b"k" * RAW_KEY_MAX, marker, marker * 32, marker * 34, b"k" * 33):
        assert stored_key(key) == key
    for key in (b"k" * (RAW_KEY_MAX + 1), b"k" * 65535, marker * 33, marker + b"k" * 32):
        form = stored_key(key)
        assert form != key and len(form) == DIGEST_KEY_LEN and form[0] == DIGEST_MARKER
    # Keys that share their first 511 bytes get different forms.
    assert stored_key(b"x" * 600 + b"a") != stored_key(b"x" * 600 + b"b")


@pytest.mark.parametrize("size", [RAW_KEY_MAX, RAW_KEY_MAX + 1, 512, 1024, 65535])
@pytest.mark.parametrize("value", [b"", doc(3), noise(100 << 10)], ids=["empty", "json", "100k"])
def test_long_key_round_trip(tier: ColdTier, size: int, value: bytes) -> None:
    key = long_key(size)
    item = Item(value, version=9, origin=2, expires_ms=1_800_000_000_000, priority=4)
    tier.put(key, item, NOW)
    assert key in tier and len(tier) == 1
    assert key[:-1] not in tier and tier.peek(key[:-1] + b"?") is None
    assert tier.get(key, NOW) == item and tier.peek(key) == item
    assert list(tier.scan()) == [(key, item)]
    assert tier.bytes_held > len(value) // 10
    tier.put(key, Item(b"newer", 10), NOW)  # replaces, never duplicates
    assert len(tier) == 1 and tier.peek(key) == Item(b"newer", 10)
    assert tier.pop(key) == Item(b"newer", 10)
    assert key not in tier and len(tier) == 0 and tier.bytes_held == 0
    assert tier.get(key, NOW) is None and tier.pop(key) is None


def test_long_keys_in_batches_and_tombstones(tier: ColdTier) -> None:
    items = {
        long_key(512, b"a"): Item(b"one", 1),
        long_key(1024, b"b"): Item(b"", 2, tombstone=True),
        long_key(65535, b"c"): Item(doc(5), 3, priority=record.PRIORITY_MIN),
        b"short": Item(b"s", 4),
    }
    tier.put_many(list(items.items()), NOW)
    assert len(tier) == 4 and dict(tier.scan()) == items
    assert {key: tier.peek(key) for key in items} == items
    popped = tier.pop_many([long_key(1024, b"b"), long_key(2048), b"short", long_key(512, b"a")])
    assert popped == [(k, items[k]) for k in (long_key(1024, b"b"), b"short", long_key(512, b"a"))]
    assert dict(tier.scan()) == {long_key(65535, b"c"): items[long_key(65535, b"c")]}
    assert tier.pop(long_key(65535, b"c")) is not None and tier.bytes_held == 0


def test_long_key_records_keep_the_key_and_are_accounted(path: str) -> None:
    tier = ColdTier(path, GiB)
    keys_ = [b"k1", b"k" * RAW_KEY_MAX, long_key(512), long_key(1024), long_key(65535)]
    tier.put_many([(key, Item(noise(300, seed=key), 1)) for key in keys_], NOW)
    tier.put(long_key(1024), Item(noise(5000, seed=1), 2), NOW)  # replacing keeps the sums
    held = tier.bytes_held
    tier.close()
    stored = raw_items(path)
    assert sorted(stored) == sorted(stored_key(key) for key in keys_)
    assert all(len(key) <= RAW_KEY_MAX for key in stored)
    for key in keys_:
        data = stored[stored_key(key)]
        flags = record.meta(data)[5]
        assert bool(flags & LONG_KEY) == (len(key) > RAW_KEY_MAX)
        if flags & LONG_KEY:
            assert key in data  # the original key rides in the record
    tier = ColdTier(path, GiB)
    assert tier.bytes_held == held
    assert held == sum(tier.item_cost(len(key), len(data)) for key, data in stored.items())
    tier.close()


def test_long_keys_survive_reopen_with_their_recency(path: str) -> None:
    tier = ColdTier(path, GiB)
    names = [long_key(1024, b"%d" % i) for i in range(10)]
    fill(tier, names)
    capacity = tier.bytes_held
    tier.get(names[0], NOW)  # noted in memory; close applies it
    before = (dict(tier.scan()), len(tier), tier.bytes_held)
    tier.close()
    tier = ColdTier(path, capacity)
    assert (dict(tier.scan()), len(tier), tier.bytes_held) == before
    fill(tier, [long_key(1024, b"new1"), long_key(1024, b"new2")])
    evicted = tier.evict_overflow(NOW)
    assert [key for key, _ in evicted] == names[1:3]
    assert all(item.value == noise(200, seed=key) for key, item in evicted)
    assert names[0] in tier and tier.bytes_held <= capacity
    tier.close()


def test_eviction_and_expiry_return_original_long_keys(path: str) -> None:
    tier = ColdTier(path, GiB)
    mixed = [long_key(512, b"%d" % i) if i % 2 else b"k%d" % i for i in range(6)]
    fill(tier, mixed)
    tier.capacity = 0
    evicted = tier.evict_overflow(NOW)
    assert [key for key, _ in evicted] == mixed
    assert all(item.value == noise(200, seed=key) for key, item in evicted)
    assert len(tier) == 0 and tier.bytes_held == 0
    tier.capacity = GiB
    expires_ms = int(NOW * 1000) + 1
    gone = {long_key(2000, b"%d" % i): Item(b"v", i, expires_ms=expires_ms) for i in range(5)}
    tier.put_many([*gone.items(), (long_key(2000, b"kept"), Item(b"v", 9))], NOW)
    assert dict(tier.pop_expired(NOW + 1, 100)) == gone
    assert len(tier) == 1 and long_key(2000, b"kept") in tier
    tier.close()


def test_short_keys_starting_with_the_marker_do_not_collide(path: str) -> None:
    marker = bytes([DIGEST_MARKER])
    long_ = long_key(1024)
    lookalike = stored_key(long_)  # exactly the LMDB key the long key is stored under
    assert len(lookalike) == DIGEST_KEY_LEN and lookalike[0] == DIGEST_MARKER
    items = {
        long_: Item(b"long", 1),
        lookalike: Item(b"lookalike", 2),
        marker: Item(b"marker", 3),
        marker * 32: Item(b"32", 4),
        marker * 34: Item(b"34", 5),
        marker + b"k" * 32: Item(b"33", 6),
    }
    tier = ColdTier(path, GiB)
    tier.put_many(list(items.items()), NOW)
    assert len(tier) == len(items) and dict(tier.scan()) == items
    assert {key: tier.get(key, NOW) for key in items} == items
    tier.close()
    assert len(raw_items(path)) == len(items)
    tier = ColdTier(path, GiB)
    assert dict(tier.scan()) == items
    assert tier.pop(lookalike) == items[lookalike]
    assert tier.peek(long_) == items[long_] and lookalike not in tier
    assert tier.pop(long_) == items[long_] and len(tier) == len(items) - 2
    tier.close()


@pytest.mark.parametrize(
    ("offset", "message"),
    [
        (4 + 100, r"key b'\\xff.*embedded key does not match"),  # inside the embedded key
        (
            4 + 4096,
            r"key b'long:-+'\.\.\. \(4096 bytes\) is unreadable.*dictionary 200",
        ),  # codec byte
    ],
    ids=["key", "payload"],
)
def test_corrupt_long_key_record_is_named_briefly(
    path: str, caplog: pytest.LogCaptureFixture, offset: int, message: str
) -> None:
    tier = ColdTier(path, GiB)
    key = long_key(4096)
    fill(tier, [key, b"good"])
    tier.close()
    with lmdb.open(path, max_dbs=4) as env, env.begin(write=True) as txn:
        items = env.open_db(b"items", txn=txn, create=False)
        data = bytearray(txn.get(stored_key(key), db=items) or b"")
        data[record.HEADER_SIZE + offset] = 200
        txn.put(stored_key(key), bytes(data), db=items)
    tier = ColdTier(path, GiB)
    with pytest.raises(InternalError, match=message) as info:
        tier.peek(key)
    assert len(str(info.value)) < 400
    with pytest.raises(InternalError):
        tier.pop(key)
    with pytest.raises(InternalError):
        list(tier.scan())
    assert key in tier  # a failed pop removes nothing
    tier.capacity = 0
    with caplog.at_level(logging.ERROR):
        assert [k for k, _ in tier.evict_overflow(NOW)] == [b"good"]
    assert "unreadable" in caplog.text and len(tier) == 0 and tier.bytes_held == 0
    tier.close()


# The conformance suite's model check, with keys on both sides of the thresholds.
KEY_SIZES = [1, 2, DIGEST_KEY_LEN, RAW_KEY_MAX, RAW_KEY_MAX + 1, 511, 512, 1024, 65535]


def model_key(k: int) -> bytes:
    size = KEY_SIZES[k % len(KEY_SIZES)]
    first = bytes([DIGEST_MARKER]) if k % 2 else b"k"
    return (first + b"%d:" % k + b"." * size)[:size] if size > 4 else first + b"%d" % k


cold_ops = st.lists(
    st.tuples(
        st.sampled_from(["put", "get", "pop", "evict", "expire", "reopen"]),
        st.integers(0, 40),
        st.integers(0, 600),
        st.integers(-2, 2),
    ),
    max_size=60,
)


@settings(max_examples=25, deadline=None)
@given(ops=cold_ops)
def test_property_long_and_short_keys_account_and_lose_nothing(
    ops: list[tuple[str, int, int, int]],
) -> None:
    """Every item is held or handed out once, under its original key; bytes add up."""
    with tempfile.TemporaryDirectory() as root:
        path = root + "/cold"
        capacity = 40_000
        tier = ColdTier(path, capacity)
        model: dict[bytes, Item] = {}
        try:
            for version, (op, k, size, priority) in enumerate(ops, 1):
                key = model_key(k)
                if op == "put":
                    expires_ms = int(NOW * 1000) + 1 if priority == 2 else 0
                    item = Item(
                        bytes([k]) * size, version, priority=priority, expires_ms=expires_ms
                    )
                    tier.put(key, item, NOW)
                    model[key] = item
                elif op == "get":
                    assert tier.get(key, NOW) == model.get(key)
                elif op == "pop":
                    assert tier.pop(key) == model.pop(key, None)
                elif op == "evict":
                    for vkey, vitem in tier.evict_overflow(NOW):
                        assert model.pop(vkey) == vitem, "evicted exactly once, original key"
                    assert tier.bytes_held <= tier.capacity
                elif op == "expire":
                    for vkey, vitem in tier.pop_expired(NOW + 1, 1000):
                        assert vitem.expired(int((NOW + 1) * 1000))
                        assert model.pop(vkey) == vitem
                else:
                    held = tier.bytes_held
                    tier.close()
                    tier = ColdTier(path, capacity)
                    assert tier.bytes_held == held
                assert len(tier) == len(model)
                assert all(key in tier for key in model)
            assert dict(tier.scan()) == model
            for key in list(model):
                assert tier.pop(key) == model[key]
            assert tier.bytes_held == 0 and len(tier) == 0
        finally:
            tier.close()
