"""The coordinator's gRPC servicers: admin requests land in etcd, the leader acts on them."""

from __future__ import annotations

import logging
from typing import Any

from memcluster.common.errors import (
    InvalidRequest,
    NotFound,
)
from memcluster.common.rpc import maps_errors
from memcluster.common.topology import NodeState
from memcluster.coordinator.leader import CoordinatorRuntime
from memcluster.wire import coordinator_pb2, coordinator_pb2_grpc, topology_pb2, topology_pb2_grpc

log = logging.getLogger(__name__)

MAX_RF = 7


class CoordinatorService(coordinator_pb2_grpc.CoordinatorServicer):
    """Admin and status calls (any replica answers; the leader applies)."""

    def __init__(self, runtime: CoordinatorRuntime) -> None:
        self.runtime = runtime

    @maps_errors
    async def GetTopology(
        self, request: topology_pb2.GetTopologyRequest, context: Any
    ) -> topology_pb2.Topology:
        return (await self.runtime.refresh()).topology.to_wire()

    @maps_errors
    async def SetReplicationFactor(
        self, request: coordinator_pb2.SetReplicationFactorRequest, context: Any
    ) -> coordinator_pb2.AdminReply:
        rf = request.replication_factor
        if not 1 <= rf <= MAX_RF:
            raise InvalidRequest(f"replication factor must be 1..{MAX_RF}, got {rf}")
        snap = await self.runtime.refresh()
        await self.runtime.etcd.put(self.runtime.keys.desired_rf, str(rf).encode())
        members = len(snap.topology.members())
        note = (
            f"; only {members} nodes are in the ring, so keys get {members} replicas"
            " until more join"
            if rf > members
            else ""
        )
        return coordinator_pb2.AdminReply(
            message=f"replication factor {snap.topology.replication_factor} -> {rf} requested{note}"
        )

    @maps_errors
    async def SetWeight(
        self, request: coordinator_pb2.SetWeightRequest, context: Any
    ) -> coordinator_pb2.AdminReply:
        if not 0 < request.weight <= 100:
            raise InvalidRequest(f"weight must be in (0, 100], got {request.weight}")
        await self._known(request.node_id)
        key = self.runtime.keys.desired_weight + request.node_id
        await self.runtime.etcd.put(key, repr(request.weight).encode())
        return coordinator_pb2.AdminReply(
            message=f"{request.node_id}: weight {request.weight:g} requested"
        )

    @maps_errors
    async def Drain(
        self, request: coordinator_pb2.DrainRequest, context: Any
    ) -> coordinator_pb2.AdminReply:
        topology = await self._known(request.node_id)
        others = [n for n in topology.members() if n.id != request.node_id]
        if not others:
            raise InvalidRequest(
                f"{request.node_id} is the last node in the ring: nowhere to drain"
            )
        await self.runtime.etcd.put(self.runtime.keys.desired_drain + request.node_id, b"1")
        return coordinator_pb2.AdminReply(
            message=f"{request.node_id} will hand its data to {len(others)} nodes and exit"
        )

    @maps_errors
    async def Status(
        self, request: coordinator_pb2.StatusRequest, context: Any
    ) -> coordinator_pb2.ClusterStatus:
        await self.runtime.refresh()
        return self.runtime.status()

    async def _known(self, node_id: str) -> Any:
        topology = (await self.runtime.refresh()).topology
        node = topology.node(node_id)
        if node is None or node.state == NodeState.DOWN:
            known = ", ".join(n.id for n in topology.nodes) or "none"
            raise NotFound(f"no node {node_id!r} in the topology (known: {known})")
        return topology


class TopologyService(topology_pb2_grpc.TopologyServiceServicer):
    """Clients may bootstrap from a coordinator too."""

    def __init__(self, runtime: CoordinatorRuntime) -> None:
        self.runtime = runtime

    @maps_errors
    async def GetTopology(
        self, request: topology_pb2.GetTopologyRequest, context: Any
    ) -> topology_pb2.Topology:
        return self.runtime.snapshot.topology.to_wire()


__all__ = ["CoordinatorService", "TopologyService"]
