"""Tier orchestration with an injected clock: demotion, promotion, expiry, versions."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from memcluster.common.clock import ManualClock
from memcluster.common.config import NodeConfig
from memcluster.common.errors import InvalidRequest
from memcluster.node import store as store_module
from memcluster.node.store import TieredStore
from memcluster.node.tiers.base import Item
from tests.unit.stores import Draws, doc, make_store, where


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def store(tmp_path: Path, clock: ManualClock) -> Iterator[TieredStore]:
    s = make_store(tmp_path, clock)
    yield s
    s.close()


def test_overflow_flows_down_and_every_key_lives_in_one_tier(store: TieredStore) -> None:
    for i in range(500):
        store.put(f"k{i}".encode(), doc(i))
    held = {t.name: len(t) for t in store.tiers}
    assert held["warm"] > 0 and held["cold"] > 0
    assert sum(held.values()) == 500
    assert all(t.bytes_held <= t.capacity for t in store.tiers)
    for i in range(500):
        assert len(where(store, f"k{i}".encode())) == 1
    assert store.counters["hot"].demotions > 0 and store.counters["warm"].demotions > 0


def test_read_promotes_from_cold(store: TieredStore) -> None:
    for i in range(500):
        store.put(f"k{i}".encode(), doc(i))
    assert where(store, b"k0") == ["cold"]
    found = store.get(b"k0")
    assert found is not None and found[0].value == doc(0) and found[1] == "cold"
    assert where(store, b"k0") == ["hot"]
    assert store.counters["cold"].promotions == 1
    assert store.counters["cold"].hits == 1 and store.counters["hot"].misses == 1


def test_a_node_promotes_after_the_read_is_answered(store: TieredStore) -> None:
    for i in range(500):
        store.put(f"k{i}".encode(), doc(i))
    asked: list[int] = []
    store.on_deferred = lambda: asked.append(len(asked))
    cold = [k for k in (f"k{i}".encode() for i in range(100)) if where(store, k) == ["cold"]]
    assert len(cold) >= 4
    for key in cold[:4]:
        found = store.get(key)
        assert found is not None and found[1] == "cold" and where(store, key) == ["cold"]
    assert store.get(cold[0]) is not None  # read again before its turn: queued once
    assert asked == [0]  # one call for the first key queued, none while some wait
    assert store.counters["cold"].promotions == 0 and store.counters["cold"].hits == 5

    assert store.promote_deferred(3) == 1  # oldest read first, one left
    assert [where(store, k) for k in cold[:4]] == [["hot"]] * 3 + [["cold"]]
    store.put(cold[3], b"rewritten")  # a write meanwhile: the promotion has nothing to do
    assert store.promote_deferred(3) == 0
    assert store.counters["cold"].promotions == 3
    assert store.get(cold[3]) == (store.fetch(cold[3]), "hot")
    assert store.fetch(cold[3]).value == b"rewritten"  # type: ignore[union-attr]

    store.get(cold[4])
    assert asked == [0, 1]  # the queue emptied: the next deferral asks for a turn again


def test_a_deferred_promotion_leaves_what_came_meanwhile(
    store: TieredStore, clock: ManualClock
) -> None:
    for i in range(500):
        store.put(f"k{i}".encode(), doc(i), ttl=60.0 if i == 1 else None)
    store.on_deferred = lambda: None
    assert where(store, b"k0") == where(store, b"k1") == ["cold"]
    store.get(b"k0")
    store.get(b"k1")
    # A transfer's delete lands in the last tier (RAM tiers without room); k1's own
    # expiry passes.
    store.tiers[-1].put(b"k0", Item(b"", store.hlc.now(), 2, 0, 0, True), clock.now())
    clock.advance(120.0)
    assert store.promote_deferred(10) == 0
    assert where(store, b"k0") == ["cold"] and store.get(b"k0") is None  # still deleted
    assert where(store, b"k1") == [] and store.counters["cold"].expirations == 1
    assert store.counters["cold"].promotions == 0


def test_deferred_promotions_are_bounded(
    store: TieredStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(store_module, "MAX_DEFERRED", 2)
    for i in range(500):
        store.put(f"k{i}".encode(), doc(i))
    store.on_deferred = lambda: None
    cold = [k for k in (f"k{i}".encode() for i in range(100)) if where(store, k) == ["cold"]]
    for key in cold[:3]:
        assert store.get(key) is not None  # answered all the same
    assert store.promote_deferred(10) == 0
    assert [where(store, k) for k in cold[:3]] == [["hot"], ["hot"], ["cold"]]


def test_get_many_answers_as_get_of_each(tmp_path: Path, clock: ManualClock) -> None:
    one, many = make_store(tmp_path / "one", clock), make_store(tmp_path / "many", clock)
    try:
        for s in (one, many):
            for i in range(300):  # k0.. end up in cold and warm, the newest in hot
                s.put(f"k{i}".encode(), doc(i), ttl=5.0 if i % 7 == 0 else None)
            s.delete(b"k299")  # a tombstone in hot
        clock.advance(10.0)  # every seventh key has expired, in each tier
        asked = [f"k{i}".encode() for i in (0, 1, 150, 297, 298, 299, 294, 1, 999)]
        singly = [one.get(k) for k in asked]
        batch = many.get_many(asked)
        # The same answers (the tier that served one may differ: the batch reads the hot
        # tier as of its start, while promotions for earlier keys evict from it).
        assert [f and f[0] for f in batch] == [f and f[0] for f in singly]
        found = [False, True, True, True, True, False, False, True, False]
        assert [f is not None for f in batch] == found  # k1 twice: promoted, then hot
        assert {f[1] for f in batch if f} == {"hot", "warm", "cold"}
        assert [where(one, k) for k in asked] == [where(many, k) for k in asked]
        for name in ("hot", "warm", "cold"):
            assert many.counters[name].expirations == one.counters[name].expirations
            assert many.counters[name].promotions == one.counters[name].promotions
        assert sum(c.hits for c in many.counters.values()) == sum(found)
    finally:
        one.close()
        many.close()


def test_values_many_answers_as_get_many(tmp_path: Path, clock: ManualClock) -> None:
    stores = [make_store(tmp_path / n, clock) for n in ("items", "values")]
    try:
        for s in stores:
            for i in range(300):  # k0.. end up in cold and warm, the newest in hot
                s.put(f"k{i}".encode(), doc(i), ttl=5.0 if i % 7 == 0 else None)
            s.delete(b"k299")  # a tombstone in hot
        clock.advance(10.0)  # every seventh key has expired, in each tier
        asked = [f"k{i}".encode() for i in (0, 1, 150, 297, 298, 299, 294, 1, 999, 296)]
        items, values = stores[0].get_many(asked), stores[1].values_many(asked)
        assert values == [f and f[0].value for f in items]
        assert values.count(None) == 4
        for name in ("hot", "warm", "cold"):
            counted = [stores[i].counters[name] for i in (0, 1)]
            assert counted[0] == counted[1], name  # hits, misses, promotions, expirations
        assert [where(stores[0], k) for k in asked] == [where(stores[1], k) for k in asked]
    finally:
        for s in stores:
            s.close()


@pytest.mark.parametrize(("after", "queued"), [(1, 2), (2, 1)])
def test_batch_reads_answer_and_count_as_single_reads_with_deferred_promotions(
    tmp_path: Path, clock: ManualClock, after: int, queued: int
) -> None:
    stores = [
        make_store(tmp_path / n, clock, promote_after=after) for n in ("single", "items", "values")
    ]
    try:
        for s in stores:
            for i in range(300):  # k0.. end up in cold and warm, the newest in hot
                s.put(f"k{i}".encode(), doc(i), ttl=5.0 if i % 7 == 0 else None)
            s.delete(b"k299")  # a tombstone in hot
            s.on_deferred = lambda: None
        expiring = {
            where(stores[0], f"k{i}".encode())[0]: f"k{i}".encode() for i in range(0, 300, 7)
        }
        assert set(expiring) == {"hot", "warm", "cold"}
        clock.advance(10.0)  # every seventh key has expired, in each tier
        asked = [f"k{i}".encode() for i in (1, 150, 297, 298, 299, 1, 999, 296)]
        asked += [key for key in expiring.values() for _ in range(2)]  # each asked twice
        calls = {"warm": 0, "cold": 0}
        for tier in stores[2].tiers[1:]:

            def counted(keys: Any, now: float, tier: Any = tier, read: Any = tier.get_many) -> Any:
                calls[tier.name] += 1
                return read(keys, now)

            tier.get_many = counted  # type: ignore[method-assign]
        singly = [stores[0].get(k) for k in asked]
        items, values = stores[1].get_many(asked), stores[2].values_many(asked)
        assert calls == {"warm": 1, "cold": 1}  # each tier below asked once for the batch
        assert values == [f and f[0].value for f in items] == [f and f[0].value for f in singly]
        assert values.count(None) == 8
        # k1 and k150, once each; with promote_after 2, k1 (read twice) only.
        assert [s.deferred for s in stores] == [queued] * 3
        for s in stores:
            s.promote_deferred(100)
        for name in ("hot", "warm", "cold"):
            counted_ = [s.counters[name] for s in stores]
            assert counted_[0] == counted_[1] == counted_[2], name
        assert len({tuple(tuple(where(s, k)) for k in asked) for s in stores}) == 1
    finally:
        for s in stores:
            s.close()


def test_get_many_names_the_first_bad_key(store: TieredStore) -> None:
    with pytest.raises(InvalidRequest, match=r"keys\[1\]: key must not be empty"):
        store.get_many([b"a", b"", b"x" * 10**6])


def test_no_promotion_when_disabled(tmp_path: Path, clock: ManualClock) -> None:
    store = make_store(tmp_path, clock, promote_on_read=False)
    for i in range(500):
        store.put(f"k{i}".encode(), doc(i))
    assert store.get(b"k0") is not None
    assert where(store, b"k0") == ["cold"]
    store.close()


def test_a_lower_tier_hit_promotes_with_the_chance_set(tmp_path: Path, clock: ManualClock) -> None:
    config = NodeConfig.from_mapping(
        {
            "memory": {
                "tiers": {"hot": {"capacity": "20KB"}, "warm": {"capacity": "20KB"}},
                "promote_chance": 0.25,
                "promote_after": 1,
            }
        }
    )
    draws = Draws([0.9, 0.3, 0.1])
    store = TieredStore(
        config.memory, config.limits, clock=clock, cold_path=str(tmp_path), rng=draws
    )
    for i in range(500):
        store.put(f"k{i}".encode(), doc(i))
    down = where(store, b"k0")
    assert down != ["hot"]
    for _ in range(2):  # draws 0.9 and 0.3: not below 0.25, the item stays
        assert store.get(b"k0") == (store.fetch(b"k0"), down[0])
        assert where(store, b"k0") == down
    assert store.get(b"k0") is not None  # draw 0.1
    assert where(store, b"k0") == ["hot"] and draws.draws == []
    assert store.counters[down[0]].promotions == 1
    store.close()


def test_idle_items_move_down_in_bounded_steps(store: TieredStore, clock: ManualClock) -> None:
    for i in range(30):
        store.put(f"k{i}".encode(), b"v")
    clock.advance(3601)
    assert store.maintenance_step(10) == 10
    assert len(store.tiers[0]) == 20
    while store.maintenance_step(10):
        pass
    assert len(store.tiers[0]) == 0 and len(store.tiers[1]) == 30
    clock.advance(86401)
    while store.maintenance_step(100):
        pass
    assert len(store.tiers[2]) == 30
    assert store.get(b"k3") is not None


def test_expiry_everywhere(store: TieredStore, clock: ManualClock) -> None:
    for i in range(500):
        store.put(f"k{i}".encode(), doc(i), ttl=60)
    clock.advance(61)
    assert store.get(b"k0") is None and store.get(b"k499") is None
    while store.maintenance_step(100):
        pass
    assert sum(len(t) for t in store.tiers) == 0
    assert sum(c.expirations for c in store.counters.values()) == 500


def test_delete_leaves_a_tombstone_that_is_collected(
    store: TieredStore, clock: ManualClock
) -> None:
    store.put(b"k", b"v")
    existed, tombstone = store.delete(b"k")
    version = tombstone.version
    assert existed and store.get(b"k") is None
    tomb = store.fetch(b"k")
    assert tomb is not None and tomb.tombstone and tomb.version == version
    assert store.delete(b"k")[0] is False
    # A stale replicated write cannot resurrect the key...
    assert not store.apply(b"k", Item(b"old", version - 1, 2))
    assert store.get(b"k") is None
    clock.advance(3601)  # ...until the tombstone's grace period (tombstone_ttl) ends.
    while store.maintenance_step(100):
        pass
    assert store.fetch(b"k") is None


def test_apply_is_last_writer_wins(store: TieredStore) -> None:
    v1 = store.put(b"k", b"mine")
    assert store.apply(b"k", Item(b"theirs", v1 + 10, 9))
    assert store.get(b"k")[0].value == b"theirs"  # type: ignore[index]
    assert not store.apply(b"k", Item(b"older", v1 + 5, 9))
    assert store.put(b"k", b"later") > v1 + 10, "the clock moved past the observed version"


def filled_with_a_batch(stores: list[TieredStore], clock: ManualClock) -> tuple[int, ApplyBatch]:
    """Fill ``stores`` alike over their three tiers; a batch to apply with every case."""
    base = 0
    for s in stores:
        for i in range(200):  # spread over the three tiers
            base = max(base, s.put(f"k{i}".encode(), doc(i)))
    now_ms = int(clock.now() * 1000)
    return base, [
        (b"k0", Item(doc(1000), base + 10, 9)),  # newer than the cold copy
        (b"k199", Item(b"older", 1, 9)),  # loses against the hot copy
        (b"k198", Item(doc(2000), base + 15, 9)),  # newer than the hot copy
        (b"new", Item(b"first", base + 20, 9)),
        (b"new", Item(b"second", base + 30, 9)),  # the same key again, newer
        (b"new", Item(b"stale", base + 25, 9)),  # ... and then an older one
        (b"gone", Item(b"", base + 40, 9, tombstone=True)),
        (b"late", Item(b"x", base + 50, 9, expires_ms=now_ms - 1)),  # already expired
    ] + [(f"m{i}".encode(), Item(doc(i), base + 100 + i, 9)) for i in range(60)]


ApplyBatch = list[tuple[bytes, Item]]


def test_apply_many_is_apply_of_each_in_order(tmp_path: Path, clock: ManualClock) -> None:
    one, many = make_store(tmp_path / "one", clock), make_store(tmp_path / "many", clock)
    try:
        base, batch = filled_with_a_batch([one, many], clock)
        applied = sum(one.apply(k, it) for k, it in batch)
        assert many.apply_many(batch) == applied == 5 + 60
        for key in {k for k, _ in batch} | {b"k1", b"k100"}:
            assert many.fetch(key) == one.fetch(key), key
        assert many.fetch(b"new").value == b"second"  # type: ignore[union-attr]
        assert all(t.bytes_held <= t.capacity for t in many.tiers[:2])
        assert many.put(b"k0", b"mine") > base + 159, "the clock moved past every version"
        with pytest.raises(InvalidRequest, match=r"keys\[1\]"):
            many.apply_many([(b"ok", Item(b"v", base + 999, 9)), (b"", Item(b"v", 1, 9))])
        assert many.fetch(b"ok") is None  # a bad item applies none of the batch
    finally:
        one.close()
        many.close()


def test_apply_many_roomy_into_full_ram_tiers_keeps_the_same_winners_in_the_last(
    tmp_path: Path, clock: ManualClock
) -> None:
    top, last = make_store(tmp_path / "top", clock), make_store(tmp_path / "last", clock)
    try:
        _, batch = filled_with_a_batch([top, last], clock)
        hot_before = set(last.tiers[0].keys())
        assert b"k198" in hot_before and b"k199" in hot_before
        assert last.apply_many(batch, roomy=True) == top.apply_many(batch) == 5 + 60
        for key in {k for k, _ in batch} | {b"k1", b"k100"}:
            assert last.fetch(key) == top.fetch(key), key
        won = {b"k0", b"k198", b"new", b"gone"} | {f"m{i}".encode() for i in range(60)}
        for key in won:
            assert where(last, key) == ["cold"], key  # the older hot copy of k198 is gone
        assert where(last, b"k199") == ["hot"]  # the loser left the newer copy alone
        # The hot and warm tiers only lost what was replaced: nothing was pushed down.
        assert set(last.tiers[0].keys()) == hot_before - {b"k198"}
        found = last.get(b"m5")  # and a read promotes a landed item as any cold one
        assert found is not None and found[0].value == doc(5) and where(last, b"m5") == ["hot"]
    finally:
        top.close()
        last.close()


def test_apply_many_roomy_lands_where_there_is_room_and_pushes_nothing_down(
    tmp_path: Path, clock: ManualClock
) -> None:
    s = make_store(tmp_path, clock)  # hot and warm of 20 KB each
    try:
        version = s.hlc.now()

        def batch(name: str) -> list[tuple[bytes, Item]]:
            return [(f"{name}{i}".encode(), Item(doc(i), version, 9)) for i in range(60)]

        landed = {}
        for name in ("a", "b", "c"):  # ~14 KB each, as the store counts them
            assert s.apply_many(batch(name), roomy=True) == 60
            landed[name] = {tuple(where(s, k)) for k, _ in batch(name)}
        assert landed == {"a": {("hot",)}, "b": {("warm",)}, "c": {("cold",)}}
        assert all(c.demotions == 0 for c in s.counters.values())
        assert all(t.bytes_held <= t.capacity for t in s.tiers)
    finally:
        s.close()


def test_apply_many_roomy_without_a_cold_tier_lands_in_warm_once_hot_is_full(
    tmp_path: Path, clock: ManualClock
) -> None:
    s = make_store(tmp_path, clock, tiers={"cold": {"enabled": False}})
    try:
        for i in range(200):
            s.put(f"k{i}".encode(), doc(i))
        version = s.hlc.now() + 1
        handed = [(f"b{i}".encode(), Item(doc(i), version, 9)) for i in range(5)]
        assert s.apply_many(handed, roomy=True) == 5  # more than the room left in hot
        assert all(where(s, k) == ["warm"] for k, _ in handed)
    finally:
        s.close()


def test_touch_changes_expiry_and_priority(store: TieredStore, clock: ManualClock) -> None:
    store.put(b"k", b"v", ttl=10)
    item = store.touch(b"k", ttl=None, priority=7)
    assert item is not None and item.expires_ms == 0 and item.priority == 7
    clock.advance(20)
    assert store.get(b"k") is not None
    assert store.touch(b"absent", ttl=5) is None


def test_flush_down_moves_ram_tiers_to_cold(store: TieredStore) -> None:
    for i in range(300):
        store.put(f"k{i}".encode(), doc(i))
    assert store.flush_down() > 0
    assert len(store.tiers[0]) == len(store.tiers[1]) == 0
    assert len(store.tiers[2]) == 300


def test_shrinking_hot_moves_items_down(store: TieredStore) -> None:
    for i in range(20):
        store.put(f"k{i}".encode(), doc(i))
    before = len(store.tiers[0])
    moved = store.set_hot_capacity(store.tiers[0].bytes_held // 2)
    assert moved > 0 and len(store.tiers[0]) == before - moved
    assert store.tiers[0].bytes_held <= store.tiers[0].capacity


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((b"", b"v"), "must not be empty"),
        ((b"k" * 1025, b"v"), "max_key_bytes"),
        ((b"k", b"v", -1.0), "ttl"),
        ((b"k", b"v", 0.0), "ttl"),
        ((b"k", b"v", None, 40000), "priority"),
    ],
)
def test_bad_input(store: TieredStore, args: tuple[Any, ...], message: str) -> None:
    with pytest.raises(InvalidRequest, match=message):
        store.put(*args)
    assert sum(len(t) for t in store.tiers) == 0


def test_only_cold_tier(tmp_path: Path, clock: ManualClock) -> None:
    store = make_store(
        tmp_path, clock, tiers={"hot": {"enabled": False}, "warm": {"enabled": False}}
    )
    store.put(b"k", b"v")
    assert store.get(b"k") == (Item(b"v", store.fetch(b"k").version, 1), "cold")  # type: ignore[union-attr]
    store.close()


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["put", "get", "delete", "tick"]),
            st.integers(0, 60),
            st.integers(0, 800),
        ),
        max_size=120,
    )
)
def test_property_nothing_lost_nothing_duplicated(
    tmp_path_factory: pytest.TempPathFactory, ops: list[tuple[str, int, int]]
) -> None:
    clock = ManualClock()
    store = make_store(
        tmp_path_factory.mktemp("s"),
        clock,
        tiers={
            "hot": {"capacity": "4KB"},
            "warm": {"capacity": "4KB"},
            "cold": {"capacity": "1GB"},
        },
    )
    model: dict[bytes, bytes] = {}
    try:
        for op, k, size in ops:
            key = b"key%d" % k
            if op == "put":
                value = bytes([k % 251]) * size
                store.put(key, value)
                model[key] = value
            elif op == "get":
                found = store.get(key)
                assert (found[0].value if found else None) == model.get(key)
            elif op == "delete":
                assert store.delete(key)[0] == (key in model)
                model.pop(key, None)
            else:
                clock.advance(1800)
                store.maintenance_step(50)
            for key in model:
                assert len(where(store, key)) == 1, "each key lives in exactly one tier"
            assert all(t.bytes_held <= t.capacity for t in store.tiers)
        assert {k: store.get(k)[0].value for k in model} == model  # type: ignore[index]
    finally:
        store.close()


def test_keys_sees_every_key_once_even_when_items_move_between_tiers(store: TieredStore) -> None:
    for i in range(500):
        store.put(f"k{i}".encode(), doc(i))
    keys = store.keys()
    for i in range(0, 500, 7):  # promotions from warm/cold and the demotions they cause
        store.get(f"k{i}".encode())
    seen = list(keys)
    assert sorted(seen) == sorted(f"k{i}".encode() for i in range(500))
