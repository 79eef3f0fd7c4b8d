"""Rebalancing: after a topology change, items that changed owner stream to their new owners.

For every key it holds, a node compares the key's owners in the previous epoch with
those in the new one. New owners that were not owners before must receive the item.
The first previous owner still alive sends it (so an item travels once, not RF times);
a previous owner that drops the key sends too only when that sender drops it as well.
Items go out in batches over Peer.Transfer, throttled to ``rate`` bytes per second so
that foreground requests keep their latency. Items this node no longer owns are
dropped once the whole cluster has settled for the epoch (``settled``), so that no key
has fewer copies than its replication factor while data moves. A hand-over that fails
is retried (with backoff) until it succeeds or a newer epoch replaces it. Versions
make late or repeated transfers harmless: a receiver keeps whichever write is newer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

from memcluster.common.placement import Placement, partition_of
from memcluster.common.topology import NodeState, Topology
from memcluster.node.peers import PeerPool
from memcluster.node.replication import item_to_wire
from memcluster.node.store import TieredStore
from memcluster.wire import peer_pb2

log = logging.getLogger(__name__)

SCAN_CHUNK = 256  # keys examined between yields to the event loop
FETCH_STEP = 25  # items read for sending between yields
RETRY_DELAY = 0.2
MAX_RETRY_DELAY = 5.0


class HandOverFailed(Exception):
    """Some new owners did not take their items; local copies are kept for a retry."""


@dataclass(slots=True)
class Progress:
    """How far this node's migration for one epoch has come."""

    epoch: int = 0
    done: bool = True
    items_scanned: int = 0
    items_total: int = 0
    items_sent: int = 0
    bytes_sent: int = 0
    items_dropped: int = 0
    failures: int = 0
    started: float = 0.0
    finished: float = 0.0


class Migrator:
    """Runs one migration per epoch; a newer epoch cancels a running one and starts over."""

    def __init__(
        self,
        node_id: str,
        store: TieredStore,
        peers: PeerPool,
        *,
        rate: int,
        batch: int,
        on_progress: Callable[[Progress], None] = lambda p: None,
    ) -> None:
        self.node_id = node_id
        self.store = store
        self.peers = peers
        self.rate = rate
        self.batch = batch
        self.on_progress = on_progress
        self.progress = Progress()
        self._task: asyncio.Task[None] | None = None
        self._to_drop: tuple[int, Placement, list[bytes]] | None = None

    def start(self, topology: Topology) -> None:
        """Begin migrating for ``topology`` (cancelling a migration for an older epoch)."""
        if self._task is not None:
            self._task.cancel()
        self.progress = Progress(epoch=topology.epoch, done=False, started=time.time())
        self._task = asyncio.get_running_loop().create_task(
            self._run(topology), name=f"migration-{topology.epoch}"
        )
        self._task.add_done_callback(self._done)

    def settled(self, epoch: int) -> int:
        """The cluster finished migrating for ``epoch``: drop copies no longer owned."""
        pending = self._to_drop
        if pending is None or pending[0] > epoch:
            return 0  # news of an older epoch: the pending drops belong to a newer one
        self._to_drop = None
        if pending[0] < epoch:
            return 0  # superseded: the newer epoch's migration decides again
        _, current, leaving = pending
        dropped = 0
        for key in leaving:
            if self.node_id not in current.replicas(key) and self.store.discard(key):
                dropped += 1
        self.progress.items_dropped += dropped
        if dropped:
            log.info("epoch %d settled: dropped %d copies now owned elsewhere", epoch, dropped)
        return dropped

    async def close(self) -> None:
        """Cancel a running migration."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    def _done(self, task: asyncio.Task[None]) -> None:
        if task.cancelled():
            return
        error = task.exception()
        if error is not None:
            log.error("migration for epoch %d failed: %r", self.progress.epoch, error)

    async def _run(self, topology: Topology) -> None:
        previous = Placement.previous(topology)
        current = Placement.current(topology)
        progress = self.progress
        self.on_progress(progress)
        delay = RETRY_DELAY
        while previous is not None:
            try:
                await self._migrate(topology, previous, current)
                break
            except HandOverFailed as exc:
                # Keep what could not be handed over and try again: the epoch cannot
                # settle (and the leader makes no further change) until it is done.
                progress.failures += 1
                log.warning(
                    "migration for epoch %d failed (%s); retrying in %.1fs",
                    progress.epoch,
                    exc,
                    delay,
                )
                self.on_progress(progress)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.Event().wait(), delay)
                delay = min(delay * 2, MAX_RETRY_DELAY)
        progress.done = True
        progress.finished = time.time()
        log.info(
            "migration for epoch %d done: %d items (%d bytes) sent, %d dropped, %.1fs",
            progress.epoch,
            progress.items_sent,
            progress.bytes_sent,
            progress.items_dropped,
            progress.finished - progress.started,
        )
        self.on_progress(progress)

    async def _migrate(self, topology: Topology, previous: Placement, current: Placement) -> None:
        me = self.node_id
        alive = {n.id for n in topology.nodes if n.state != NodeState.DOWN}
        progress = self.progress
        progress.items_total = sum(len(t) for t in self.store.tiers)
        outgoing: dict[str, list[bytes]] = defaultdict(list)
        leaving: list[bytes] = []
        partitions = current.partitions
        # Keys only: most items stay put, and reading a cold item means decompressing it.
        for index, key in enumerate(self.store.keys()):
            p = partition_of(key, partitions)
            new, old = current.owners(p), previous.owners(p)
            for target in _targets(me, new, old, alive):
                outgoing[target].append(key)
            if me not in new:
                leaving.append(key)
            progress.items_scanned = index + 1
            if index % SCAN_CHUNK == SCAN_CHUNK - 1:
                await asyncio.sleep(0)
        failed = 0
        for target, items in outgoing.items():
            address = topology.address_of(target)
            if address is None:
                failed += 1
                continue
            try:
                await self._send(address, items, topology.epoch)
            except Exception as exc:
                failed += 1
                log.warning("migration to %s (%s) failed: %r", target, address, exc)
        if failed:
            raise HandOverFailed(f"{failed} of {len(outgoing)} targets did not take their items")
        # Copies this node no longer owns are dropped once the whole cluster has settled
        # (every new owner has its copy), not now: a replica count never dips mid-move.
        self._to_drop = (topology.epoch, current, leaving)

    async def _send(self, address: str, keys: list[bytes], epoch: int) -> None:
        progress = self.progress
        fetch = self.store.fetch

        async def batches() -> AsyncIterator[peer_pb2.ItemBatch]:
            for start in range(0, len(keys), self.batch):
                # Read at send time: the latest version, and nothing deleted meanwhile.
                chunk = []
                for index, key in enumerate(keys[start : start + self.batch], 1):
                    if (item := fetch(key)) is not None:
                        chunk.append((key, item))
                    if index % FETCH_STEP == 0:
                        await asyncio.sleep(0)  # cold reads decompress: let requests in
                wire = [item_to_wire(k, i) for k, i in chunk]
                size = sum(len(k) + len(i.value) for k, i in chunk)
                began = time.monotonic()
                yield peer_pb2.ItemBatch(items=wire, epoch=epoch)
                progress.items_sent += len(chunk)
                progress.bytes_sent += size
                self.on_progress(progress)
                # Throttle: this batch may take size/rate seconds of the link.
                pause = size / self.rate - (time.monotonic() - began)
                if pause > 0:
                    await asyncio.sleep(pause)

        stub = self.peers.stub(address)
        summary = await stub.Transfer(batches())
        log.info(
            "sent %d items to %s (%d newer than what it held)",
            summary.received,
            address,
            summary.applied,
        )


def _targets(me: str, new: tuple[str, ...], old: tuple[str, ...], alive: set[str]) -> list[str]:
    """The nodes this node must send a key to, given its new and previous owners.

    One node sends each key: the first previous owner still alive (the sender). A
    leaving owner that is not the sender sends too when the sender is leaving as well,
    so that no key depends on a single node that is about to drop it.
    """
    sender = next((n for n in old if n in alive), None)
    gained = [n for n in new if n not in old]
    if me not in new:
        if me not in old:  # data held outside the previous placement
            return list(new)
        return gained if sender == me or sender not in new else []
    if me in old:
        return gained if sender == me else []
    # A new owner holding data while no previous owner is alive spreads what it has.
    return [n for n in new if n != me] if sender is None else []
