"""The node's gRPC servicers: decode, call the domain, encode, map errors. Nothing else."""

from __future__ import annotations

import functools
import logging
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import TYPE_CHECKING, Any, cast

from google.protobuf.message import Message

from memcluster.common.errors import InvalidRequest
from memcluster.common.frames import METHODS as FRAME_METHODS
from memcluster.common.frames import VERSION as FRAMES_VERSION
from memcluster.common.rpc import maps_errors
from memcluster.node.limits import RequestLimits
from memcluster.node.replication import item_from_wire, item_to_wire
from memcluster.node.tiers.base import Item
from memcluster.node.view import CONSISTENCY_ONE, CONSISTENCY_QUORUM
from memcluster.wire import (
    items_pb2,
    node_pb2,
    node_pb2_grpc,
    peer_pb2,
    peer_pb2_grpc,
    topology_pb2,
    topology_pb2_grpc,
)

if TYPE_CHECKING:
    from memcluster.node.runtime import NodeRuntime

log = logging.getLogger(__name__)

#: Transferred items applied in one store call (one cold-tier transaction, ~0.2 ms).
TRANSFER_STEP = 16
TIER_ENUM = {"hot": items_pb2.HOT, "warm": items_pb2.WARM, "cold": items_pb2.COLD}


def entry(found: tuple[Item, str] | None) -> node_pb2.Entry:
    """The wire form of a read result."""
    if found is None:
        return node_pb2.Entry(found=False)
    item, tier = found
    return node_pb2.Entry(
        found=True,
        value=item.value,
        expires_at_ms=item.expires_ms,
        priority=item.priority,
        version=item.version,
        tier=TIER_ENUM[tier],
    )


def _values_answer(
    values: list[bytes | None], epoch: int, found_only_on_miss: bool = False
) -> node_pb2.GetManyResponse:
    """A values-only GetMany answer (None: not found); when every key was found, built
    without a step per key (the search for None runs in C), and without found flags if
    the caller reads their absence as "all found"."""
    if None not in values:
        present = cast(list[bytes], values)
        if found_only_on_miss:
            return node_pb2.GetManyResponse(values=present, epoch=epoch)
        return node_pb2.GetManyResponse(found=[True] * len(present), values=present, epoch=epoch)
    return node_pb2.GetManyResponse(
        found=[v is not None for v in values],
        values=[b"" if v is None else v for v in values],
        epoch=epoch,
    )


def _ttl(msg: node_pb2.PutItem | node_pb2.TouchRequest) -> float | None:
    return msg.ttl_seconds if msg.HasField("ttl_seconds") else None


def _write_level(consistency: int) -> int:
    return consistency or CONSISTENCY_QUORUM


def _read_level(consistency: int) -> int:
    return consistency or CONSISTENCY_ONE


class _OfNode:
    """A servicer bound to a node: errors carry the node's epoch."""

    def __init__(self, node: NodeRuntime) -> None:
        self.node = node

    @property
    def epoch(self) -> int:
        """The node's topology epoch."""
        return self.node.epoch


class NodeService(_OfNode, node_pb2_grpc.NodeServicer):
    """Client-facing data service."""

    @maps_errors
    async def Get(self, request: node_pb2.GetRequest, context: Any) -> node_pb2.GetResponse:
        self.node.count_ops(1, request.key)
        found = await self.node.replicator.get(request.key, _read_level(request.consistency))
        return node_pb2.GetResponse(entry=entry(found), epoch=self.node.epoch)

    @maps_errors
    async def Put(self, request: node_pb2.PutRequest, context: Any) -> node_pb2.PutResponse:
        it = request.item
        self.node.count_ops(1, it.key)
        versions = await self.node.replicator.put_many(
            [(it.key, it.value, _ttl(it), it.priority)], _write_level(request.consistency)
        )
        return node_pb2.PutResponse(version=versions[0], epoch=self.node.epoch)

    @maps_errors
    async def Delete(
        self, request: node_pb2.DeleteRequest, context: Any
    ) -> node_pb2.DeleteResponse:
        self.node.count_ops(1, request.key)
        existed = await self.node.replicator.delete_many(
            [request.key], _write_level(request.consistency)
        )
        tombstone = self.node.store.fetch(request.key)
        version = tombstone.version if tombstone is not None else 0
        return node_pb2.DeleteResponse(existed=existed[0], version=version, epoch=self.node.epoch)

    @maps_errors
    async def GetMany(
        self, request: node_pb2.GetManyRequest, context: Any
    ) -> node_pb2.GetManyResponse:
        self.node.check_batch(len(request.keys))
        self.node.count_ops(len(request.keys))
        keys, level = list(request.keys), _read_level(request.consistency)
        if request.values_only:
            values = await self.node.replicator.values_many(keys, level)
            return _values_answer(values, self.node.epoch, request.found_only_on_miss)
        found = await self.node.replicator.get_many(keys, level)
        return node_pb2.GetManyResponse(entries=[entry(f) for f in found], epoch=self.node.epoch)

    @maps_errors
    async def PutMany(
        self, request: node_pb2.PutManyRequest, context: Any
    ) -> node_pb2.PutManyResponse:
        self.node.check_batch(len(request.items))
        self.node.count_ops(len(request.items))
        puts = [(it.key, it.value, _ttl(it), it.priority) for it in request.items]
        versions = await self.node.replicator.put_many(puts, _write_level(request.consistency))
        return node_pb2.PutManyResponse(versions=versions, epoch=self.node.epoch)

    @maps_errors
    async def DeleteMany(
        self, request: node_pb2.DeleteManyRequest, context: Any
    ) -> node_pb2.DeleteManyResponse:
        self.node.check_batch(len(request.keys))
        self.node.count_ops(len(request.keys))
        existed = await self.node.replicator.delete_many(
            list(request.keys), _write_level(request.consistency)
        )
        return node_pb2.DeleteManyResponse(existed=existed, epoch=self.node.epoch)

    @maps_errors
    async def Touch(self, request: node_pb2.TouchRequest, context: Any) -> node_pb2.TouchResponse:
        self.node.count_ops(1, request.key)
        priority = request.priority if request.HasField("priority") else None
        item = await self.node.replicator.touch(
            request.key, _ttl(request), priority, CONSISTENCY_QUORUM
        )
        return node_pb2.TouchResponse(
            found=item is not None,
            expires_at_ms=item.expires_ms if item else 0,
            epoch=self.node.epoch,
        )

    @maps_errors
    async def Transports(
        self, request: node_pb2.TransportsRequest, context: Any
    ) -> node_pb2.TransportsResponse:
        """Where this node serves the frame transport (empty when it has it off)."""
        return node_pb2.TransportsResponse(
            frames_address=self.node.frames_address,
            frames_version=FRAMES_VERSION if self.node.frames_address else 0,
            epoch=self.node.epoch,
        )

    @maps_errors
    async def Stats(self, request: node_pb2.StatsRequest, context: Any) -> node_pb2.StatsResponse:
        tiers = [
            node_pb2.TierStats(
                tier=TIER_ENUM[s.name],
                enabled=True,
                items=s.items,
                bytes=s.bytes,
                capacity=s.capacity,
                hits=s.counters.hits,
                misses=s.counters.misses,
                promotions=s.counters.promotions,
                demotions=s.counters.demotions,
                evictions=s.counters.evictions,
                expirations=s.counters.expirations,
            )
            for s in self.node.store.stats()
        ]
        return node_pb2.StatsResponse(
            node_id=self.node.node_id,
            tiers=tiers,
            counters=self.node.counters(),
            epoch=self.node.epoch,
        )


class PeerService(_OfNode, peer_pb2_grpc.PeerServicer):
    """Node-to-node traffic: replication, fetch for repair, bulk transfer."""

    @maps_errors
    async def Replicate(
        self, request: peer_pb2.ReplicateRequest, context: Any
    ) -> peer_pb2.ReplicateResponse:
        applied = self._apply(request.items)
        return peer_pb2.ReplicateResponse(applied=applied, epoch=self.node.epoch)

    @maps_errors
    async def Fetch(self, request: peer_pb2.FetchRequest, context: Any) -> peer_pb2.FetchResponse:
        self.node.check_batch(len(request.keys))
        fetch = self.node.store.fetch
        items = [item_to_wire(k, it) for k in request.keys if (it := fetch(k)) is not None]
        return peer_pb2.FetchResponse(items=items, epoch=self.node.epoch)

    @maps_errors
    async def Transfer(
        self, request_iterator: AsyncIterator[peer_pb2.ItemBatch], context: Any
    ) -> peer_pb2.TransferSummary:
        received = applied = 0
        pacer, turn = self.node.migrator.pacer, self.node.migrator.turn
        async for batch in request_iterator:
            received += len(batch.items)
            # A rebalance must not starve foreground requests: apply in small steps, each
            # once the node's migration budget (shared with its own sends) has room for it,
            # and let requests in once a slice of the loop's time is used. While it waits,
            # this stream is not read and flow control slows the sender.
            for start in range(0, len(batch.items), TRANSFER_STEP):
                step = self._items(batch.items[start : start + TRANSFER_STEP])
                await pacer.take(sum(len(key) + len(item.value) for key, item in step))
                applied += self.node.store.apply_many(step, roomy=True)
                if turn.over():
                    await turn.next()
        return peer_pb2.TransferSummary(received=received, applied=applied, epoch=self.node.epoch)

    def _apply(self, items: Any) -> int:
        return self.node.store.apply_many(self._items(items))

    def _items(self, items: Any) -> list[tuple[bytes, Item]]:
        """A peer's items as the store takes them, refused if any cannot be stored."""
        self.node.check_batch(len(items))
        return [(msg.key, _checked(msg)) for msg in items]


FrameHandler = Callable[[Message], Coroutine[Any, Any, Message]]


def frame_handlers(node: NodeService, peer: PeerService) -> dict[int, FrameHandler]:
    """The methods the frame transport carries, by frame kind (errors raised as is)."""
    servicers: dict[str, _OfNode] = {"Node": node, "Peer": peer}
    handlers: dict[int, FrameHandler] = {}
    for method in FRAME_METHODS:
        servicer = servicers[method.service]
        unwrapped = getattr(type(servicer), method.name).__wrapped__
        handlers[method.kind] = functools.partial(unwrapped, servicer, context=None)
    return handlers


def _checked(msg: items_pb2.Item) -> Item:
    """A peer's item, refused if its fields cannot be stored."""
    if msg.tombstone and msg.value:
        raise InvalidRequest(f"tombstone for key {msg.key[:64]!r} carries a value")
    if msg.origin > 0xFFFF or msg.version >= 1 << 64:
        raise InvalidRequest(f"item {msg.key[:64]!r}: origin or version out of range")
    RequestLimits.priority(msg.priority, f"item {msg.key[:64]!r}")
    return item_from_wire(msg)


class TopologyService(_OfNode, topology_pb2_grpc.TopologyServiceServicer):
    """Serves the topology this node routes by, so clients can bootstrap from any node."""

    @maps_errors
    async def GetTopology(
        self, request: topology_pb2.GetTopologyRequest, context: Any
    ) -> topology_pb2.Topology:
        return self.node.view.topology.to_wire()
