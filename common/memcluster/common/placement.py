"""Where keys live: pure placement math, no I/O, shared by clients, nodes and coordinators.

A key hashes (CRC-32, or only its ``{hash tag}`` as in Redis Cluster, so related keys
can be placed together) into one of a fixed number of partitions. Partitions are
placed on a consistent-hash ring (uhashring) whose nodes get virtual nodes in
proportion to their weight; a partition's replicas are the first RF distinct nodes
clockwise from the partition's point, the first being the primary. Adding or
removing a node moves only about 1/N of the partitions.

Why partitions rather than hashing every key onto the ring: the ring walk happens
once per partition when a topology arrives (not once per request), rebalancing and
migration progress are tracked per partition, and a routing table is a plain list.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence

from uhashring import HashRing

from memcluster.common.topology import NodeInfo, Topology

#: Virtual nodes per unit of weight: 512 keeps partition shares within a few percent.
VNODES_PER_WEIGHT = 512


def hash_slot(key: bytes) -> bytes:
    """The part of ``key`` that is hashed: the content of the first non-empty ``{...}``."""
    start = key.find(b"{")
    if start >= 0:
        end = key.find(b"}", start + 1)
        if end > start + 1:
            return key[start + 1 : end]
    return key


def partition_of(key: bytes, partitions: int) -> int:
    """The partition of ``key``."""
    return zlib.crc32(hash_slot(key)) % partitions


def partitions_of(keys: Sequence[bytes], partitions: int) -> list[int]:
    """``partition_of`` of each key, in one pass (batches: no call per key without braces;
    one search for a brace in all the keys, not one per key: a third of the time)."""
    crc = zlib.crc32
    if b"{" in b"".join(keys):
        return [crc(hash_slot(key)) % partitions for key in keys]
    return [crc(key) % partitions for key in keys]


class Placement:
    """The owners of every partition for one set of ring members."""

    def __init__(
        self, members: Sequence[NodeInfo], replication_factor: int, partitions: int
    ) -> None:
        if partitions < 1:
            raise ValueError("partitions must be >= 1")
        self.partitions = partitions
        self.replication_factor = replication_factor
        self.members = tuple(sorted(members, key=lambda n: n.id))
        if not self.members:
            self._owners: list[tuple[str, ...]] = [()] * partitions
            return
        weighted = {
            n.id: {"vnodes": max(1, round(VNODES_PER_WEIGHT * n.weight))}
            for n in self.members
            if n.weight > 0
        } or {n.id: {"vnodes": 1} for n in self.members}
        ring = HashRing(nodes=weighted)
        size = min(replication_factor, len(weighted))
        self._owners = [
            tuple(d["nodename"] for d in ring.range(f"partition-{p}", size, unique=True))
            for p in range(partitions)
        ]

    @classmethod
    def current(cls, topology: Topology) -> Placement:
        """The placement of a topology's epoch."""
        return cls(topology.members(), topology.replication_factor, topology.partitions)

    @classmethod
    def previous(cls, topology: Topology) -> Placement | None:
        """The placement of the epoch before (None if the topology does not say)."""
        if not topology.previous_nodes:
            return None
        rf = topology.previous_replication_factor or topology.replication_factor
        return cls(topology.previous_nodes, rf, topology.partitions)

    def owners(self, partition: int) -> tuple[str, ...]:
        """Node ids holding ``partition``, primary first."""
        return self._owners[partition]

    def replicas(self, key: bytes) -> tuple[str, ...]:
        """Node ids holding ``key``, primary first."""
        return self._owners[partition_of(key, self.partitions)]

    def replicas_many(self, keys: Sequence[bytes]) -> list[tuple[str, ...]]:
        """``replicas`` of each key, in one pass."""
        table = self._owners
        return [table[p] for p in partitions_of(keys, self.partitions)]

    def owned_by(self, node_id: str) -> frozenset[tuple[str, ...]]:
        """The owner tuples that include ``node_id`` (the ones ``owners`` hands out)."""
        return frozenset(owners for owners in self._owners if node_id in owners)

    def same_owners(self, other: Placement) -> bool:
        """Whether every partition has the same owners (primary first) in ``other``.

        True across an epoch that changes only node states within the ring (a JOINING
        node turning UP): nothing has to move.
        """
        return self.partitions == other.partitions and self._owners == other._owners

    def primary_share(self) -> dict[str, float]:
        """Each member's fraction of primaries (for status and tests)."""
        counts = dict.fromkeys((n.id for n in self.members), 0)
        for owners in self._owners:
            if owners:
                counts[owners[0]] += 1
        return {k: v / self.partitions for k, v in counts.items()}
