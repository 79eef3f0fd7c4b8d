"""Rebalancing: after a topology change, items that changed owner stream to their new owners.

For every key it holds, a node compares the key's owners in the previous epoch with
those in the new one. New owners that were not owners before must receive the item.
The first previous owner still alive sends it (so an item travels once, not RF times);
a previous owner that drops the key sends too only when that sender drops it as well.
Items go out in batches over Peer.Transfer. Items this node no longer owns are dropped,
in small steps, once the whole cluster has settled for the epoch (``settled``), so that
no key has fewer copies than its replication factor while data moves. A hand-over that
fails is retried (with backoff) until it succeeds or a newer epoch replaces it. Versions
make late or repeated transfers harmless: a receiver keeps whichever write is newer.
An epoch that changes no owners (a joining node turning UP) right after one that
settled here has nothing to move, and scans nothing.

Pace: foreground requests share the node's one event loop (and, on a small machine, its
CPUs) with the move. Migration work runs in slices of the loop's time (``TimeSlice``,
one shared by all of a node's streams), so that a request waits behind a quarter of a
millisecond of it at most; between slices the thread gives up its CPU to any thread
waiting for it, so that the move does not hold a CPU a request's thread, here or in a
neighbouring process, waits for. Every byte a node sends or receives for a migration goes
through its ``Pacer``: a token bucket of at most ``rate`` bytes per second that halves
its rate whenever the node's event loop runs late (``LagMonitor``) or its thread waits
for a CPU too often (``RunQueueWait``: the machine is busy, and every request pays for
it), and creeps back up while neither is the case, never below ``min_rate``, so that a
move always finishes in bounded time (as Cassandra throttles streams and Redis migrates
slots in small steps). A move that restores copies a dead node took with it is not
slowed for a busy CPU, only for a late loop (its slices still give up the CPU between
them, which costs nothing while no other thread waits for it): until it is done some
keys have fewer copies than the replication factor, and durability comes first. A
receiver that waits for its bucket stops reading its streams, and gRPC flow control
slows the senders: a node that many peers send to is not flooded.
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
from memcluster.node.loops import LagMonitor, RunQueueWait, TimeSlice
from memcluster.node.peers import PeerPool
from memcluster.node.replication import item_to_wire
from memcluster.node.store import TieredStore
from memcluster.wire import peer_pb2

log = logging.getLogger(__name__)

DROP_STEP = 32  # copies dropped in one store call (one cold-tier transaction)
RETRY_DELAY = 0.2
MAX_RETRY_DELAY = 5.0
#: The event-loop lag above which migration slows down, and the step sizes: a request
#: waiting behind migration work should wait a few milliseconds at most, not tens.
LAG_TARGET = 0.003
#: The share of time the loop's thread may wait for a CPU before migration slows down
#: (``cluster.migration_cpu_wait``). On a loaded 2-core machine running a client and
#: four nodes it is ~4% without a move and ~13% during an unthrottled one, when every
#: request waits for a CPU three times as long.
WAIT_TARGET = 0.08
ADAPT_EVERY = 0.1  # seconds between rate adjustments
BACK_OFF = 0.5  # rate multiplier when the loop runs late
SPEED_UP = 0.05  # of the ceiling, added per adjustment while the loop is on time
MIN_RATE_SHARE = 8  # the default floor: rate / 8


def _never() -> float:
    """No CPU-wait signal: the pace heeds only the loop's lag."""
    return 0.0


class Pacer:
    """The node's budget for migration bytes, sent and received (see the module docstring).

    ``take(size)`` waits until the bucket has room for ``size`` bytes at the current
    rate, which starts at ``floor`` whenever migration traffic resumes. Every
    ``ADAPT_EVERY`` seconds the rate is halved if ``lag.lag`` is above ``target`` or
    ``wait()`` (the share of time spent waiting for a CPU since its last call) is above
    ``wait_target`` (down to ``floor``), or raised by a twentieth of ``ceiling`` if both
    are below half their targets (up to ``ceiling``): additive increase, multiplicative
    decrease, as TCP does with a congested link. While ``urgent`` (copies lost with a
    dead node being restored) only the lag counts.
    """

    def __init__(
        self,
        ceiling: int,
        floor: int,
        lag: LagMonitor,
        *,
        target: float = LAG_TARGET,
        wait: Callable[[], float] = _never,
        wait_target: float = WAIT_TARGET,
    ) -> None:
        self.ceiling = ceiling
        self.floor = max(1, min(floor, ceiling))
        self.rate = float(ceiling)
        self.lag = lag
        self.target = target
        self.wait = wait
        self.wait_target = wait_target
        #: Set while copies lost with a dead node are restored: ``wait`` is not heeded.
        self.urgent = False
        self.slowdowns = 0
        self._free_at = 0.0  # when the bytes taken so far have had their share of time
        self._adapted = 0.0

    async def take(self, size: int) -> None:
        """Wait for ``size`` bytes' turn (at once if the bucket is idle)."""
        if not self.lag.running:
            # A start after a quiet spell: the probe has no reading yet, so begin at the
            # floor and speed up while the loop stays on time (TCP's slow start).
            self.rate = float(self.floor)
        self.lag.touch()
        now = time.monotonic()
        self._adapt(now)
        start = max(self._free_at, now)
        self._free_at = start + size / self.rate
        if start > now:
            await asyncio.sleep(start - now)

    def _adapt(self, now: float) -> None:
        if now - self._adapted < ADAPT_EVERY:
            return
        self._adapted = now
        waited = self.wait()  # read every time: each reading covers the time since the last
        load = self.lag.lag / self.target
        if not self.urgent:
            load = max(load, waited / self.wait_target)
        if load > 1:
            if self.rate > self.floor:
                self.slowdowns += 1
            self.rate = max(float(self.floor), self.rate * BACK_OFF)
        elif load < 0.5:
            self.rate = min(float(self.ceiling), self.rate + self.ceiling * SPEED_UP)


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
        min_rate: int | None = None,
        cpu_wait: float = WAIT_TARGET,
        on_progress: Callable[[Progress], None] = lambda p: None,
    ) -> None:
        self.node_id = node_id
        self.store = store
        self.peers = peers
        self.batch = batch
        self.on_progress = on_progress
        self.progress = Progress()
        self.lag = LagMonitor()
        floor = rate // MIN_RATE_SHARE if min_rate is None else min_rate
        #: Shared by this node's outgoing migrations and incoming transfers.
        wait = RunQueueWait().sample if cpu_wait > 0 else _never
        self.pacer = Pacer(rate, floor, self.lag, wait=wait, wait_target=cpu_wait or WAIT_TARGET)
        #: Shared too: with several streams in and out, one slice of migration work runs
        #: between two turns of the event loop, not one per stream.
        self.turn = TimeSlice()
        self._task: asyncio.Task[None] | None = None
        self._dropping: asyncio.Task[int] | None = None
        self._to_drop: tuple[int, list[bytes]] | None = None
        self._settled = 0  # the last epoch whose copies to drop were decided (``settled``)
        #: The copies a settled epoch handed over and scheduled for dropping (see
        #: ``_migrate``), kept until they are dropped or the next epoch has scanned.
        self._handed: tuple[int, set[bytes]] | None = None

    def start(self, topology: Topology) -> None:
        """Begin migrating for ``topology`` (cancelling a migration for an older epoch)."""
        if self._task is not None:
            self._task.cancel()
        previous = Placement.previous(topology)
        current = Placement.current(topology)
        # An epoch that changes no owners (a JOINING node turning UP) right after one
        # that settled here moves nothing: every copy this node is to give up was handed
        # over and is being dropped. Skip the scan of every key it holds, and let those
        # drops go on.
        quiet = (
            previous is not None
            and self._settled == topology.epoch - 1
            and current.same_owners(previous)
        )
        if self._dropping is not None and not quiet:
            self._dropping.cancel()  # the new epoch's migration decides again
        self.progress = Progress(epoch=topology.epoch, done=False, started=time.time())
        self._task = asyncio.get_running_loop().create_task(
            self._run(topology, previous, current, quiet), name=f"migration-{topology.epoch}"
        )
        self._task.add_done_callback(self._done)

    def settled(self, epoch: int) -> int:
        """The cluster finished migrating for ``epoch``: drop copies no longer owned.

        Returns how many copies are to be dropped; they go in steps of ``DROP_STEP``
        between yields to the event loop (``dropped()`` waits for the last step).
        """
        pending = self._to_drop
        if pending is None or pending[0] > epoch:
            return 0  # news of an older epoch: the pending drops belong to a newer one
        self._to_drop = None
        if pending[0] < epoch:
            return 0  # superseded: the newer epoch's migration decides again
        self._settled = epoch
        leaving = pending[1]  # the scan listed exactly the keys this epoch took away
        if leaving:
            self._handed = (epoch, set(leaving))
            self._dropping = asyncio.get_running_loop().create_task(
                self._drop(epoch, leaving), name=f"drop-{epoch}"
            )
            self._dropping.add_done_callback(self._drop_done)
        return len(leaving)

    async def dropped(self) -> int:
        """Wait until the copies ``settled`` scheduled are dropped; returns how many were."""
        task = self._dropping
        return 0 if task is None else await asyncio.shield(task)

    async def _drop(self, epoch: int, leaving: list[bytes]) -> int:
        dropped = 0
        turn = self.turn
        for start in range(0, len(leaving), DROP_STEP):
            count = self.store.discard_many(leaving[start : start + DROP_STEP])
            dropped += count
            self.progress.items_dropped += count
            if turn.over():
                await turn.next()
        self._handed = None
        log.info("epoch %d settled: dropped %d copies now owned elsewhere", epoch, dropped)
        return dropped

    def _drop_done(self, task: asyncio.Task[int]) -> None:
        if not task.cancelled() and task.exception() is not None:
            log.error("dropping moved copies failed: %r", task.exception())

    async def close(self) -> None:
        """Cancel a running migration."""
        tasks = [t for t in (self._task, self._dropping) if t is not None]
        self._task = self._dropping = None
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self.lag.close()

    def _done(self, task: asyncio.Task[None]) -> None:
        if task.cancelled():
            return
        error = task.exception()
        if error is not None:
            log.error("migration for epoch %d failed: %r", self.progress.epoch, error)

    async def _run(
        self, topology: Topology, previous: Placement | None, current: Placement, quiet: bool
    ) -> None:
        alive = {n.id for n in topology.nodes if n.state != NodeState.DOWN}
        self.pacer.urgent = any(n.id not in alive for n in topology.previous_nodes)
        progress = self.progress
        self.on_progress(progress)
        delay = RETRY_DELAY
        handed, self._handed = self._handed, None
        if handed is None or handed[0] + 1 != topology.epoch:
            # Not seen settling here, but the epoch before finished its hand-over here and
            # the leader moved on: it does so only once an epoch has settled, unless a node
            # died. Then what this node was to give up is with its new owners all the same;
            # after a death it may not be (another sender's stream was cut short), and
            # such copies are sent again as data held outside the placement.
            done = self._to_drop
            settled = done and done[0] + 1 == topology.epoch and not self.pacer.urgent
            handed = (done[0], set(done[1])) if done and settled else (0, set())
        if quiet:
            # Nothing moves; copies still being dropped stay known as handed over.
            self._handed = (topology.epoch, handed[1]) if handed[1] else None
            self._to_drop = (topology.epoch, [])
        while previous is not None and not quiet:
            try:
                await self._migrate(topology, previous, current, alive, handed[1])
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

    async def _migrate(
        self,
        topology: Topology,
        previous: Placement,
        current: Placement,
        alive: set[str],
        handed: set[bytes],
    ) -> None:
        me = self.node_id
        progress = self.progress
        progress.items_total = sum(len(t) for t in self.store.tiers)
        outgoing: dict[str, list[bytes]] = defaultdict(list)
        leaving: list[bytes] = []
        partitions = current.partitions
        # Who gets a key depends only on its partition: decide once per partition.
        # Copies the epoch before handed to its owners, which the node had not dropped
        # yet when this epoch came (the leader moves on as soon as it settles): those
        # owners are this epoch's previous owners and send whatever moves on, so such a
        # copy is only dropped here, not sent around again as data held outside the
        # placement; unless no previous owner of its partition is alive any more.
        plan = [
            (
                _targets(me, current.owners(p), previous.owners(p), alive),
                me not in current.owners(p),
                any(n in alive for n in previous.owners(p)),
            )
            for p in range(partitions)
        ]
        # Keys only: most items stay put, and reading a cold item means decompressing it.
        turn = self.turn
        for index, key in enumerate(self.store.keys()):
            targets, leaves, covered = plan[partition_of(key, partitions)]
            if targets and covered and key in handed:
                targets = []
            for target in targets:
                outgoing[target].append(key)
            if leaves:
                leaving.append(key)
            progress.items_scanned = index + 1
            if turn.over():
                await turn.next()
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
        self._to_drop = (topology.epoch, leaving)

    async def _send(self, address: str, keys: list[bytes], epoch: int) -> None:
        progress = self.progress
        fetch = self.store.fetch
        pacer = self.pacer

        async def batches() -> AsyncIterator[peer_pb2.ItemBatch]:
            turn = self.turn
            for start in range(0, len(keys), self.batch):
                # Read at send time: the latest version, and nothing deleted meanwhile.
                wire = []
                size = 0
                for key in keys[start : start + self.batch]:
                    if (item := fetch(key)) is not None:
                        wire.append(item_to_wire(key, item))
                        size += len(key) + len(item.value)
                    if turn.over():
                        await turn.next()  # cold reads decompress: let requests in
                await pacer.take(size)
                yield peer_pb2.ItemBatch(items=wire, epoch=epoch)
                progress.items_sent += len(wire)
                progress.bytes_sent += size
                self.on_progress(progress)

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
