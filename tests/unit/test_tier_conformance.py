"""The one suite every tier passes: hot, warm and cold behave alike behind the Tier seam."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from memcluster.common.clock import ManualClock
from memcluster.node.tiers.base import Item, Tier
from memcluster.node.tiers.cold import ColdTier
from memcluster.node.tiers.memory import HotTier, WarmTier

NOW = 1_700_000_000.0
Factory = Callable[[int], Tier]


def _factories(tmp_path: Path) -> dict[str, Factory]:
    counter = iter(range(10**6))
    return {
        "hot": lambda cap: HotTier(cap),  # noqa: PLW0108 (one shape for all three)
        "hot-lfu": lambda cap: HotTier(cap, eviction="lfu"),
        "warm": lambda cap: WarmTier(cap, compression_level=3),
        "warm-lfu": lambda cap: WarmTier(cap, compression_level=3, eviction="lfu"),
        "cold": lambda cap: ColdTier(
            str(tmp_path / f"cold{next(counter)}"), cap, 5, clock=ManualClock(NOW)
        ),
    }


@pytest.fixture(params=["hot", "hot-lfu", "warm", "warm-lfu", "cold"])
def make_tier(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Factory]:
    made: list[Tier] = []
    factory = _factories(tmp_path)[request.param]

    def make(capacity: int = 10**9) -> Tier:
        tier = factory(capacity)
        made.append(tier)
        return tier

    yield make
    for tier in made:
        tier.close()


def value(i: int, size: int = 100) -> bytes:
    doc = json.dumps({"id": i, "name": f"user-{i}", "pad": "x" * size}).encode()
    return doc[:size] if len(doc) > size else doc


def test_round_trip_keeps_metadata(make_tier: Callable[..., Tier]) -> None:
    tier = make_tier()
    item = Item(b"hello", version=42, origin=7, expires_ms=123_456, priority=-3)
    tier.put(b"k", item, NOW)
    assert tier.get(b"k", NOW) == item
    assert tier.peek(b"k") == item
    assert b"k" in tier and len(tier) == 1


def test_tombstones_and_empty_and_large_values(make_tier: Callable[..., Tier]) -> None:
    tier = make_tier()
    big = bytes(range(256)) * 4096  # 1 MiB
    tier.put(b"t", Item(b"", 1, tombstone=True), NOW)
    tier.put(b"e", Item(b"", 2), NOW)
    tier.put(b"b", Item(big, 3), NOW)
    assert tier.get(b"t", NOW) == Item(b"", 1, tombstone=True)
    assert tier.get(b"e", NOW) == Item(b"", 2)
    got = tier.get(b"b", NOW)
    assert got is not None and got.value == big


def test_put_replaces_and_accounts_bytes(make_tier: Callable[..., Tier]) -> None:
    tier = make_tier()
    assert tier.bytes_held == 0
    tier.put(b"k", Item(value(1, 1000), 1), NOW)
    first = tier.bytes_held
    assert first > 0
    tier.put(b"k", Item(b"x", 2), NOW)
    assert len(tier) == 1
    assert 0 < tier.bytes_held < first
    assert tier.pop(b"k") == Item(b"x", 2)
    assert tier.pop(b"k") is None
    assert tier.bytes_held == 0 and len(tier) == 0 and b"k" not in tier


def test_eviction_fits_capacity_oldest_first(make_tier: Callable[..., Tier]) -> None:
    probe = make_tier()
    probe.put(b"key-000", Item(value(0), 1), NOW)
    per_item = probe.bytes_held
    tier = make_tier(per_item * 50)
    for i in range(100):
        tier.put(f"key-{i:03d}".encode(), Item(value(i), i + 1), NOW + i)
    assert tier.bytes_held > tier.capacity
    victims = tier.evict_overflow(NOW + 100)
    assert tier.bytes_held <= tier.capacity
    assert victims, "an over-capacity tier must evict"
    evicted = [k for k, _ in victims]
    assert evicted == sorted(evicted), "least recently used go first"
    assert b"key-099" in tier and b"key-000" not in tier
    for key, item in victims:
        assert key not in tier
        assert item.value == value(int(key[4:]))


def test_read_refreshes_recency(make_tier: Callable[..., Tier]) -> None:
    probe = make_tier()
    probe.put(b"key-000", Item(value(0), 1), NOW)
    tier = make_tier(probe.bytes_held * 10)
    for i in range(10):
        tier.put(f"key-{i:03d}".encode(), Item(value(i), i + 1), NOW + i)
    assert tier.get(b"key-000", NOW + 20) is not None
    tier.put(b"key-010", Item(value(10), 11), NOW + 21)
    victims = dict(tier.evict_overflow(NOW + 22))
    assert b"key-000" not in victims
    assert b"key-001" in victims


def test_get_many_is_get_for_each_recency_included(make_tier: Callable[..., Tier]) -> None:
    probe = make_tier()
    probe.put(b"key-000", Item(value(0), 1), NOW)
    tier = make_tier(probe.bytes_held * 10)
    items = {f"key-{i:03d}".encode(): Item(value(i), i + 1, expires_ms=i) for i in range(10)}
    for i, (key, item) in enumerate(items.items()):
        tier.put(key, item, NOW + i)
    tier.put(b"gone", Item(b"", 99, tombstone=True), NOW + 10)
    asked = [b"key-000", b"absent", b"key-003", b"gone", b"key-000"]
    want = [items[b"key-000"], None, items[b"key-003"], Item(b"", 99, tombstone=True)]
    assert tier.get_many(asked, NOW + 20) == [*want, items[b"key-000"]]
    tier.put(b"key-010", Item(value(10), 11), NOW + 21)
    tier.put(b"key-011", Item(value(11), 12), NOW + 21)
    victims = dict(tier.evict_overflow(NOW + 22))
    assert b"key-000" not in victims and b"key-003" not in victims  # read: recent
    assert b"key-001" in victims


def test_live_values_are_the_live_hits_values_recency_included(
    make_tier: Callable[..., Tier],
) -> None:
    probe = make_tier()
    probe.put(b"key-000", Item(value(0), 1), NOW)
    tier = make_tier(probe.bytes_held * 10)
    for i in range(10):
        tier.put(f"key-{i:03d}".encode(), Item(value(i), i + 1), NOW + i)
    tier.put(b"gone", Item(b"", 99, tombstone=True), NOW + 10)
    tier.put(b"old", Item(b"o", 98, expires_ms=int((NOW + 15) * 1000)), NOW + 10)
    asked = [b"key-000", b"absent", b"gone", b"old", b"key-003", b"key-000"]
    assert tier.live_values(asked, NOW + 20) == [value(0), None, None, None, value(3), value(0)]
    assert tier.peek(b"old") is not None and tier.peek(b"gone") is not None  # left as they are
    tier.put(b"key-010", Item(value(10), 11), NOW + 21)
    tier.put(b"key-011", Item(value(11), 12), NOW + 21)
    victims = dict(tier.evict_overflow(NOW + 22))
    assert b"key-000" not in victims and b"key-003" not in victims  # read: recent
    assert b"key-001" in victims


def test_remove_if_removes_only_the_write_it_names(make_tier: Callable[..., Tier]) -> None:
    tier = make_tier()
    item = Item(value(1), version=10, origin=2)
    tier.put(b"k", item, NOW)
    assert not tier.remove_if(b"k", Item(value(1), version=10, origin=3))  # another writer
    assert not tier.remove_if(b"k", Item(value(1), version=9, origin=2))  # an older write
    assert not tier.remove_if(b"absent", item)
    assert tier.peek(b"k") == item and len(tier) == 1
    assert tier.remove_if(b"k", item)
    assert tier.peek(b"k") is None and len(tier) == 0 and tier.bytes_held == 0
    assert not tier.remove_if(b"k", item)


def test_priority_protects_old_items(make_tier: Callable[..., Tier]) -> None:
    probe = make_tier()
    probe.put(b"key-000", Item(value(0), 1), NOW)
    tier = make_tier(probe.bytes_held * 10)
    tier.put(b"key-000", Item(value(0), 1, priority=100), NOW)
    for i in range(1, 12):
        tier.put(f"key-{i:03d}".encode(), Item(value(i), i + 1), NOW + i)
    victims = dict(tier.evict_overflow(NOW + 20))
    assert b"key-000" in tier, "the high-priority item outlives newer low-priority ones"
    assert b"key-001" in victims


def test_pop_expired_removes_only_expired(make_tier: Callable[..., Tier]) -> None:
    tier = make_tier()
    now_ms = int(NOW * 1000)
    for i in range(50):
        expires = now_ms + 1000 if i % 2 else now_ms + 3_600_000
        tier.put(f"k{i}".encode(), Item(b"v", i + 1, expires_ms=expires), NOW)
    tier.put(b"forever", Item(b"v", 99), NOW)
    removed: list[bytes] = []
    for _ in range(100):
        batch = tier.pop_expired(NOW + 5, 10)
        assert len(batch) <= 10
        removed += [k for k, _ in batch]
        if len(removed) == 25:
            break
    assert sorted(removed) == sorted(f"k{i}".encode() for i in range(1, 50, 2))
    assert len(tier) == 26 and b"forever" in tier


def test_scan_sees_everything_without_changing_it(make_tier: Callable[..., Tier]) -> None:
    tier = make_tier()
    items = {f"k{i}".encode(): Item(value(i), i + 1, priority=i % 3) for i in range(200)}
    for key, item in items.items():
        tier.put(key, item, NOW)
    before = tier.bytes_held
    assert dict(tier.scan()) == items
    assert tier.bytes_held == before and len(tier) == 200


def test_put_many_is_put_for_each(make_tier: Callable[..., Tier]) -> None:
    one_by_one, batched = make_tier(), make_tier()
    batch = [
        (
            f"k{i}".encode(),
            Item(
                b"" if i % 7 == 0 else value(i),
                i + 1,
                origin=i % 4,
                expires_ms=int((NOW + 60) * 1000) if i % 3 == 0 else 0,
                priority=i % 5 - 2,
                tombstone=i % 7 == 0,
            ),
        )
        for i in range(100)
    ]
    for key, item in batch:
        one_by_one.put(key, item, NOW)
    batched.put_many(batch, NOW)
    assert len(batched) == 100 and batched.bytes_held == one_by_one.bytes_held
    assert all(batched.peek(k) == item == one_by_one.peek(k) for k, item in batch)
    # The same eviction metadata (access time, use counter): the same victims, in order.
    for tier in (one_by_one, batched):
        tier.capacity = tier.bytes_held // 2
    assert [k for k, _ in batched.evict_overflow(NOW + 1)] == [
        k for k, _ in one_by_one.evict_overflow(NOW + 1)
    ]


ops = st.lists(
    st.tuples(
        st.sampled_from(["put", "get", "pop", "evict"]),
        st.integers(0, 30),
        st.integers(0, 600),
        st.integers(-2, 2),
    ),
    max_size=80,
)


@settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(ops=ops)
def test_property_accounting_and_no_loss(
    make_tier: Callable[..., Tier], ops: list[tuple[str, int, int, int]]
) -> None:
    """Bytes never exceed capacity after eviction; every item is either held or handed out."""
    tier = make_tier(4000)
    model: dict[bytes, Item] = {}
    version = 0
    for op, k, size, priority in ops:
        key = f"key{k}".encode()
        if op == "put":
            version += 1
            item = Item(bytes([k]) * size, version, priority=priority)
            tier.put(key, item, NOW)
            model[key] = item
        elif op == "get":
            assert tier.get(key, NOW) == model.get(key)
        elif op == "pop":
            assert tier.pop(key) == model.pop(key, None)
        else:
            for vkey, vitem in tier.evict_overflow(NOW):
                assert model.pop(vkey) == vitem, "an evicted item is handed out exactly once"
            assert tier.bytes_held <= tier.capacity
        assert len(tier) == len(model)
        assert all(key in tier for key in model)
    assert dict(tier.scan()) == model
    for key in list(model):
        tier.pop(key)
    assert tier.bytes_held == 0


def test_holding_lists_the_keys_held(make_tier: Callable[..., Tier]) -> None:
    tier = make_tier()
    for i in range(0, 20, 2):
        tier.put(f"k{i}".encode(), Item(b"v", i + 1), NOW)
    asked = [f"k{i}".encode() for i in range(20)] + [b"x" * 600]
    assert tier.holding(asked) == [f"k{i}".encode() for i in range(0, 20, 2)]


def test_keys_is_a_snapshot_taken_at_the_call(make_tier: Callable[..., Tier]) -> None:
    tier = make_tier()
    for i in range(300):
        tier.put(f"k{i}".encode(), Item(b"v", i + 1), NOW)
    tier.put(b"L" * 700, Item(b"long", 1000), NOW)  # a digested key in the cold tier
    snapshot = tier.keys()
    tier.put(b"late", Item(b"v", 999), NOW)
    tier.pop(b"k5")
    keys = list(snapshot)
    assert sorted(keys) == sorted([f"k{i}".encode() for i in range(300)] + [b"L" * 700])
