"""Fetch-through: a new owner that lacks a key asks the previous owners, and answers once
half of them (rounded up) have answered and one had it; the slower answers are applied
when they come."""

from __future__ import annotations

import asyncio
from typing import Any, cast

import pytest

from memcluster.common.clock import ManualClock
from memcluster.common.config import NodeConfig
from memcluster.common.topology import NodeInfo, NodeState, Topology
from memcluster.node.peers import PeerPool
from memcluster.node.replication import Replicator, item_to_wire
from memcluster.node.store import TieredStore
from memcluster.node.tiers.base import Item
from memcluster.node.view import CONSISTENCY_ONE, ClusterView
from memcluster.wire import peer_pb2

KEY = b"k"


class SlowPeers:
    """Stubs whose Fetch answers from ``held`` once the peer's gate opens."""

    def __init__(self, held: dict[str, Item | None]) -> None:
        self.held = held
        self.gates = {node: asyncio.Event() for node in held}
        self.asked: list[str] = []
        self.all_asked = asyncio.Event()

    def stub(self, address: str) -> Any:
        peers, node = self, address.split(":", maxsplit=1)[0]

        class Stub:
            async def Fetch(
                self, request: peer_pb2.FetchRequest, **options: Any
            ) -> peer_pb2.FetchResponse:
                peers.asked.append(node)
                if len(peers.asked) == len(peers.held):
                    peers.all_asked.set()
                await peers.gates[node].wait()
                item = peers.held[node]
                items = [item_to_wire(k, item) for k in request.keys if item is not None]
                return peer_pb2.FetchResponse(items=items)

        return Stub()


def node(node_id: str) -> NodeInfo:
    return NodeInfo(node_id, f"{node_id}:7400", 1.0, NodeState.UP)


def joined() -> ClusterView:
    """c joins a and b with rf 3: c owns every key, a and b held them before."""
    view = ClusterView("c", Topology(1, 2, (node("a"), node("b")), partitions=1))
    new = Topology(
        2, 3, (node("a"), node("b"), node("c")), partitions=1, previous_nodes=(node("a"), node("b"))
    )
    assert view.update(new) and set(view.previous_owners(KEY)) == {"a", "b"}
    return view


def store() -> TieredStore:
    config = NodeConfig.from_mapping(
        {"memory": {"tiers": {"warm": {"enabled": False}, "cold": {"enabled": False}}}}
    )
    return TieredStore(config.memory, config.limits, origin=3, clock=ManualClock(1000.0))


def item(value: bytes, version: int) -> Item:
    return Item(value, version, 1, 0, 0)


async def test_a_read_is_answered_by_the_first_previous_owner_that_has_the_key() -> None:
    peers = SlowPeers({"a": item(b"old", 10), "b": item(b"new", 20)})
    local = store()
    replicator = Replicator(local, joined(), cast(PeerPool, peers), timeout=5.0)
    read = asyncio.create_task(replicator.get_many([KEY], CONSISTENCY_ONE))
    peers.gates["a"].set()  # b hangs: the read does not wait for it
    found = await asyncio.wait_for(read, 5)
    assert found[0] is not None and found[0][0].value == b"old"
    assert sorted(peers.asked) == ["a", "b"] and len(replicator.background) == 1
    peers.gates["b"].set()  # the later answer is newer: it replaces the copy
    await asyncio.wait_for(_others(), 5)
    got = local.get(KEY)
    assert got is not None and got[0].value == b"new" and replicator.fallback_fetches == 2
    local.close()


async def test_a_previous_owner_without_the_key_does_not_end_the_wait() -> None:
    peers = SlowPeers({"a": None, "b": item(b"there", 20)})
    local = store()
    replicator = Replicator(local, joined(), cast(PeerPool, peers), timeout=5.0)
    read = asyncio.create_task(replicator.get_many([KEY], CONSISTENCY_ONE))
    await answered_first(peers, "a")
    assert not read.done()
    peers.gates["b"].set()
    found = await asyncio.wait_for(read, 5)
    assert found[0] is not None and found[0][0].value == b"there"
    assert len(replicator.background) == 0
    local.close()


async def test_a_key_no_previous_owner_has_is_a_miss() -> None:
    peers = SlowPeers({"a": None, "b": None})
    for gate in peers.gates.values():
        gate.set()
    local = store()
    replicator = Replicator(local, joined(), cast(PeerPool, peers), timeout=5.0)
    assert await replicator.get_many([KEY], CONSISTENCY_ONE) == [None]
    assert replicator.fallback_fetches == 0
    local.close()


async def answered_first(peers: SlowPeers, node: str) -> None:
    """Let ``node`` answer, once the read has asked everyone, and return after the read
    has seen that answer: the read waits on the same fetch task and was registered on it
    first, so asyncio wakes it first."""
    await asyncio.wait_for(peers.all_asked.wait(), 5)
    fetches = [t for t in asyncio.all_tasks() if "_fetch_into_store" in t.get_coro().__qualname__]
    peers.gates[node].set()
    done, _ = await asyncio.wait(fetches, timeout=5, return_when=asyncio.FIRST_COMPLETED)
    assert done, f"{node} did not answer"


async def _others() -> None:
    """Until the background fetches have finished."""
    fetches = [t for t in asyncio.all_tasks() if "_fetch_into_store" in t.get_coro().__qualname__]
    await asyncio.gather(*fetches)


async def test_with_three_previous_owners_one_lagging_answer_is_not_enough() -> None:
    """rf 3: a write acknowledged by a quorum (b, d) is read back even if a answers first."""
    view = ClusterView("c", Topology(1, 3, (node("a"), node("b"), node("d")), partitions=1))
    new = Topology(
        2,
        3,
        (node("a"), node("b"), node("c"), node("d")),
        partitions=1,
        previous_nodes=(node("a"), node("b"), node("d")),
    )
    assert view.update(new) and set(view.previous_owners(KEY)) == {"a", "b", "d"}
    peers = SlowPeers({"a": item(b"old", 10), "b": item(b"new", 20), "d": item(b"new", 20)})
    local = store()
    replicator = Replicator(local, view, cast(PeerPool, peers), timeout=5.0)
    read = asyncio.create_task(replicator.get_many([KEY], CONSISTENCY_ONE))
    await answered_first(peers, "a")  # the lagging replica answers first
    assert local.fetch(KEY) is not None and not read.done()  # one answer of three: not enough
    peers.gates["b"].set()
    found = await asyncio.wait_for(read, 5)
    assert found[0] is not None and found[0][0].value == b"new"
    peers.gates["d"].set()
    await asyncio.wait_for(_others(), 5)
    local.close()


READS = {
    "get": lambda r: r.get(KEY, CONSISTENCY_ONE),
    "get_many": lambda r: r.get_many([b"x", KEY], CONSISTENCY_ONE),
    "values_many": lambda r: r.values_many([b"x", KEY], CONSISTENCY_ONE),
}
WANT = {
    "get": lambda found: found is not None and found[0].value == b"there",
    "get_many": lambda found: [f[0].value for f in found] == [b"here", b"there"],
    "values_many": lambda found: found == [b"here", b"there"],
}


@pytest.mark.parametrize("path", list(READS))
async def test_every_read_path_fetches_through(path: str) -> None:
    peers = SlowPeers({"a": item(b"there", 20), "b": None})
    for gate in peers.gates.values():
        gate.set()
    local = store()
    local.put(b"x", b"here")  # held here: answered from here
    replicator = Replicator(local, joined(), cast(PeerPool, peers), timeout=5.0)
    found = await asyncio.wait_for(READS[path](replicator), 5)
    assert WANT[path](found), found
    assert sorted(set(peers.asked)) == ["a", "b"]
    await asyncio.wait_for(_others(), 5)
    local.close()
