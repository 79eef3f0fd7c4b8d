"""Hybrid logical clock and last-writer-wins ordering."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from memcluster.common.clock import ManualClock
from memcluster.common.versions import LOGICAL_BITS, HybridClock, node_tag, version_millis
from memcluster.node.tiers.base import Item


def test_versions_increase_even_when_the_wall_clock_stalls() -> None:
    clock = ManualClock(1000.0)
    hlc = HybridClock(clock)
    seen = [hlc.now() for _ in range(100)]
    assert seen == sorted(set(seen))
    assert version_millis(seen[0]) == 1_000_000


def test_observe_moves_past_a_peer_clock_ahead() -> None:
    clock = ManualClock(1000.0)
    hlc = HybridClock(clock)
    ahead = (2_000_000 << LOGICAL_BITS) + 5
    hlc.observe(ahead)
    assert hlc.now() > ahead


@given(
    st.lists(
        st.tuples(st.integers(0, 3), st.integers(0, 2), st.booleans(), st.binary(max_size=3)),
        min_size=1,
    )
)
def test_last_writer_wins_is_a_total_order(writes: list[tuple[int, int, bool, bytes]]) -> None:
    items = [Item(b"" if t else v, ver, origin, tombstone=t) for ver, origin, t, v in writes]
    winner = max(items, key=Item.order)
    # Every replica applying the writes in any order ends with the same winner.
    for rotation in range(len(items)):
        held = None
        for item in items[rotation:] + items[:rotation]:
            if held is None or item.order() > held.order():
                held = item
        assert held == winner


def test_node_tags_fit_16_bits() -> None:
    assert all(0 <= node_tag(f"node-{i}") < 1 << 16 for i in range(100))
