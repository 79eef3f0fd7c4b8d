"""A coordinator replica: it observes the cluster in etcd, and when elected, leads it.

Every replica registers under its own lease and reads the cluster's state every
``TICK`` seconds (members, migration progress, loads, admin requests, topology), so
that any replica can answer status and admin calls. One replica is the leader
(etcd election); only the leader writes topologies, each write fenced on its
leadership so that a deposed leader's write fails. When the leader dies its lease
lapses and a waiting replica takes over within the lease time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field
from typing import TypeVar

from google.protobuf.message import Message

from memcluster.common.config import CoordinatorConfig, etcd_endpoints
from memcluster.common.topology import Topology
from memcluster.coordinator.balance import LoadBalancer
from memcluster.coordinator.election import Election
from memcluster.coordinator.etcd import Etcd, EtcdError
from memcluster.coordinator.keys import Keys, Registration
from memcluster.coordinator.plan import Desired, Observed, next_topology
from memcluster.coordinator.session import Session
from memcluster.wire import coordinator_pb2

log = logging.getLogger(__name__)

TICK = 0.25
RETRY_DELAY = 1.0


@dataclass(slots=True)
class Snapshot:
    """The cluster as last read from etcd."""

    topology: Topology
    members: dict[str, Registration] = field(default_factory=dict)
    progress: dict[str, coordinator_pb2.MigrationProgress] = field(default_factory=dict)
    loads: dict[str, coordinator_pb2.NodeLoad] = field(default_factory=dict)
    desired: Desired = field(default_factory=Desired)
    leader: str | None = None


class CoordinatorRuntime:
    """One coordinator replica (see the module docstring)."""

    def __init__(self, config: CoordinatorConfig, coordinator_id: str, address: str) -> None:
        self.config = config
        self.id = coordinator_id
        self.address = address
        self.keys = Keys(config.cluster.name)
        self.etcd = Etcd(etcd_endpoints(config.cluster.etcd), timeout=3.0)
        self.snapshot = Snapshot(self.initial_topology())
        self.balancer = LoadBalancer(config.balancing)
        self.leading = False
        self._missing_since: dict[str, float] = {}
        self._last_balance = 0.0
        self._task: asyncio.Task[None] | None = None

    def initial_topology(self) -> Topology:
        """Epoch 0: an empty ring with the configured replication factor and partitions."""
        t = self.config.topology
        return Topology(0, t.replication_factor, (), t.partitions, cluster=self.config.cluster.name)

    def start(self) -> None:
        """Start observing and campaigning."""
        self._task = asyncio.get_running_loop().create_task(self._run(), name="coordinator")
        self._task.add_done_callback(self._died)

    async def close(self) -> None:
        """Stop; a leader steps down (its lease is revoked) so another takes over at once."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await self.etcd.close()

    def _died(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            log.error("coordinator loop died: %r", task.exception())

    async def _run(self) -> None:
        while True:
            session = Session(self.etcd, ttl=max(1, round(self.config.cluster.lease_ttl)))
            try:
                await session.start()
                await self.etcd.put(
                    self.keys.coordinators + self.id, self.address.encode(), lease=session.lease_id
                )
                election = Election(self.etcd, session, self.keys.leader, self.id)
                campaign = asyncio.create_task(election.campaign())
                try:
                    await self._observe_until_lost(session, election, campaign)
                finally:
                    campaign.cancel()
                    await asyncio.gather(campaign, return_exceptions=True)
            except EtcdError as exc:
                log.warning("etcd unavailable (%s); retrying", exc)
            finally:
                self.leading = False
                with contextlib.suppress(Exception):
                    await session.close()
            await asyncio.sleep(RETRY_DELAY)

    async def _observe_until_lost(
        self, session: Session, election: Election, campaign: asyncio.Task[None]
    ) -> None:
        while not session.lost.is_set():
            await self.refresh()
            if campaign.done() and campaign.exception() is None and election.is_leader():
                if not self.leading:
                    log.info("coordinator %s is the leader", self.id)
                self.leading = True
                await self._reconcile(election)
            elif campaign.done():
                campaign.result()  # re-raise what ended the campaign
            await asyncio.sleep(TICK)

    async def refresh(self) -> Snapshot:
        """Read the cluster's state from etcd."""
        keys = self.keys
        raw_topology = await self.etcd.get(keys.topology)
        topology = Topology.from_bytes(raw_topology) if raw_topology else self.initial_topology()
        members = {}
        for key, value in (await self.etcd.get_prefix(keys.members)).items():
            with contextlib.suppress(ValueError, KeyError):
                members[Keys.leaf(key)] = Registration.from_bytes(value)
        progress = {
            Keys.leaf(k): _parse(coordinator_pb2.MigrationProgress, v)
            for k, v in (await self.etcd.get_prefix(keys.migrations)).items()
        }
        loads = {
            Keys.leaf(k): _parse(coordinator_pb2.NodeLoad, v)
            for k, v in (await self.etcd.get_prefix(keys.load)).items()
        }
        desired_raw = await self.etcd.get_prefix(keys.desired)
        leader = await self.etcd.get(keys.leader)
        self.snapshot = Snapshot(
            topology,
            members,
            progress,
            loads,
            _desired(keys, desired_raw),
            leader.decode() if leader else None,
        )
        return self.snapshot

    async def _reconcile(self, election: Election) -> None:
        snap = self.snapshot
        now = time.monotonic()
        for node in snap.topology.nodes:
            if node.id in snap.members:
                self._missing_since.pop(node.id, None)
            else:
                self._missing_since.setdefault(node.id, now)
        balancing = self.config.balancing
        if balancing.enabled and now - self._last_balance >= balancing.check_interval:
            self._last_balance = now
            base = {n: r.weight for n, r in snap.members.items()}
            base.update(snap.desired.weights)
            self.balancer.check(snap.topology, snap.loads, base, now)
        observed = Observed(snap.members, snap.progress, dict(self._missing_since), now)
        new, reasons = next_topology(
            snap.topology,
            observed,
            snap.desired,
            self.config.topology.down_after,
            self.balancer.weights,
        )
        if new is None:
            return
        guard_key, guard_value = election.fence()
        written = await self.etcd.put_if_equal(
            self.keys.topology, new.to_bytes(), guard_key=guard_key, guard_value=guard_value
        )
        if not written:
            log.warning("topology write refused: this coordinator is no longer the leader")
            self.leading = False
            return
        log.info("epoch %d: %s", new.epoch, "; ".join(reasons))
        for gone in {n.id for n in snap.topology.nodes} - {n.id for n in new.nodes}:
            self._missing_since.pop(gone, None)
            await self.etcd.delete(self.keys.migrations + gone)
            await self.etcd.delete(self.keys.desired_drain + gone)
        self.snapshot.topology = new

    def status(self) -> coordinator_pb2.ClusterStatus:
        """What `memcluster status` shows, from the last snapshot."""
        snap = self.snapshot
        loads = []
        for node in snap.topology.nodes:
            load = coordinator_pb2.NodeLoad(node_id=node.id)
            if node.id in snap.loads:
                load.CopyFrom(snap.loads[node.id])
            load.alive = node.id in snap.members
            loads.append(load)
        return coordinator_pb2.ClusterStatus(
            topology=snap.topology.to_wire(),
            leader_id=snap.leader or "",
            migrations=[snap.progress[n.id] for n in snap.topology.nodes if n.id in snap.progress],
            loads=loads,
        )


_M = TypeVar("_M", bound=Message)


def _parse(cls: type[_M], data: bytes) -> _M:
    msg = cls()
    msg.ParseFromString(data)
    return msg


def _desired(keys: Keys, raw: dict[str, bytes]) -> Desired:
    rf = None
    weights: dict[str, float] = {}
    drain = set()
    for key, value in raw.items():
        with contextlib.suppress(ValueError):
            if key == keys.desired_rf:
                rf = int(value)
            elif key.startswith(keys.desired_weight):
                weights[Keys.leaf(key)] = float(value)
            elif key.startswith(keys.desired_drain):
                drain.add(Keys.leaf(key))
    return Desired(rf, weights, frozenset(drain))
