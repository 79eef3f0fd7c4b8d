"""The cluster router: keys to replicas by the topology's placement, swapped whole.

Like Olric's client, it holds one immutable routing snapshot (the topology, its
placement and each partition's replica addresses, worked out once per epoch) and
replaces it in one assignment, so concurrent readers see the old table or the new
one, never a mix. The core fetches topologies; this class only decides.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

from memcluster.common.errors import MemclusterError
from memcluster.common.placement import Placement, partition_of, partitions_of
from memcluster.common.topology import NodeState, Topology


def parse_addresses(address: str | Sequence[str]) -> tuple[str, ...]:
    """Node addresses from one ``host:port``, a comma-separated list, or a sequence."""
    parts = address.split(",") if isinstance(address, str) else list(address)
    if not all(isinstance(a, str) for a in parts):
        raise ValueError(f"node addresses must be strings (host:port), got {address!r}")
    addresses = tuple(dict.fromkeys(a.strip() for a in parts))
    if not addresses or not all(addresses):
        raise ValueError(f"node addresses (host:port) are required, got {address!r}")
    return addresses


@dataclass(frozen=True, slots=True)
class _Snapshot:
    topology: Topology
    #: Each partition's replica addresses in the order requests try them: the
    #: placement's order, JOINING replicas last (see ``RingRouter``); empty when the
    #: ring is.
    routes: tuple[tuple[str, ...], ...]
    #: Addresses of the ring members (JOINING or UP).
    live: tuple[str, ...]

    @classmethod
    def of(cls, topology: Topology) -> _Snapshot:
        placement = Placement.current(topology)
        address = {n.id: n.address for n in topology.nodes}
        joining = {n.address for n in topology.nodes if n.state == NodeState.JOINING}
        routes = tuple(
            tuple(address[i] for i in placement.owners(p)) for p in range(topology.partitions)
        )
        if joining:
            # A stable sort: the others keep their order, the joining ones go last.
            routes = tuple(tuple(sorted(route, key=joining.__contains__)) for route in routes)
        return cls(topology, routes, tuple(n.address for n in topology.members()))


class RingRouter:
    """Routes each key to its partition's replicas in the newest topology seen."""

    def __init__(self, bootstrap: Sequence[str]) -> None:
        if not bootstrap or not all(bootstrap):
            raise ValueError("at least one node address (host:port) is required to bootstrap")
        self.bootstrap = tuple(dict.fromkeys(bootstrap))
        self._snapshot: _Snapshot | None = None
        self._turn = itertools.count()

    @property
    def epoch(self) -> int:
        """The routing topology's epoch (0 before the first)."""
        snapshot = self._snapshot
        return 0 if snapshot is None else snapshot.topology.epoch

    @property
    def topology(self) -> Topology | None:
        """The topology keys are routed by (None until bootstrapped)."""
        snapshot = self._snapshot
        return None if snapshot is None else snapshot.topology

    def replicas(self, key: bytes) -> Sequence[str]:
        """``key``'s replica addresses, primary first (the bootstrap list while no ring).

        Replicas still JOINING come after the others. A joining node is receiving its
        data: a read there would have to fetch a key it lacks from the previous owners
        first (as Cassandra sends no reads to a bootstrapping node), and a write it
        coordinated would wait for its event loop twice, on the way in and again for
        the other replicas' acks, where as a replica it is waited for once. Every
        replica gets each write either way.
        """
        snapshot = self._snapshot
        if snapshot is not None:
            route = snapshot.routes[partition_of(key, snapshot.topology.partitions)]
            if route:
                return route
        return self.bootstrap

    def replicas_many(self, keys: Sequence[bytes]) -> list[Sequence[str]]:
        """``replicas`` of each key, in one pass over the batch."""
        snapshot = self._snapshot
        if snapshot is None:
            return [self.bootstrap] * len(keys)
        routes, bootstrap = snapshot.routes, self.bootstrap
        return [routes[p] or bootstrap for p in partitions_of(keys, snapshot.topology.partitions)]

    def any_address(self) -> str:
        """The ring members' addresses in turn (the bootstrap list's while none is known)."""
        pool = self._live() or self.bootstrap
        return pool[next(self._turn) % len(pool)]

    def sources(self) -> Sequence[str]:
        """Ring members (starting at the next in turn), then the bootstrap addresses."""
        live = self._live()
        start = next(self._turn) % len(live) if live else 0
        return tuple(dict.fromkeys((*live[start:], *live[:start], *self.bootstrap)))

    def refresh(self, error: MemclusterError) -> bool:
        """Always ask for a topology: the node that refused knows a newer one."""
        return True

    def update(self, topology: Topology) -> bool:
        """Route by ``topology`` when it is newer (or of another cluster); True if taken."""
        current = self._snapshot
        # A cluster rebuilt from scratch starts its epochs over: take its first topology.
        if current is not None:
            same_cluster = topology.cluster == current.topology.cluster
            if same_cluster and topology.epoch <= current.topology.epoch:
                return False
        self._snapshot = _Snapshot.of(topology)
        return True

    def _live(self) -> tuple[str, ...]:
        snapshot = self._snapshot
        return () if snapshot is None else snapshot.live
