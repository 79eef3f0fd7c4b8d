"""The node's deferred promotions: turns between requests, and an owner that stops them."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from memcluster.common.clock import ManualClock
from memcluster.node.runtime import Promotions
from memcluster.node.store import TieredStore
from tests.unit.stores import doc, make_store, where

TURNS_ALLOWED = 100  # loop turns a test waits for the promotions it queued


@pytest.fixture
def store(tmp_path: Path) -> Iterator[TieredStore]:
    s = make_store(tmp_path, ManualClock())
    for i in range(500):
        s.put(f"k{i}".encode(), doc(i))
    yield s
    s.close()


def cold_keys(store: TieredStore, count: int) -> list[bytes]:
    keys = [k for k in (f"k{i}".encode() for i in range(200)) if where(store, k) == ["cold"]]
    assert len(keys) >= count
    return keys[:count]


class CountedTurns:
    """``promote_deferred`` with its calls counted (and a failure on request)."""

    def __init__(self, store: TieredStore) -> None:
        self.real = store.promote_deferred
        self.calls = 0
        self.fail_next = False
        store.promote_deferred = self  # type: ignore[method-assign]

    def __call__(self, limit: int) -> int:
        self.calls += 1
        if self.fail_next:
            self.fail_next = False
            raise OSError("disk gone")
        return self.real(limit)


async def until_none_deferred(store: TieredStore) -> None:
    for _ in range(TURNS_ALLOWED):
        if not store.deferred:
            return
        await asyncio.sleep(0)  # one turn of the event loop
    raise AssertionError(f"{store.deferred} promotions still queued")


async def test_promotions_run_in_turns_until_none_are_left(store: TieredStore) -> None:
    turns = CountedTurns(store)
    promotions = Promotions(store, step=2)
    promotions.start()
    keys = cold_keys(store, 5)
    for key in keys:
        found = store.get(key)
        assert found is not None and found[1] == "cold"  # answered from where it was
    assert store.deferred == 5 and turns.calls == 0
    await until_none_deferred(store)
    assert turns.calls == 3  # 2 + 2 + 1, one turn of the loop each
    assert all(where(store, k) == ["hot"] for k in keys)
    promotions.close()


async def test_close_drops_what_is_queued_and_no_turn_runs_after(store: TieredStore) -> None:
    turns = CountedTurns(store)
    promotions = Promotions(store)
    promotions.start()
    keys = cold_keys(store, 3)
    for key in keys:
        store.get(key)
    promotions.close()
    assert store.deferred == 0 and store.on_deferred is None
    for _ in range(3):
        await asyncio.sleep(0)  # the turn that was due has been cancelled
    assert turns.calls == 0
    assert all(where(store, k) == ["cold"] for k in keys)
    store.get(keys[0])  # reads promote at once again, as in a store without a node
    assert where(store, keys[0]) == ["hot"]


async def test_a_failing_turn_drops_the_queue_and_reads_queue_again(
    store: TieredStore, caplog: pytest.LogCaptureFixture
) -> None:
    turns = CountedTurns(store)
    promotions = Promotions(store)
    promotions.start()
    first, second = cold_keys(store, 2)
    turns.fail_next = True
    with caplog.at_level(logging.ERROR):
        store.get(first)
        await until_none_deferred(store)
    assert "deferred promotions failed" in caplog.text
    assert where(store, first) == ["cold"]
    store.get(second)  # the queue is empty again: the next read asks for a turn
    await until_none_deferred(store)
    assert where(store, second) == ["hot"] and turns.calls == 2
    promotions.close()
