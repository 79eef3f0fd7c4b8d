"""Talking to a coordinator: cluster status and admin requests (what `memcluster` uses)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import grpc

from memcluster.common.errors import from_rpc_error
from memcluster.wire import coordinator_pb2, coordinator_pb2_grpc, topology_pb2

_R = TypeVar("_R")


class AdminClient:
    """A synchronous client for one coordinator replica (any replica answers)."""

    def __init__(self, address: str, *, timeout: float = 5.0) -> None:
        self.address = address
        self.timeout = timeout
        self._channel = grpc.insecure_channel(address)
        self._stub = coordinator_pb2_grpc.CoordinatorStub(self._channel)

    def __enter__(self) -> AdminClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the channel."""
        self._channel.close()

    def status(self) -> coordinator_pb2.ClusterStatus:
        """Topology, leader, migration progress and load of every node."""
        return self._call(self._stub.Status, coordinator_pb2.StatusRequest())

    def topology(self) -> topology_pb2.Topology:
        """The current topology."""
        return self._call(self._stub.GetTopology, topology_pb2.GetTopologyRequest())

    def set_replication_factor(self, rf: int) -> str:
        """Ask for ``rf`` replicas per key; returns what the coordinator will do."""
        request = coordinator_pb2.SetReplicationFactorRequest(replication_factor=rf)
        return self._call(self._stub.SetReplicationFactor, request).message

    def set_weight(self, node_id: str, weight: float) -> str:
        """Set a node's ring weight."""
        request = coordinator_pb2.SetWeightRequest(node_id=node_id, weight=weight)
        return self._call(self._stub.SetWeight, request).message

    def drain(self, node_id: str) -> str:
        """Ask a node to hand its data over and leave."""
        return self._call(self._stub.Drain, coordinator_pb2.DrainRequest(node_id=node_id)).message

    def _call(self, method: Callable[..., _R], request: object) -> _R:
        try:
            return method(request, timeout=self.timeout)
        except grpc.RpcError as exc:
            raise from_rpc_error(exc) from exc
