"""Keeps a node in its cluster: registration under a lease, the topology watch, reports.

The node registers under a lease it keeps alive (``members/<id>``), follows the
topology the coordinator leader writes, starts a migration on every new epoch, and
publishes its load and migration progress. When etcd is unreachable the node keeps
serving on the last topology it knows, and registers again once etcd is back. A node
that the topology marked DRAINING and then dropped has handed everything over: it
asks the process to stop.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

from memcluster.common.config import NodeClusterConfig, etcd_endpoints
from memcluster.common.topology import NodeState, Topology
from memcluster.coordinator.etcd import Etcd, EtcdError
from memcluster.coordinator.keys import Keys, Registration
from memcluster.coordinator.session import Session
from memcluster.node.migration import Progress
from memcluster.node.reports import PROGRESS_EVERY, ReportSchedule, progress_to_wire
from memcluster.wire import coordinator_pb2

if TYPE_CHECKING:
    from memcluster.node.runtime import NodeRuntime

log = logging.getLogger(__name__)

RETRY_DELAY = 0.5
MAX_RETRY_DELAY = 5.0


class ClusterAgent:
    """The node's side of the cluster protocol (see the module docstring).

    ``progress_every`` is :data:`PROGRESS_EVERY` but for tests.
    """

    def __init__(
        self,
        node: NodeRuntime,
        config: NodeClusterConfig,
        on_leave: Callable[[], None],
        *,
        progress_every: float = PROGRESS_EVERY,
    ) -> None:
        self.node = node
        self.config = config
        self.progress_every = progress_every
        self.keys = Keys(config.name)
        self.etcd = Etcd(etcd_endpoints(config.etcd), timeout=max(1.0, config.lease_ttl / 2))
        self.session: Session | None = None
        self.registered = asyncio.Event()
        self._on_leave = on_leave
        self._was_draining = False
        self._progress: dict[str, coordinator_pb2.MigrationProgress] = {}
        self._publish = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        node.migrator.on_progress = self._progress_changed

    def start(self) -> None:
        """Start the membership, watch and report loops."""
        for name, loop in (
            ("membership", self._membership),
            ("topology-watch", self._watch_topology),
            ("migrations-watch", self._watch_migrations),
            ("reports", self._reports),
        ):
            task = asyncio.get_running_loop().create_task(self._forever(name, loop), name=name)
            self._tasks.append(task)

    async def close(self) -> None:
        """Stop the loops and give up the lease (best effort)."""
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.session is not None:
            with contextlib.suppress(Exception):
                await self.session.close()
        await self.etcd.close()

    async def _forever(self, name: str, loop: Callable[[], Coroutine[Any, Any, None]]) -> None:
        """Run ``loop`` again after etcd failures, with capped backoff."""
        delay = RETRY_DELAY
        while True:
            started = time.monotonic()
            try:
                await loop()
            except asyncio.CancelledError:
                raise
            except EtcdError as exc:
                log.warning("%s: etcd unavailable (%s); retrying", name, exc)
            except Exception:
                log.exception("%s failed; retrying", name)
            if time.monotonic() - started > MAX_RETRY_DELAY:
                delay = RETRY_DELAY
            await asyncio.sleep(delay)
            delay = min(delay * 2, MAX_RETRY_DELAY)

    async def _membership(self) -> None:
        if self.session is not None:
            with contextlib.suppress(Exception):
                await self.session.close()
        self.registered.clear()
        self.session = Session(self.etcd, ttl=max(1, round(self.config.lease_ttl)))
        await self.session.start()
        registration = Registration(self.node.address, self.config.weight, time.time())
        await self.etcd.put(
            self.keys.members + self.node.node_id,
            registration.to_bytes(),
            lease=self.session.lease_id,
        )
        self.registered.set()
        self._publish.set()
        log.info("registered in cluster %s as %s", self.config.name, self.node.node_id)
        await self.session.lost.wait()
        log.warning(
            "lease lost (etcd unreachable past %ss); registering again", self.config.lease_ttl
        )

    async def _watch_topology(self) -> None:
        data, revision = await self.etcd.get_with_revision(self.keys.topology)
        if data:
            self._apply(Topology.from_bytes(data))
        watch = self.etcd.watch_prefix(self.keys.topology, start_revision=revision + 1)
        async for event in watch:
            if event.kind == "put" and event.key == self.keys.topology:
                self._apply(Topology.from_bytes(event.value))

    def _apply(self, topology: Topology) -> None:
        if not self.node.view.update(topology):
            return
        me = topology.node(self.node.node_id)
        log.info(
            "epoch %d: %d nodes, rf %d, this node %s",
            topology.epoch,
            len(topology.nodes),
            topology.replication_factor,
            me.state if me else "not in the ring",
        )
        self._recompute_settling()
        self.node.migrator.start(topology)
        if me is not None and me.state == NodeState.DRAINING:
            self._was_draining = True
        elif self._was_draining and (me is None or me.state == NodeState.DOWN):
            log.info("drained and removed from the topology: leaving")
            self._on_leave()

    async def _watch_migrations(self) -> None:
        listed, revision = await self.etcd.get_prefix_with_revision(self.keys.migrations)
        self._progress = {Keys.leaf(k): _parse_progress(v) for k, v in listed.items()}
        self._recompute_settling()
        watch = self.etcd.watch_prefix(self.keys.migrations, start_revision=revision + 1)
        async for event in watch:
            node = Keys.leaf(event.key)
            if event.kind == "put":
                self._progress[node] = _parse_progress(event.value)
            else:
                self._progress.pop(node, None)
            self._recompute_settling()

    def _recompute_settling(self) -> None:
        """Settled once every live node finished migrating for the current epoch."""
        view = self.node.view
        if not view.settling:
            return
        epoch = view.epoch
        for node in view.topology.nodes:
            if node.state == NodeState.DOWN:
                continue
            progress = self._progress.get(node.id)
            if progress is None or progress.epoch < epoch or not progress.done:
                return
        view.settling = False
        log.info("epoch %d settled: every node finished its migration", epoch)
        self.node.migrator.settled(epoch)

    def _progress_changed(self, progress: Progress) -> None:
        self._publish.set()  # the reports loop decides whether anything is due

    async def _reports(self) -> None:
        """Publish migration progress and load when a ReportSchedule says they are due.

        A new schedule for each registration and each restart after an etcd error: all
        is published again at once, whatever a lost lease or a failed put took with it.
        """
        reported_under: Session | None = None
        schedule = ReportSchedule(self.config.load_interval, self.progress_every)
        while True:
            await self.registered.wait()
            session = self.session
            assert session is not None  # registered is only set once there is one
            if session is not reported_under:
                reported_under = session
                schedule = ReportSchedule(self.config.load_interval, self.progress_every)
            self._publish.clear()
            me = self.node.node_id
            now = time.monotonic()
            # A copy: the migration goes on while the put is under way, and what is
            # recorded as sent must be what was sent.
            progress = dataclasses.replace(self.node.migrator.progress)
            if schedule.progress_due(progress, now):
                wire = progress_to_wire(me, progress)
                await self.etcd.put(self.keys.migrations + me, wire.SerializeToString())
                schedule.progress_sent(progress, now)
            if schedule.load_due(now):
                await self.etcd.put(
                    self.keys.load + me, self._load().SerializeToString(), lease=session.lease_id
                )
                schedule.load_sent(now)
            timeout = schedule.wait(self.node.migrator.progress, time.monotonic())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._publish.wait(), timeout)

    def _load(self) -> coordinator_pb2.NodeLoad:
        node = self.node
        by_tier = {s.name: s for s in node.store.stats()}

        def held(name: str) -> int:
            return by_tier[name].bytes if name in by_tier else 0

        return coordinator_pb2.NodeLoad(
            node_id=node.node_id,
            ops_per_second=node.load.rate(time.monotonic()),
            hot_bytes=held("hot"),
            warm_bytes=held("warm"),
            cold_bytes=held("cold"),
            items=sum(s.items for s in by_tier.values()),
            memory_used_ratio=node.pressure.last_used,
            hot_keys=node.load.hot_keys(),
            alive=True,
        )


def _parse_progress(data: bytes) -> coordinator_pb2.MigrationProgress:
    msg = coordinator_pb2.MigrationProgress()
    msg.ParseFromString(data)
    return msg
