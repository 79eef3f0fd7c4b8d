"""The cluster topology as every process sees it: an immutable snapshot, swapped whole.

The coordinator leader writes it (to etcd, as the `Topology` protobuf); nodes serve it
to clients; clients route by it. The ring holds the nodes that are JOINING or UP;
DRAINING nodes are leaving (their data is moving away) and DOWN ones are gone.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field, replace

from memcluster.wire import topology_pb2

DEFAULT_PARTITIONS = 1024


class NodeState(enum.StrEnum):
    """Where a node stands in the cluster."""

    JOINING = "joining"  # in the ring, still receiving its share of the data
    UP = "up"
    DRAINING = "draining"  # out of the ring, handing its data over before it exits
    DOWN = "down"  # lease lapsed past the grace period; out of the ring


RING_STATES = frozenset({NodeState.JOINING, NodeState.UP})
_TO_WIRE = {
    NodeState.JOINING: topology_pb2.JOINING,
    NodeState.UP: topology_pb2.UP,
    NodeState.DRAINING: topology_pb2.DRAINING,
    NodeState.DOWN: topology_pb2.DOWN,
}
_FROM_WIRE = {v: k for k, v in _TO_WIRE.items()}


@dataclass(frozen=True, slots=True)
class NodeInfo:
    """One node: its id, the address clients and peers use, its ring weight and state."""

    id: str
    address: str
    weight: float = 1.0
    state: NodeState = NodeState.UP

    def to_wire(self) -> topology_pb2.NodeInfo:
        """The protobuf form."""
        return topology_pb2.NodeInfo(
            id=self.id, address=self.address, weight=self.weight, state=_TO_WIRE[self.state]
        )

    @classmethod
    def from_wire(cls, msg: topology_pb2.NodeInfo) -> NodeInfo:
        """From the protobuf form (unknown states read as DOWN)."""
        return cls(msg.id, msg.address, msg.weight, _FROM_WIRE.get(msg.state, NodeState.DOWN))


@dataclass(frozen=True, slots=True)
class Topology:
    """One epoch of the cluster's layout."""

    epoch: int
    replication_factor: int
    nodes: tuple[NodeInfo, ...]
    partitions: int = DEFAULT_PARTITIONS
    previous_nodes: tuple[NodeInfo, ...] = ()
    previous_replication_factor: int = 0
    cluster: str = ""
    _by_id: dict[str, NodeInfo] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        self._by_id.update({n.id: n for n in self.nodes})

    def node(self, node_id: str) -> NodeInfo | None:
        """The node with ``node_id``, if it is in this topology."""
        return self._by_id.get(node_id)

    def members(self) -> tuple[NodeInfo, ...]:
        """The ring: nodes that own partitions (JOINING and UP)."""
        return tuple(n for n in self.nodes if n.state in RING_STATES)

    def address_of(self, node_id: str) -> str | None:
        """The address of a node known to this topology or the previous one."""
        node = self._by_id.get(node_id)
        if node is not None:
            return node.address
        for prev in self.previous_nodes:
            if prev.id == node_id:
                return prev.address
        return None

    def evolve(self, **changes: object) -> Topology:
        """A copy with ``changes`` (the caller bumps the epoch)."""
        return replace(self, _by_id={}, **changes)  # type: ignore[arg-type]

    def to_wire(self) -> topology_pb2.Topology:
        """The protobuf form."""
        return topology_pb2.Topology(
            epoch=self.epoch,
            replication_factor=self.replication_factor,
            nodes=[n.to_wire() for n in self.nodes],
            partitions=self.partitions,
            previous_nodes=[n.to_wire() for n in self.previous_nodes],
            previous_replication_factor=self.previous_replication_factor,
            cluster=self.cluster,
        )

    @classmethod
    def from_wire(cls, msg: topology_pb2.Topology) -> Topology:
        """From the protobuf form."""
        return cls(
            epoch=msg.epoch,
            replication_factor=msg.replication_factor or 1,
            nodes=tuple(NodeInfo.from_wire(n) for n in msg.nodes),
            partitions=msg.partitions or DEFAULT_PARTITIONS,
            previous_nodes=tuple(NodeInfo.from_wire(n) for n in msg.previous_nodes),
            previous_replication_factor=msg.previous_replication_factor,
            cluster=msg.cluster,
        )

    def to_bytes(self) -> bytes:
        """Serialized protobuf (what etcd stores)."""
        return self.to_wire().SerializeToString()

    @classmethod
    def from_bytes(cls, data: bytes) -> Topology:
        """From serialized protobuf."""
        msg = topology_pb2.Topology()
        msg.ParseFromString(data)
        return cls.from_wire(msg)
