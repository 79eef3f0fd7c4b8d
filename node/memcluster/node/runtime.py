"""A running node's state: identity, epoch, store, and the loops that keep it in shape."""

from __future__ import annotations

import asyncio
import logging

import psutil

from memcluster.common.clock import Clock, SystemClock
from memcluster.common.config import NodeConfig
from memcluster.common.errors import InvalidRequest
from memcluster.common.topology import Topology
from memcluster.common.versions import node_tag
from memcluster.node.frames import FramesServer
from memcluster.node.load import LoadMeter
from memcluster.node.loops import PeriodicTask
from memcluster.node.metrics import GcMonitor
from memcluster.node.migration import Migrator
from memcluster.node.peers import PeerPool
from memcluster.node.pressure import PressureController
from memcluster.node.replication import Replicator
from memcluster.node.store import TieredStore
from memcluster.node.view import ClusterView, standalone

log = logging.getLogger(__name__)

#: Promotions in one turn of the event loop (each may demote items down the tiers).
PROMOTE_STEP = 32


class Promotions:
    """Runs the store's deferred promotions (``TieredStore.on_deferred``) in turns of
    ``step`` between requests: a read that finds an item in a lower tier is answered
    first, and the move (with the demotions it causes) is not the reader's to wait for.
    """

    def __init__(self, store: TieredStore, step: int = PROMOTE_STEP) -> None:
        self.store = store
        self.step = step
        self._loop: asyncio.AbstractEventLoop | None = None
        self._turn_handle: asyncio.Handle | None = None

    def start(self) -> None:
        """Take the store's promotions over, on the running event loop."""
        self._loop = asyncio.get_running_loop()
        self.store.on_deferred = self._soon

    def close(self) -> None:
        """Stop; promotions still queued are dropped (the items stay where they are)."""
        self.store.on_deferred = None
        if self._turn_handle is not None:
            self._turn_handle.cancel()
            self._turn_handle = None
        self.store.drop_deferred()

    def _soon(self) -> None:
        if self._turn_handle is None and self._loop is not None:
            self._turn_handle = self._loop.call_soon(self._turn)

    def _turn(self) -> None:
        """A turn of promotions, then another after the requests that came meanwhile."""
        self._turn_handle = None
        try:
            left = self.store.promote_deferred(self.step)
        except Exception:
            # Promotions only speed reads up: drop the queue rather than stop for good
            # (a read queues again once it is empty).
            log.exception("deferred promotions failed; the queued ones are dropped")
            self.store.drop_deferred()
            return
        if left:
            self._soon()


class NodeRuntime:
    """What the servicers and the metrics endpoint see of a node."""

    def __init__(
        self, config: NodeConfig, node_id: str, address: str, clock: Clock | None = None
    ) -> None:
        self.config = config
        self.node_id = node_id
        self.address = address
        #: Where the frame transport listens (host:port), once bound; empty: not served.
        self.frames_address = ""
        self.frames: FramesServer | None = None
        self.store = TieredStore(
            config.memory, config.limits, origin=node_tag(node_id), clock=clock or SystemClock()
        )
        # A clustered node owns nothing until the coordinator's topology says otherwise.
        initial = (
            Topology(0, 1, (), cluster=config.cluster.name)
            if config.cluster.etcd
            else standalone(node_id, address)
        )
        self.view = ClusterView(node_id, initial)
        self.peers = PeerPool()
        self.replicator = Replicator(
            self.store, self.view, self.peers, config.cluster.replication_timeout
        )
        self.migrator = Migrator(
            node_id,
            self.store,
            self.peers,
            rate=config.cluster.migration_rate,
            batch=config.cluster.migration_batch,
            cpu_wait=config.cluster.migration_cpu_wait,
        )
        self.load = LoadMeter()
        self.gc = GcMonitor()
        self.pressure = PressureController(
            config.memory.pressure, self.store.configured_hot_capacity
        )
        self.promotions = Promotions(self.store)
        self._process = psutil.Process()
        hot = config.memory.tiers.hot
        self._loops = [PeriodicTask("cleanup", hot.cleanup_interval, self.cleanup)]
        cold = config.memory.tiers.cold
        if cold.enabled and cold.fsync_interval > 0:
            self._loops.append(PeriodicTask("cold-fsync", cold.fsync_interval, self._fsync))
        if config.memory.pressure.enabled:
            self._loops.append(
                PeriodicTask("pressure", config.memory.pressure.check_interval, self._pressure)
            )

    def start(self) -> None:
        """Start background work (on the running event loop)."""
        self.gc.install()
        for task in self._loops:
            task.start()
        self.promotions.start()

    @property
    def epoch(self) -> int:
        """The topology epoch this node serves under."""
        return self.view.epoch

    def count_ops(self, count: int, key: bytes | None = None) -> None:
        """Feed the load meter (request rate, hot-key sampling)."""
        self.load.observe(count, key)

    async def close(self) -> None:
        """Stop background work, hand RAM tiers to the cold tier, close files."""
        for loop in self._loops:
            await loop.close()
        await self.migrator.close()
        await self.replicator.close()
        await self.peers.close()
        self.gc.uninstall()
        self.promotions.close()
        moved = self.store.flush_down()
        log.info("flushed %d items from RAM tiers to the cold tier", moved)
        self.store.close()

    async def cleanup(self) -> None:
        """Expire and demote in bounded increments, yielding to requests in between."""
        batch = self.config.memory.cleanup_batch
        while True:
            if self.store.maintenance_step(batch) < batch:
                return
            await asyncio.sleep(0)  # let requests run between increments

    async def _fsync(self) -> None:
        # The fsync takes milliseconds under write load; LMDB runs it without the GIL,
        # so on a worker thread it no longer holds up requests. If close cancels this
        # wait, the flush still finishes on its thread, and the cold tier's close waits
        # for it.
        if self.store.cold is not None:
            await asyncio.to_thread(self.store.cold.flush)

    async def _pressure(self) -> None:
        capacity = self.pressure.check()
        if capacity is not None:
            moved = self.store.set_hot_capacity(capacity)
            log.warning(
                "memory in use %.0f%%: hot tier capacity now %d bytes (%d items moved down)",
                self.pressure.last_used * 100,
                capacity,
                moved,
            )

    def check_batch(self, size: int) -> None:
        """Refuse batches past limits.max_batch_items."""
        limit = self.config.limits.max_batch_items
        if size > limit:
            raise InvalidRequest(
                f"batch of {size} items exceeds limits.max_batch_items ({limit}); split it"
            )

    def counters(self) -> dict[str, float]:
        """Process-wide figures for the stats RPC and the metrics endpoint."""
        return {
            "rss_bytes": float(self._process.memory_info().rss),
            "system_memory_used_ratio": self.pressure.last_used,
            "hot_capacity_bytes": float(self.store.tiers[0].capacity),
            "oom_near_misses": float(self.pressure.oom_near_misses),
            "gc_pause_seconds": self.gc.pause_seconds,
            "gc_collections": float(self.gc.collections),
            "memory_churn_bytes": float(self.store.churn_bytes),
            "epoch": float(self.epoch),
            "ops": float(self.load.ops),
            "replication_failures": float(self.replicator.background.failures),
            # Replica sends still in flight after their writes were acknowledged: the lag.
            "replication_pending": float(len(self.replicator.background)),
            "read_repairs": float(self.replicator.repairs),
            "fallback_fetches": float(self.replicator.fallback_fetches),
            "migration_epoch": float(self.migrator.progress.epoch),
            "migration_done": float(self.migrator.progress.done),
            "migration_items_sent": float(self.migrator.progress.items_sent),
            "migration_bytes_sent": float(self.migrator.progress.bytes_sent),
            "migration_items_scanned": float(self.migrator.progress.items_scanned),
            "frames_requests": float(self.frames.requests if self.frames else 0),
            "frames_connections": float(len(self.frames.connections) if self.frames else 0),
        }
