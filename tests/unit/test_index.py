"""The arena's hash index on its own: tags and locations only, collisions on purpose."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from memcluster.node.tiers.index import (
    LOC_BITS,
    LOC_MASK,
    MAX_SHARD_BITS,
    MIN_SHARD_BITS,
    TAG_BITS,
    Index,
    Shard,
)


def probe(index: Index, tag: int, loc: int) -> tuple[Shard, int]:
    """What the arena does before ``fill``: walk to the empty slot ending ``tag``'s probe."""
    shard = index.dir[tag >> index.shift]
    pos = (tag >> shard.shift) & shard.mask
    while slot := shard.slots[pos]:
        assert slot != (tag << LOC_BITS) | loc, "already indexed"
        pos = (pos + 1) & shard.mask
    return shard, pos


def add(index: Index, tag: int, loc: int) -> None:
    shard, pos = probe(index, tag, loc)
    index.fill(shard, pos, tag, loc)


def remove(index: Index, tag: int, loc: int) -> None:
    assert index.release(tag, loc)


def filled(count: int, seed: int) -> tuple[Index, dict[int, int]]:
    """An index of ``count`` random tags at locations 1..count, and its model."""
    index = Index()
    rng = random.Random(seed)
    model = {loc: rng.getrandbits(TAG_BITS) for loc in range(1, count + 1)}
    for loc, tag in model.items():
        add(index, tag, loc)
    return index, model


def check(index: Index, model: dict[int, int]) -> None:
    """Every entry found where a probe starting at its home reaches it; nothing else held."""
    for loc, tag in model.items():
        assert index.position(tag, loc) is not None, (hex(tag), loc)
    assert sorted(index.locations()) == sorted(model)
    shards = {id(s): s for s in index.dir}.values()
    assert sum(s.count for s in shards) == len(model)
    assert index.bytes == sum(8 << s.bits for s in shards)


# Tags drawn from a few values collide in their home slots: long probe runs, wrap-around
# at the end of a shard, and backward shifts across them.
crowded_tags = st.integers(0, 15).map(lambda i: (i * 0x9E3779B1) % (1 << TAG_BITS))


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.booleans(), crowded_tags | st.integers(1, (1 << TAG_BITS) - 1))))
def test_fill_and_unslot_keep_every_entry_reachable(ops: list[tuple[bool, int]]) -> None:
    index = Index()
    model: dict[int, int] = {}  # location -> tag
    next_loc = 1
    for removing, tag in ops:
        if removing and model:
            loc = random.Random(tag).choice(sorted(model))
            remove(index, model.pop(loc), loc)
        else:
            add(index, tag, next_loc)
            model[next_loc] = tag
            next_loc += 1
        check(index, model)


def test_a_shard_doubles_then_splits_and_the_directory_follows() -> None:
    index, model = filled(30_000, seed=3)
    shards = {id(s): s for s in index.dir}.values()
    assert len(shards) > 4, "full-sized shards split"
    assert all(MIN_SHARD_BITS <= s.bits <= MAX_SHARD_BITS for s in shards)
    assert all(s.count <= s.limit for s in shards)
    assert len(index.dir) == 1 << (TAG_BITS - index.shift)
    for position, shard in enumerate(index.dir):  # each shard covers its own prefix
        assert position >> (TAG_BITS - index.shift - shard.depth) == shard.prefix
    check(index, model)
    for loc in list(model)[::3]:
        remove(index, model.pop(loc), loc)
    check(index, model)


def test_position_of_what_is_not_indexed_is_none() -> None:
    index = Index()
    add(index, 5, 1)
    assert index.position(5, 2) is None
    assert index.position(6, 1) is None
    assert not index.release(5, 2) and not index.relocate(6, 1, 2)
    assert index.relocate(5, 1, 7) and index.position(5, 7) is not None
    assert index.position(5, 1) is None and list(index.locations()) == [7]


def test_a_run_samples_locations_across_shards() -> None:
    index, model = filled(20_000, seed=9)
    draws = iter([0.999, 0.999, 0.5, 0.25])
    run = index.run(500, lambda: next(draws))  # starts at the very end: wraps to shard 0
    assert len(run) >= 500
    assert set(run) <= set(model)
    assert len(set(run)) == len(run)
    first = {slot & LOC_MASK for slot in index.dir[0].slots if slot}
    last = {slot & LOC_MASK for slot in index.dir[-1].slots if slot}
    assert set(run) & first and set(run) & last, "the run wraps from the last shard to the first"
    tail = index.run(50, lambda: next(draws))
    assert len(tail) >= 50 and set(tail) <= set(model)


def test_a_full_index_says_so() -> None:
    index = Index()
    shard = index.dir[0]
    shard.shift = 0  # a shard that can split no further (all tag bits used)
    shard.limit = 0
    with pytest.raises(MemoryError, match="index is full"):
        add(index, 1, 1)
    assert index.position(1, 1) == (shard, 1), "what was filled stays indexed"
    assert shard.count == 1 and index.dir == [shard]
