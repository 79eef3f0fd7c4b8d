"""The packed record arena under the RAM tiers: index, log segments, compaction, walks."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from memcluster.node.tiers.arena import (
    BIG_PAYLOAD,
    COMPACT_DEAD,
    HEADER_SIZE,
    SEGMENT,
    TOMBSTONE,
    Arena,
)
from memcluster.node.tiers.index import MAX_SHARD_BITS

NOW = 1_700_000_000


def put(arena: Arena, key: bytes, payload: bytes, version: int = 1, **meta: int) -> None:
    arena.store(
        key,
        version,
        meta.get("origin", 0),
        meta.get("expires", 0),
        meta.get("access", NOW),
        meta.get("priority", 0),
        meta.get("flags", 0),
        meta.get("lfu", 5),
        payload,
    )


def read(arena: Arena, key: bytes) -> bytes | None:
    loc = arena.find(key)
    return None if not loc else arena.payload(loc, arena.meta(loc))


def record_size(key: bytes, payload: bytes) -> int:
    inline = 8 if len(payload) > BIG_PAYLOAD else len(payload)
    return HEADER_SIZE + len(key) + inline


def check_against(arena: Arena, model: dict[bytes, bytes]) -> None:
    assert len(arena) == len(model)
    assert sorted(arena.key_list()) == sorted(model)
    for key, payload in model.items():
        assert read(arena, key) == payload
    asked = [*model, b"absent", *model]
    assert arena.read_many(asked) == [arena.read(k) for k in asked]
    assert arena.read_live(asked, NOW * 1000, 0, NOW) == [model.get(k) for k in asked]
    assert arena.record_bytes == sum(
        record_size(k, p) + (len(p) if len(p) > BIG_PAYLOAD else 0) for k, p in model.items()
    )


sizes = st.sampled_from([0, 1, 100, 3000, 40_000, 60_000, BIG_PAYLOAD + 1])
operations = st.lists(
    st.tuples(
        st.sampled_from(["put", "put", "pop", "remove_if", "find"]), st.integers(0, 60), sizes
    ),
    max_size=300,
)


@settings(max_examples=40, deadline=None)
@given(operations)
def test_random_operations_match_a_dict(ops: list[tuple[str, int, int]]) -> None:
    """Large payloads cross segments quickly, so overwrites and pops drive compaction."""
    arena = Arena()
    model: dict[bytes, bytes] = {}
    versions: dict[bytes, int] = {}
    for step, (op, k, size) in enumerate(ops):
        key = b"key%d" % k
        if op == "put":
            payload = bytes([step % 256]) * size
            put(arena, key, payload, version=step)
            model[key] = payload
            versions[key] = step
        elif op == "remove_if":  # the held version when size is even, another when odd
            version = versions.get(key, -1) + size % 2
            removed = arena.remove_if(key, version, 0)
            assert removed == (key in model and version == versions[key])
            if removed:
                del model[key]
        elif op == "pop":
            removed = arena.remove(key)
            expected = model.pop(key, None)
            assert (removed and removed[2]) == expected
        else:
            assert read(arena, key) == model.get(key)
        assert arena.dead_bytes <= max(COMPACT_DEAD * arena._used_bytes, 2 * SEGMENT) + SEGMENT
    check_against(arena, model)
    for key in list(model):
        assert arena.remove(key) is not None
    assert len(arena) == 0 and arena.record_bytes == 0 and arena.big_count == 0
    arena.clear()


def test_read_live_answers_live_payloads_and_notes_stale_access() -> None:
    arena = Arena()
    now_ms = NOW * 1000
    put(arena, b"fresh", b"f", access=NOW - 1)
    put(arena, b"stale", b"s", access=NOW - 5)
    put(arena, b"gone", b"", flags=TOMBSTONE, access=NOW - 5)
    put(arena, b"expired", b"e", expires=now_ms, access=NOW - 5)
    put(arena, b"later", b"l", expires=now_ms + 1, access=NOW - 5)
    put(arena, b"big", b"b" * (BIG_PAYLOAD + 1), access=NOW - 5)
    asked = [b"fresh", b"stale", b"gone", b"expired", b"later", b"absent", b"big", b"stale"]
    want = [b"f", b"s", None, None, b"l", None, b"b" * (BIG_PAYLOAD + 1), b"s"]
    assert arena.read_live(asked, now_ms, NOW - 2, NOW) == want
    access = {k: arena.meta(arena.find(k))[3] for k in asked if k != b"absent"}
    # Live records accessed at or before the stale mark now carry the read's time; the
    # others (fresh, or not answered) are left as they were.
    assert access == {
        b"fresh": NOW - 1,
        b"stale": NOW,
        b"gone": NOW - 5,
        b"expired": NOW - 5,
        b"later": NOW,
        b"big": NOW,
    }


class Colliding(bytes):
    """A key whose hash is the same as every other's: one tag, one probe chain."""

    def __hash__(self) -> int:
        return 7


def test_reads_compare_keys_when_tags_collide() -> None:
    arena = Arena()
    keys = [Colliding(k) for k in (b"a", b"b", b"ab", b"ba", b"abc")]
    for i, key in enumerate(keys[:4]):
        put(arena, key, b"v%d" % i, access=NOW - 5)
    asked = [*keys, Colliding(b"")]
    want = [b"v0", b"v1", b"v2", b"v3", None, None]
    assert arena.read_live(asked, NOW * 1000, NOW - 1, NOW) == want
    assert [f and f[2] for f in arena.read_many(asked)] == want
    assert arena.remove_if(keys[2], 1, 0) and not arena.remove_if(keys[4], 1, 0)
    assert arena.read_live(asked, NOW * 1000, NOW - 1, NOW) == [
        b"v0",
        b"v1",
        None,
        b"v3",
        None,
        None,
    ]


def test_index_grows_and_splits_without_losing_keys() -> None:
    arena = Arena()
    model = {b"k%d" % i: b"v%d" % i for i in range(40_000)}
    for key, payload in model.items():
        put(arena, key, payload)
    shards = {id(shard): shard for shard in arena._index.dir}.values()
    assert len(shards) > 8, "full-sized shards split"
    assert all(shard.bits <= MAX_SHARD_BITS for shard in shards)
    assert all(shard.count <= shard.limit for shard in shards)
    assert sum(shard.count for shard in shards) == len(model)
    assert arena.index_bytes == sum(8 << shard.bits for shard in shards)
    for i in range(0, 40_000, 2):
        assert arena.remove(b"k%d" % i) is not None
        del model[b"k%d" % i]
    check_against(arena, model)
    assert read(arena, b"k0") is None and arena.find(b"absent") == 0


def test_backward_shift_deletion_keeps_probe_chains() -> None:
    """Keys whose hashes share a home slot: removing any one keeps the others reachable."""
    arena = Arena()
    rng = random.Random(5)
    keys = [b"c%d" % i for i in range(40)]  # 40 keys in a 64-slot shard: long clusters
    for key in keys:
        put(arena, key, key)
    for _ in range(200):
        key = rng.choice(keys)
        if arena.find(key):
            assert arena.remove(key) is not None
        else:
            put(arena, key, key)
        for other in keys:
            loc = arena.find(other)
            assert not loc or arena.payload(loc, arena.meta(loc)) == other


def test_freed_segments_are_reused() -> None:
    arena = Arena()
    payload = b"x" * 50_000
    for i in range(100):  # about 5 MB: several segments
        put(arena, b"k%d" % i, payload)
    mapped = arena.mapped_bytes
    assert mapped >= 4 * SEGMENT
    for i in range(100):
        arena.remove(b"k%d" % i)
    assert arena.mapped_bytes <= SEGMENT, "emptied segments are unmapped at once"
    for i in range(100):
        put(arena, b"again%d" % i, payload)
    assert arena.mapped_bytes <= mapped


def test_compaction_bounds_dead_space_under_random_overwrites() -> None:
    arena = Arena()
    rng = random.Random(11)
    model: dict[bytes, bytes] = {}
    for step in range(40_000):
        key = b"k%d" % rng.randrange(8000)
        payload = bytes([step % 256]) * rng.choice([80, 120, 900, 2000])
        put(arena, key, payload, version=step)
        model[key] = payload
    check_against(arena, model)
    assert arena.evacuated > 5, "overwrites of other sizes leave dead bytes to compact"
    assert arena.dead_bytes <= COMPACT_DEAD * arena._used_bytes + 2 * SEGMENT
    live = arena.record_bytes
    assert arena.mapped_bytes <= live / (1 - COMPACT_DEAD) + 3 * SEGMENT


def test_big_payloads_stay_apart_and_survive_compaction() -> None:
    arena = Arena()
    big = bytes(range(256)) * 1024  # 256 KiB
    put(arena, b"big", big, expires=NOW * 1000 + 5)
    first = arena.find(b"big")
    rng = random.Random(2)
    for step in range(12_000):
        put(arena, b"k%d" % rng.randrange(3000), b"y" * rng.choice([500, 1500]), version=step)
    assert arena.find(b"big") != first, "the record holding the big payload's handle moved"
    assert arena.big_count == 1 and read(arena, b"big") == big
    removed = arena.pop_expired(NOW * 1000 + 5, 10, 10**6)
    assert [(key, payload) for key, _meta, payload in removed] == [(b"big", big)]
    assert arena.big_count == 0


def test_idle_walk_removes_exactly_the_idle_records() -> None:
    arena = Arena()
    payload = b"p" * 20_000  # 50 records per segment
    for i in range(300):
        put(arena, b"k%d" % i, payload, access=NOW + i)
    for i in range(0, 300, 7):  # read since: not idle
        arena.set_access(arena.find(b"k%d" % i), NOW + 1000, 5)
    cutoff = NOW + 150
    expected = {b"k%d" % i for i in range(151) if i % 7}
    got: list[bytes] = []
    for _ in range(1000):
        batch = arena.pop_idle(cutoff, 10, 160)
        assert len(batch) <= 10
        got += [key for key, _meta, _payload in batch]
        if not batch:
            break
    assert sorted(got) == sorted(expected)
    assert len(arena) == 300 - len(expected)
    assert arena.pop_idle(cutoff, 10, 160) == []
    for i in range(300):
        assert (read(arena, b"k%d" % i) is None) == (b"k%d" % i in expected)


def test_expiry_walk_with_a_moving_clock() -> None:
    arena = Arena()
    base = NOW * 1000
    for i in range(2000):
        put(arena, b"k%d" % i, b"v" * 1000, expires=base + 1000 * (i % 10) if i % 3 else 0)
    for second in range(11):
        now_ms = base + 1000 * second
        while True:
            batch = arena.pop_expired(now_ms, 50, 800)
            assert len(batch) <= 50
            assert all(0 < meta[2] <= now_ms for _key, meta, _payload in batch)
            if not batch:
                break
        for i in range(2000):
            expired = bool(i % 3) and 1000 * (i % 10) <= 1000 * second
            assert (arena.find(b"k%d" % i) == 0) == expired
    assert len(arena) == len(range(0, 2000, 3))


def test_a_record_the_index_cannot_grow_for_is_still_held_and_counted() -> None:
    arena = Arena()
    shard = arena._index.dir[0]
    shard.shift = 0  # a shard that can split no further (all tag bits used)
    shard.limit = 0
    with pytest.raises(MemoryError, match="index is full"):
        put(arena, b"key", b"value")
    assert len(arena) == 1 and read(arena, b"key") == b"value"
    assert arena.remove(b"key") is not None and len(arena) == 0
