"""Coordinating reads and writes across a key's replicas.

The node that receives a request must hold a replica of every key in it (else it
answers NotOwner and the client refreshes its routing). Writes are applied locally
with a new version, sent to the other replicas (Peer.Replicate), and acknowledged once
W replicas hold them (ONE: 1, QUORUM: RF/2+1, ALL: RF); sends past W go on in the
background. Reads at ONE are served locally; when the local copy is missing while the
cluster settles after a topology change, the previous owners are asked (Peer.Fetch)
and the answer kept. QUORUM/ALL reads ask other replicas too, return the newest
version, and repair replicas that answered with an older one or none.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import Awaitable, Iterable, Sequence

import grpc

from memcluster.common.errors import Unavailable
from memcluster.node.loops import TaskSet
from memcluster.node.peers import PeerPool
from memcluster.node.store import TieredStore
from memcluster.node.tiers.base import Item
from memcluster.node.view import CONSISTENCY_ONE, ClusterView, required_acks
from memcluster.wire import items_pb2, peer_pb2

log = logging.getLogger(__name__)

Found = tuple[Item, str] | None
Put = tuple[bytes, bytes, float | None, int]


def item_to_wire(key: bytes, item: Item) -> items_pb2.Item:
    """An Item with all its metadata, for peers."""
    return items_pb2.Item(
        key=key,
        value=item.value,
        version=item.version,
        origin=item.origin,
        expires_at_ms=item.expires_ms,
        priority=item.priority,
        tombstone=item.tombstone,
    )


def item_from_wire(msg: items_pb2.Item) -> Item:
    """The domain Item a peer sent."""
    return Item(msg.value, msg.version, msg.origin, msg.expires_at_ms, msg.priority, msg.tombstone)


class Replicator:
    """Reads and writes of one node, spread over replicas as the view says."""

    def __init__(
        self, store: TieredStore, view: ClusterView, peers: PeerPool, timeout: float
    ) -> None:
        self.store = store
        self.view = view
        self.peers = peers
        self.timeout = timeout
        self.background = TaskSet("replication")
        self.repairs = 0
        self.fallback_fetches = 0

    # -- writes --------------------------------------------------------------

    async def put_many(self, puts: Sequence[Put], consistency: int) -> list[int]:
        """Validate all, apply all locally, replicate; returns the versions."""
        owners = self.view.check_owner([p[0] for p in puts])
        items = self.store.write_many(puts)
        written = [(p[0], item) for p, item in zip(puts, items, strict=True)]
        await self._replicate(written, owners, consistency)
        return [item.version for _, item in written]

    async def delete_many(self, keys: Sequence[bytes], consistency: int) -> list[bool]:
        """Tombstone each key everywhere; returns whether a live item existed locally."""
        owners = self.view.check_owner(list(keys))
        self.store.limits.keys(keys)
        results = [self.store.delete(key) for key in keys]
        await self._replicate(
            [(k, r[1]) for k, r in zip(keys, results, strict=True)], owners, consistency
        )
        return [existed for existed, _ in results]

    async def touch(
        self, key: bytes, ttl: float | None, priority: int | None, consistency: int
    ) -> Item | None:
        """New expiry/priority on every replica."""
        owners = self.view.check_owner([key])
        item = self.store.touch(key, ttl, priority)
        if item is not None:
            await self._replicate([(key, item)], owners, consistency)
        return item

    async def _replicate(
        self,
        items: Sequence[tuple[bytes, Item]],
        owners: Sequence[tuple[str, ...]],
        consistency: int,
    ) -> None:
        me = self.view.node_id
        per_peer: dict[str, list[int]] = defaultdict(list)
        needed = []
        for index, replicas in enumerate(owners):
            needed.append(required_acks(consistency, len(replicas)) - 1)
            for node in replicas:
                if node != me:
                    per_peer[node].append(index)
        if not per_peer:
            return
        acks = [0] * len(items)
        pending: set[asyncio.Task[list[int]]] = set()
        for node, indexes in per_peer.items():
            batch = [item_to_wire(items[i][0], items[i][1]) for i in indexes]
            task = asyncio.create_task(self._send(node, batch, indexes))
            pending.add(task)
            self.background.add(task)
        # Wait until every item has its W acks, or every send has finished.
        while pending and any(a < n for a, n in zip(acks, needed, strict=True)):
            done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                if not task.cancelled() and task.exception() is None:
                    for i in task.result():
                        acks[i] += 1
        short = [i for i, (a, n) in enumerate(zip(acks, needed, strict=True)) if a < n]
        if short:
            i = short[0]
            raise Unavailable(
                f"write of {len(short)} key(s) (first {items[i][0][:64]!r}) reached "
                f"{acks[i] + 1} of the {needed[i] + 1} replicas its consistency level needs; "
                "it is applied where it arrived and will spread by repair"
            )

    async def _send(self, node: str, batch: list[items_pb2.Item], indexes: list[int]) -> list[int]:
        address = self.view.address(node)
        if address is None:
            raise Unavailable(f"no address for replica {node}")
        request = peer_pb2.ReplicateRequest(items=batch, epoch=self.view.epoch)
        await self.peers.replicate(address, request, self.timeout)
        return indexes

    # -- reads ---------------------------------------------------------------

    async def get(self, key: bytes, consistency: int) -> Found:
        """``get_many`` of one key (the single-key read path: no lists)."""
        if consistency != CONSISTENCY_ONE:
            return (await self.get_many([key], consistency))[0]
        self.view.check_owner_of(key)
        found = self.store.get(key)
        if found is None and self.view.settling and self.view.previous_owners(key):
            await self._fetch_from_previous([key])
            found = self.store.get(key)
        return found

    async def get_many(self, keys: Sequence[bytes], consistency: int) -> list[Found]:
        """Each key's live item and serving tier (None when absent)."""
        owners = self.view.check_owner(keys)
        if consistency == CONSISTENCY_ONE:
            found = self.store.get_many(keys)
            for i in await self._fetch_missing(keys, found):
                found[i] = self.store.get(keys[i])
            return found
        self.store.limits.keys(keys)
        return await self._quorum_read(list(keys), owners, consistency)

    async def values_many(self, keys: Sequence[bytes], consistency: int) -> list[bytes | None]:
        """Each key's live value (None when absent): ``get_many`` without the metadata."""
        if consistency != CONSISTENCY_ONE:
            return [f and f[0].value for f in await self.get_many(keys, consistency)]
        self.view.check_owner(keys)
        values = self.store.values_many(keys)
        for i in await self._fetch_missing(keys, values):
            found = self.store.get(keys[i])
            values[i] = found and found[0].value
        return values

    async def _fetch_missing(self, keys: Sequence[bytes], found: Sequence[object]) -> list[int]:
        """While the cluster settles, fetch the keys found None here from their previous
        owners; returns the indexes of those keys, to be read again."""
        view = self.view
        if not view.settling or None not in found:
            return []
        missing = [i for i, f in enumerate(found) if f is None and view.previous_owners(keys[i])]
        if missing:
            await self._fetch_from_previous([keys[i] for i in missing])
        return missing

    async def _fetch_from_previous(self, keys: list[bytes]) -> None:
        """Ask every previous owner for ``keys``; return once, for each key, half of its
        previous owners (rounded up) have answered and one of them had it, or all have
        answered.

        While data moves the previous owners are busy sending it, so the read does not
        wait for the slowest of them; but one answer alone could be a lagging replica's
        older version. Half of the previous owners meet every quorum that acknowledged
        a write (R + W > N: with RF 2 one answer, with RF 3 two). The later answers are
        applied when they come (in the background): of two versions, the store keeps
        the newer.
        """
        by_node: dict[str, list[bytes]] = defaultdict(list)
        need: dict[bytes, int] = {}
        for key in keys:
            owners = self.view.previous_owners(key)
            need[key] = (len(owners) + 1) // 2
            for node in owners:
                by_node[node].append(key)
        pending: set[asyncio.Task[set[bytes] | None]] = set()
        covers: dict[asyncio.Task[set[bytes] | None], list[bytes]] = {}
        for node, wanted_there in by_node.items():
            address = self.view.address(node)
            if address is not None:
                request = peer_pb2.FetchRequest(keys=wanted_there, epoch=self.view.epoch)
                task = asyncio.create_task(self._fetch_into_store(node, address, request))
                self.background.add(task)  # supervised even if this read is cancelled
                pending.add(task)
                covers[task] = wanted_there
        found: set[bytes] = set()
        unsettled = set(keys)
        while pending and unsettled:
            done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                had = task.result()
                if had is None:
                    continue
                found |= had
                for key in covers[task]:
                    need[key] -= 1
                    if need[key] <= 0 and key in found:
                        unsettled.discard(key)

    async def _fetch_into_store(
        self, node: str, address: str, request: peer_pb2.FetchRequest
    ) -> set[bytes] | None:
        """Fetch from one previous owner and apply what it has: the keys it had, or None
        when it did not answer."""
        try:
            reply = await self.peers.stub(address).Fetch(request, timeout=self.timeout)
        except (TimeoutError, grpc.RpcError) as exc:
            log.debug("fetch from %s failed: %r", node, exc)
            return None
        for msg in reply.items:
            if self.store.apply(msg.key, item_from_wire(msg)):
                self.fallback_fetches += 1
        return {msg.key for msg in reply.items}

    async def _quorum_read(
        self, keys: list[bytes], owners: list[tuple[str, ...]], consistency: int
    ) -> list[Found]:
        me = self.view.node_id
        by_node: dict[str, list[bytes]] = defaultdict(list)
        for key, replicas in zip(keys, owners, strict=True):
            for node in replicas:
                if node != me:
                    by_node[node].append(key)
        replies = await self._fetch_all(by_node)
        answered: dict[bytes, int] = defaultdict(int)
        remote: dict[bytes, dict[str, Item]] = defaultdict(dict)
        for node, items in replies.items():
            for key in by_node[node]:
                answered[key] += 1
            for msg in items:
                remote[msg.key][node] = item_from_wire(msg)
        results: list[Found] = []
        for key, replicas in zip(keys, owners, strict=True):
            need = required_acks(consistency, len(replicas)) - 1
            if answered[key] < need:
                raise Unavailable(
                    f"read of {key[:64]!r} got {answered[key] + 1} of the {need + 1} replica "
                    "answers its consistency level needs"
                )
            local = self.store.fetch(key)
            candidates = [i for i in (local, *remote[key].values()) if i is not None]
            newest = max(candidates, key=Item.order, default=None)
            if newest is not None:
                if local is None or local.order() < newest.order():
                    self.store.apply(key, newest)
                stale = [
                    n
                    for n in replicas
                    if n != me
                    and n in replies
                    and (n not in remote[key] or remote[key][n].order() < newest.order())
                ]
                if stale:
                    self._repair(key, newest, stale)
            results.append(self.store.get(key))
        return results

    def _repair(self, key: bytes, item: Item, nodes: Iterable[str]) -> None:
        for node in nodes:
            self.repairs += 1
            task = asyncio.create_task(self._send(node, [item_to_wire(key, item)], [0]))
            self.background.add(task)

    async def _fetch_all(self, by_node: dict[str, list[bytes]]) -> dict[str, list[items_pb2.Item]]:
        """Fetch per node concurrently; nodes that fail are left out of the answer."""
        calls: dict[str, Awaitable[peer_pb2.FetchResponse]] = {}
        for node, keys in by_node.items():
            address = self.view.address(node)
            if address is not None:
                request = peer_pb2.FetchRequest(keys=keys, epoch=self.view.epoch)
                calls[node] = self.peers.stub(address).Fetch(request, timeout=self.timeout)
        results = await asyncio.gather(*calls.values(), return_exceptions=True)
        replies: dict[str, list[items_pb2.Item]] = {}
        for node, result in zip(calls, results, strict=True):
            if isinstance(result, grpc.RpcError | asyncio.TimeoutError):
                log.debug("fetch from %s failed: %r", node, result)
            elif isinstance(result, BaseException):
                raise result
            else:
                replies[node] = list(result.items)
        return replies

    async def close(self) -> None:
        """Stop background sends."""
        await self.background.close()
