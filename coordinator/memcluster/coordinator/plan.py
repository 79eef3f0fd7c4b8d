"""What the next topology should be: pure decisions, no I/O (the leader does the I/O).

Rules, in the order they apply:

1. A ring node whose registration is gone is *suspect*; once it has been gone for
   ``down_after`` it leaves the topology (its replicas are rebuilt from the others).
   Removals apply at once, whatever else is going on.
2. Everything else waits until the current epoch has *settled* (every live node has
   reported its migration done), so that rebalances never overlap:
   - a JOINING node becomes UP;
   - a DRAINING node that has handed everything over leaves the topology;
   - a registered node that is not in the topology joins (JOINING, in the ring);
   - an admin's drain request marks the node DRAINING (out of the ring);
   - the replication factor and weights follow what an admin asked for, and the load
     balancer's weight changes.
Each change produces the next epoch, remembering the previous ring so that nodes know
where data came from.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from memcluster.common.topology import NodeInfo, NodeState, Topology
from memcluster.coordinator.keys import Registration
from memcluster.wire import coordinator_pb2


@dataclass(frozen=True, slots=True)
class Desired:
    """What admins asked for (absent: no opinion)."""

    replication_factor: int | None = None
    weights: Mapping[str, float] = field(default_factory=dict)
    drain: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class Observed:
    """What the leader sees in etcd right now."""

    members: Mapping[str, Registration]
    progress: Mapping[str, coordinator_pb2.MigrationProgress]
    #: node id -> when the leader first saw its registration missing
    missing_since: Mapping[str, float]
    now: float


def settled(topology: Topology, progress: Mapping[str, coordinator_pb2.MigrationProgress]) -> bool:
    """True once every node of the topology finished migrating for its epoch."""
    for node in topology.nodes:
        if node.state == NodeState.DOWN:
            continue
        p = progress.get(node.id)
        if p is None or p.epoch < topology.epoch or not p.done:
            return False
    return True


def next_topology(
    current: Topology,
    observed: Observed,
    desired: Desired,
    down_after: float,
    balancer_weights: Mapping[str, float] | None = None,
) -> tuple[Topology | None, list[str]]:
    """The topology to write next (None: keep the current one) and why, in words."""
    nodes = {n.id: n for n in current.nodes}
    reasons: list[str] = []

    for node_id, since in observed.missing_since.items():
        if node_id in nodes and observed.now - since >= down_after:
            del nodes[node_id]
            reasons.append(f"{node_id} left: no registration for {observed.now - since:.0f}s")

    rf = current.replication_factor
    if not reasons and settled(current, observed.progress):
        for node_id, node in list(nodes.items()):
            if node.state == NodeState.JOINING:
                nodes[node_id] = _with(node, state=NodeState.UP)
                reasons.append(f"{node_id} is up: its data has arrived")
            elif node.state == NodeState.DRAINING:
                del nodes[node_id]
                reasons.append(f"{node_id} drained: it handed its data over")
        if not reasons:
            reasons += _admissions(nodes, observed, desired, balancer_weights or {})
            if desired.replication_factor and desired.replication_factor != rf:
                reasons.append(f"replication factor {rf} -> {desired.replication_factor}")
                rf = desired.replication_factor

    if not reasons:
        return None, []
    ordered = tuple(sorted(nodes.values(), key=lambda n: n.id))
    return (
        current.evolve(
            epoch=current.epoch + 1,
            replication_factor=rf,
            nodes=ordered,
            previous_nodes=current.members(),
            previous_replication_factor=current.replication_factor,
        ),
        reasons,
    )


def _admissions(
    nodes: dict[str, NodeInfo],
    observed: Observed,
    desired: Desired,
    balancer_weights: Mapping[str, float],
) -> list[str]:
    reasons = []
    for node_id, reg in sorted(observed.members.items()):
        if node_id in desired.drain:
            continue
        known = nodes.get(node_id)
        if known is None:
            weight = desired.weights.get(node_id, reg.weight)
            nodes[node_id] = NodeInfo(node_id, reg.address, weight, NodeState.JOINING)
            reasons.append(f"{node_id} joins at {reg.address}")
        elif known.address != reg.address:
            nodes[node_id] = _with(known, address=reg.address)
            reasons.append(f"{node_id} moved to {reg.address}")
    for node_id in sorted(desired.drain):
        node = nodes.get(node_id)
        if node is not None and node.state in (NodeState.UP, NodeState.JOINING):
            nodes[node_id] = _with(node, state=NodeState.DRAINING)
            reasons.append(f"{node_id} drains (admin request)")
    for node_id, node in list(nodes.items()):
        weight = desired.weights.get(node_id, balancer_weights.get(node_id, node.weight))
        if node.state in (NodeState.UP, NodeState.JOINING) and abs(weight - node.weight) > 1e-9:
            nodes[node_id] = _with(node, weight=weight)
            reasons.append(f"{node_id} weight {node.weight:g} -> {weight:g}")
    return reasons


def _with(node: NodeInfo, **changes: object) -> NodeInfo:
    values = {"id": node.id, "address": node.address, "weight": node.weight, "state": node.state}
    values.update(changes)
    return NodeInfo(**values)  # type: ignore[arg-type]
