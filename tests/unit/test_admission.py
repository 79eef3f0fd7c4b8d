"""Promotion admission: which reads below the first tier move their item up."""

from __future__ import annotations

from pathlib import Path

import pytest

from memcluster.common.clock import ManualClock
from memcluster.common.config import MemoryConfig, NodeConfig
from memcluster.node import admission as admission_module
from memcluster.node import store as store_module
from memcluster.node.admission import (
    MAX_PROBATION_KEYS,
    MIN_PROBATION_KEYS,
    Admission,
    probation_keys,
)
from memcluster.node.store import TieredStore
from tests.unit.stores import Draws, doc, make_store, where

MB = 1 << 20


def memory(**settings: object) -> MemoryConfig:
    return NodeConfig.from_mapping({"memory": settings}).memory


def test_the_default_promotes_on_the_second_read() -> None:
    assert NodeConfig().memory.promote_after == 2
    gate = Admission(memory(), 16 * MB)
    assert [gate.promotes(b"a"), gate.promotes(b"b"), gate.promotes(b"a")] == [False, False, True]
    assert gate.remembered == 1  # b's count runs on; a's ended with its promotion
    assert gate.promotes(b"a") is False  # a read after the promotion counts from one


def test_counts_are_per_key_and_reach_promote_after() -> None:
    gate = Admission(memory(promote_after=3), 16 * MB)
    seen = [(key, gate.promotes(key)) for key in (b"a", b"b", b"a", b"b", b"b", b"a")]
    assert [key for key, promoted in seen if promoted] == [b"b", b"a"]


def test_every_read_promotes_at_1_and_none_when_promotion_is_off() -> None:
    every = Admission(memory(promote_after=1), 16 * MB)
    assert all(every.promotes(b"a") for _ in range(3)) and every.remembered == 0
    off = Admission(memory(promote_on_read=False), 16 * MB)
    assert not any(off.promotes(b"a") for _ in range(3)) and off.remembered == 0


def test_a_read_that_would_promote_draws_the_chance_and_a_lost_draw_starts_over() -> None:
    draws = Draws([0.9, 0.1])
    gate = Admission(memory(promote_chance=0.25), 16 * MB, draws)
    assert gate.promotes(b"a") is False  # first read: counted, nothing drawn
    assert gate.promotes(b"a") is False and draws.draws == [0.1]  # due; 0.9 loses
    assert gate.promotes(b"a") is False and draws.draws == [0.1]  # counting from one again
    assert gate.promotes(b"a") is True and draws.draws == []


@pytest.mark.parametrize(
    ("capacity", "keys"),
    [
        (0, MIN_PROBATION_KEYS),
        (1 * MB, 4096),
        (16 * MB, MAX_PROBATION_KEYS),
        (1 << 40, MAX_PROBATION_KEYS),
    ],
)
def test_keys_remembered_follow_the_first_tier_between_bounds(capacity: int, keys: int) -> None:
    assert probation_keys(capacity) == keys


def test_past_the_bound_the_older_half_of_the_keys_is_forgotten(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(admission_module, "MIN_PROBATION_KEYS", 8)
    gate = Admission(memory(), 0)
    assert gate.limit == 8
    keys = [b"k%d" % i for i in range(8)]
    for key in keys:
        assert gate.promotes(key) is False
    assert gate.promotes(keys[0]) is True  # the oldest, still remembered at the bound
    gate.promotes(keys[0])  # counted anew: the newest now, k1 the oldest
    assert gate.remembered == 8
    gate.promotes(b"new")  # past the bound: k1..k4 go, k5..k7, k0 and new stay
    assert gate.remembered == 5
    assert [gate.promotes(k) for k in [*keys[5:], keys[0], b"new"]] == [True] * 5
    assert [gate.promotes(k) for k in keys[1:5]] == [False] * 4  # their counts restarted


def test_a_store_promotes_an_item_on_its_second_read_below(
    tmp_path: Path,
) -> None:
    store = make_store(tmp_path, ManualClock(), promote_after=2)
    try:
        for i in range(500):
            store.put(f"k{i}".encode(), doc(i))
        key = next(k for k in (f"k{i}".encode() for i in range(100)) if where(store, k) == ["cold"])
        found = store.get(key)
        assert found is not None and found[1] == "cold" and where(store, key) == ["cold"]
        found = store.get(key)
        assert found is not None and found[1] == "cold" and where(store, key) == ["hot"]
        assert store.counters["cold"].hits == 2 and store.counters["cold"].promotions == 1
    finally:
        store.close()


def test_a_scan_read_once_leaves_the_first_tier_as_it_was(tmp_path: Path) -> None:
    stores = {
        after: make_store(tmp_path / str(after), ManualClock(), promote_after=after)
        for after in (1, 2)
    }
    try:
        for store in stores.values():
            for i in range(500):
                store.put(f"k{i}".encode(), doc(i))
            store.on_deferred = lambda: None  # as a node: promotions after the answers
        below = [
            k for k in (f"k{i}".encode() for i in range(500)) if where(stores[2], k) != ["hot"]
        ]
        assert len(below) > 300
        hot_before = {after: set(s.tiers[0].keys()) for after, s in stores.items()}
        for store in stores.values():
            assert store.values_many(below) == [doc(int(k[1:])) for k in below]
            store.promote_deferred(len(below))
        assert set(stores[2].tiers[0].keys()) == hot_before[2]  # the scan left hot alone
        assert stores[2].counters["warm"].promotions + stores[2].counters["cold"].promotions == 0
        # Promoting on every read, the same scan turned hot over.
        assert not set(stores[1].tiers[0].keys()) & hot_before[1]
    finally:
        for store in stores.values():
            store.close()


def test_a_read_moves_its_key_to_the_newest_end(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(admission_module, "MIN_PROBATION_KEYS", 8)
    gate = Admission(memory(promote_after=3), 0)
    keys = [b"k%d" % i for i in range(8)]
    for key in keys:
        gate.promotes(key)
    assert gate.promotes(keys[0]) is False  # its second read: k0 is the newest now
    gate.promotes(b"new")  # past the bound: k1..k4, the oldest half, are forgotten
    assert gate.promotes(keys[0]) is True  # its third read
    assert gate.promotes(keys[1]) is False and gate.remembered == 5  # k5..k7, new, k1


def test_a_store_sizes_its_admission_from_the_first_tier(tmp_path: Path) -> None:
    store = make_store(tmp_path, ManualClock(), tiers={"hot": {"capacity": "2MB"}})
    try:
        assert store.admission.limit == probation_keys(store.tiers[0].capacity)
        assert MIN_PROBATION_KEYS < store.admission.limit < MAX_PROBATION_KEYS
    finally:
        store.close()


def _queueing_store(tmp_path: Path) -> tuple[TieredStore, list[bytes]]:
    """A store that defers its promotions (as a node), with keys held below hot."""
    store = make_store(tmp_path, ManualClock(), promote_after=2)
    for i in range(500):
        store.put(f"k{i}".encode(), doc(i))
    store.on_deferred = lambda: None
    below = [k for k in (f"k{i}".encode() for i in range(100)) if where(store, k) != ["hot"]]
    return store, below


def test_a_read_the_full_queue_cannot_take_leaves_the_count_for_the_next(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(store_module, "MAX_DEFERRED", 1)
    store, (a, b, *_) = _queueing_store(tmp_path)
    try:
        store.get(b)  # b's first read: counted
        store.get(a), store.get(a)  # a's second read fills the queue
        assert store.deferred == 1
        store.get(b)  # no room: not queued, and b's count stays at one
        assert store.deferred == 1
        store.promote_deferred(10)
        assert where(store, a) == ["hot"] and where(store, b) != ["hot"]
        store.get(b)  # the read that completes b's count
        assert store.deferred == 1
        store.promote_deferred(10)
        assert where(store, b) == ["hot"]
    finally:
        store.close()


def test_a_key_on_its_way_up_is_not_counted_again(tmp_path: Path) -> None:
    store, (key, *_) = _queueing_store(tmp_path)
    try:
        store.get(key), store.get(key)
        assert store.deferred == 1 and store.admission.remembered == 0
        store.get(key)  # queued already: nothing to count
        assert store.deferred == 1 and store.admission.remembered == 0
        store.promote_deferred(10)
        assert where(store, key) == ["hot"]
        assert sum(store.counters[tier].promotions for tier in ("warm", "cold")) == 1
    finally:
        store.close()
