"""What only the RAM tiers do: residence ttl, LFU, compression, the expiry index."""

from __future__ import annotations

import json
import random

from memcluster.node.tiers.base import Item
from memcluster.node.tiers.memory import HotTier, WarmTier

NOW = 1_700_000_000.0


def test_pop_idle_hands_down_items_idle_past_ttl() -> None:
    tier = HotTier(10**9, ttl=3600)
    for i in range(10):
        tier.put(f"k{i}".encode(), Item(b"v", i + 1), NOW + i)
    assert tier.pop_idle(NOW + 3000, 100) == []
    # k0..k4 idle for more than an hour at NOW+3605; a read keeps k2 resident.
    tier.get(b"k2", NOW + 3000)
    idle = tier.pop_idle(NOW + 3605, 100)
    assert [k for k, _ in idle] == [b"k0", b"k1", b"k3", b"k4", b"k5"]
    assert len(tier) == 5 and b"k2" in tier


def test_pop_idle_is_bounded() -> None:
    tier = HotTier(10**9, ttl=1)
    for i in range(100):
        tier.put(f"k{i}".encode(), Item(b"v", i + 1), NOW)
    assert len(tier.pop_idle(NOW + 10, 7)) == 7
    assert len(tier) == 93


def test_no_ttl_means_no_idle_demotion() -> None:
    tier = HotTier(10**9, ttl=0)
    tier.put(b"k", Item(b"v", 1), NOW)
    assert tier.pop_idle(NOW + 10**8, 10) == []


def test_lfu_keeps_frequently_read_items() -> None:
    tier = HotTier(10**9, eviction="lfu", rng=random.Random(1))
    tier.put(b"probe", Item(b"x" * 100, 1), NOW)
    per_item = tier.bytes_held
    tier.pop(b"probe")
    tier.capacity = per_item * 20
    for i in range(20):
        tier.put(f"k{i:02d}".encode(), Item(b"x" * 100, i + 1), NOW)
    # The oldest five are read often; under LRU they would be the first to go.
    for _ in range(300):
        for i in range(5):
            tier.get(f"k{i:02d}".encode(), NOW + 1)
    for i in range(5):  # make them the least recently used again
        tier.put(f"k{i:02d}".encode(), tier.peek(f"k{i:02d}".encode()) or Item(b"", 0), NOW + 1)
    for i in range(20, 30):
        tier.put(f"k{i:02d}".encode(), Item(b"x" * 100, i + 1), NOW + 2)
    tier.evict_overflow(NOW + 2)
    survivors = {f"k{i:02d}".encode() for i in range(5)} & {k for k, _ in tier.scan()}
    assert len(survivors) >= 4


def test_warm_tier_compresses_and_trains_a_dictionary() -> None:
    tier = WarmTier(10**9, compression_level=3)
    docs = [
        json.dumps({"id": i, "user": f"user{i}", "email": f"user{i}@example.com", "active": True})
        for i in range(3000)
    ]
    for i, doc in enumerate(docs[:2000]):
        tier.put(f"k{i}".encode(), Item(doc.encode(), i + 1), NOW)
    tier.codec.settle()  # the 2000th value sent the sample to the worker thread
    assert tier.codec.dictionaries, "enough small values train a dictionary"
    for i, doc in enumerate(docs[2000:], start=2000):
        tier.put(f"k{i}".encode(), Item(doc.encode(), i + 1), NOW)
    raw = sum(len(d) for d in docs)
    arena = tier._arena
    stored = sum(arena.meta(arena.find(f"k{i}".encode()))[7] for i in range(2000, 3000))
    assert stored < 0.6 * sum(len(d) for d in docs[2000:])
    assert all(tier.get(f"k{i}".encode(), NOW).value == d.encode() for i, d in enumerate(docs))  # type: ignore[union-attr]
    assert raw > 0


def test_expiry_survives_churn_of_expiry_times() -> None:
    """Re-timed items are expired by their latest expiry, not an earlier one."""
    tier = HotTier(10**9)
    now_ms = int(NOW * 1000)
    for round_ in range(5):
        for i in range(1000):
            tier.put(
                b"k%d" % i,
                Item(b"v", round_ * 1000 + i + 1, expires_ms=now_ms + 10_000 * (round_ + 1)),
                NOW,
            )
    assert tier.pop_expired(NOW + 45, 10**6) == []
    assert len(tier.pop_expired(NOW + 51, 10**6)) == 1000
    assert len(tier) == 0 and tier.bytes_held == 0


def test_eviction_takes_the_lowest_priority_first() -> None:
    """In a tier too large to rank whole, sampled eviction still honours priority."""
    tier = HotTier(10**12, rng=random.Random(7))
    for i in range(4000):
        tier.put(b"k%05d" % i, Item(b"x" * 100, i + 1, priority=i % 2), NOW + i % 100)
    tier.capacity = tier.bytes_held * 95 // 100
    victims = tier.evict_overflow(NOW + 200)
    assert len(victims) > 64, "a batch of several samples' worth"
    assert tier.bytes_held <= tier.capacity
    assert {item.priority for _, item in victims} == {0}
    assert all(key not in tier for key, _ in victims)


def test_sampled_lru_evicts_old_items() -> None:
    tier = HotTier(10**12, rng=random.Random(3))
    for i in range(5000):
        tier.put(b"k%05d" % i, Item(b"x" * 100, i + 1), NOW + i)
    tier.capacity = tier.bytes_held * 9 // 10
    victims = tier.evict_overflow(NOW + 6000)
    evicted = [int(key[1:]) for key, _ in victims]
    # Ranking 5 samples per victim removes items from the oldest quarter or so.
    assert sorted(evicted)[len(evicted) // 2] < 1500
    assert max(evicted) < 3500


def test_same_size_overwrite_leaves_no_dead_bytes() -> None:
    tier = HotTier(10**12)
    for round_ in range(3):
        for i in range(2000):
            tier.put(b"k%d" % i, Item(b"%099d" % (round_ + i), round_ * 2000 + i + 1), NOW)
    assert tier._arena.dead_bytes == 0
    assert tier.peek(b"k7") == Item(b"%099d" % 9, 4008)
