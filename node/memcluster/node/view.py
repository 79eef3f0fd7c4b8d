"""A node's view of the cluster: the topology it serves under and what it implies.

Swapped whole when a newer topology arrives (from etcd, or fixed for a standalone node).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NoReturn

from memcluster.common.errors import NotOwner
from memcluster.common.placement import Placement, partition_of
from memcluster.common.topology import NodeInfo, NodeState, Topology

CONSISTENCY_ONE = 1
CONSISTENCY_QUORUM = 2
CONSISTENCY_ALL = 3


def standalone(node_id: str, address: str) -> Topology:
    """A cluster of one: this node owns every key."""
    return Topology(1, 1, (NodeInfo(node_id, address, 1.0, NodeState.UP),), partitions=1)


def required_acks(consistency: int, replicas: int) -> int:
    """How many replicas (the coordinating one included) must hold a write or answer a read."""
    if consistency == CONSISTENCY_ONE:
        return 1
    if consistency == CONSISTENCY_ALL:
        return replicas
    return replicas // 2 + 1


class ClusterView:
    """Topology + placement (current and previous) for one node."""

    def __init__(self, node_id: str, topology: Topology) -> None:
        self.node_id = node_id
        self.topology = topology
        self.placement = Placement.current(topology)
        self._mine = self.placement.owned_by(node_id)
        self.previous = Placement.previous(topology)
        #: True from a topology change until every node reports its migration done:
        #: meanwhile a new owner that lacks a key asks the previous owners.
        self.settling = False

    @property
    def epoch(self) -> int:
        """The epoch served under."""
        return self.topology.epoch

    def update(self, topology: Topology) -> bool:
        """Take ``topology`` if it is newer; returns whether it was taken."""
        if topology.epoch <= self.topology.epoch:
            return False
        self.topology = topology
        self.placement = Placement.current(topology)
        self._mine = self.placement.owned_by(self.node_id)
        self.previous = Placement.previous(topology)
        self.settling = self.previous is not None
        return True

    def owners(self, key: bytes) -> tuple[str, ...]:
        """The key's replicas under the current epoch, primary first."""
        return self.placement.replicas(key)

    def check_owner(self, keys: Sequence[bytes]) -> list[tuple[str, ...]]:
        """Owners of each key; NotOwner unless this node holds a replica of every one."""
        owners = self.placement.replicas_many(keys)
        if not self._mine.issuperset(owners):  # one pass in C, no Python step per key
            me = self.node_id
            self._not_owner(next(k for k, r in zip(keys, owners, strict=True) if me not in r))
        return owners

    def check_owner_of(self, key: bytes) -> tuple[str, ...]:
        """``check_owner`` of one key."""
        owners = self.placement.replicas(key)
        if owners not in self._mine:
            self._not_owner(key)
        return owners

    def _not_owner(self, key: bytes) -> NoReturn:
        replicas = self.placement.replicas(key)
        raise NotOwner(
            f"node {self.node_id} does not own key {key[:64]!r} in epoch {self.epoch}"
            f" (owners: {', '.join(replicas) or 'none'}); refresh the topology",
            epoch=self.epoch,
        )

    def previous_owners(self, key: bytes) -> tuple[str, ...]:
        """Other nodes that held the key in the previous epoch, while settling."""
        if not self.settling or self.previous is None:
            return ()
        p = partition_of(key, self.previous.partitions)
        return tuple(n for n in self.previous.owners(p) if n != self.node_id)

    def address(self, node_id: str) -> str | None:
        """A peer's address."""
        return self.topology.address_of(node_id)
