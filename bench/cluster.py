"""Local memcluster clusters for the benchmarks, and what their processes cost.

``local_cluster`` starts a ``LocalCluster`` (embedded etcd, one coordinator, node
processes, all on 127.0.0.1) in a temporary directory, with the coordinator's load
balancer off so that the only topology changes are the ones a benchmark makes. On
exit it SIGKILLs the nodes (a benchmark's data is thrown away, so the graceful flush
to the cold tier would only cost time), then stops the coordinator and etcd, on
errors and on Ctrl-C too.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import grpc
import psutil

from memcluster.cli.local import LocalCluster
from memcluster.wire import peer_pb2, peer_pb2_grpc

START_TIMEOUT = 90.0  # seconds for the cluster to settle after starting
FETCH_CHUNK = 2000  # keys per Peer.Fetch call

#: The tiers the throughput and rebalance benchmarks give each node: small enough that
#: the datasets overflow hot + warm into the cold tier.
SMALL_TIERS = {
    "memory.tiers.hot.capacity": "16MB",
    "memory.tiers.warm.capacity": "32MB",
    "memory.tiers.cold.capacity": "8GB",
}
#: The shipped defaults (config.py, README): what a node gets when nothing is configured.
DEFAULT_TIERS = {
    "memory.tiers.hot.capacity": "256MB",
    "memory.tiers.hot.ttl": "24h",
    "memory.tiers.hot.cleanup_interval": "10s",
    "memory.tiers.warm.capacity": "1GB",
    "memory.tiers.warm.ttl": "7d",
    "memory.tiers.cold.capacity": "10GB",
}


@contextmanager
def local_cluster(
    *,
    nodes: int,
    replication_factor: int,
    tiers: dict[str, str],
    down_after: str = "5s",
) -> Iterator[LocalCluster]:
    """A settled cluster of ``nodes`` nodes; every process is stopped on exit.

    ``tiers`` are node config overrides (dotted keys), usually SMALL_TIERS or DEFAULT_TIERS.
    """
    with tempfile.TemporaryDirectory(prefix="bench-cluster-") as tmp:
        cluster = LocalCluster(
            Path(tmp),
            nodes=nodes,
            replication_factor=replication_factor,
            down_after=down_after,
            node_overrides=dict(tiers),
            coordinator_overrides={"balancing.enabled": False},
        )
        cluster.start(timeout=START_TIMEOUT)  # stops what it started if it fails
        try:
            yield cluster
        finally:
            for name in list(cluster.nodes):
                cluster.kill_node(name)
            cluster.stop()


def node_pids(cluster: LocalCluster) -> list[int]:
    """Process ids of the cluster's running nodes."""
    return [p.proc.pid for p in cluster.nodes.values() if p.alive and p.proc is not None]


def process_memory(pids: list[int]) -> dict[str, int]:
    """Summed RSS of ``pids``, and its anonymous part (RSS minus file-backed pages).

    The file-backed part is mostly the cold tier's memory-mapped LMDB pages, which the
    kernel can drop at will.
    """
    rss = anon = 0
    for pid in pids:
        info = psutil.Process(pid).memory_info()
        rss += info.rss
        anon += info.rss - info.shared
    return {"rss": rss, "rss_anon": anon}


def disk_bytes(cluster: LocalCluster) -> int:
    """Bytes the nodes' cold-tier directories occupy on disk (allocated blocks)."""
    total = 0
    for name in cluster.nodes:
        for directory, _, files in os.walk(cluster.root / name / "cold"):
            for file in files:
                total += os.stat(Path(directory) / file).st_blocks * 512
    return total


def node_ids(cluster: LocalCluster) -> dict[str, str]:
    """Address -> node id of the running nodes."""
    return {p.address: name for name, p in cluster.nodes.items() if p.alive}


def holdings(cluster: LocalCluster, keys: list[bytes]) -> dict[bytes, dict[str, int]]:
    """For each key, the running nodes that hold it (node id -> value bytes).

    Asked directly over each node's peer service (``Peer.Fetch``, which reads without
    touching recency), as the integration tests do.
    """
    found: dict[bytes, dict[str, int]] = {k: {} for k in keys}
    for address, name in node_ids(cluster).items():
        with grpc.insecure_channel(address) as channel:
            stub = peer_pb2_grpc.PeerStub(channel)
            for start in range(0, len(keys), FETCH_CHUNK):
                chunk = keys[start : start + FETCH_CHUNK]
                reply = stub.Fetch(peer_pb2.FetchRequest(keys=chunk), timeout=60)
                for item in reply.items:
                    if not item.tombstone:
                        found[item.key][name] = len(item.value)
    return found


def cluster_config(cluster: LocalCluster) -> dict[str, Any]:
    """The shape of ``cluster`` as the results record it."""
    topology = cluster.coordinator_config["topology"]
    return {
        "nodes": len(cluster.nodes),
        "replication_factor": topology["replication_factor"],
        "partitions": topology["partitions"],
        "down_after": topology["down_after"],
        "lease_ttl": cluster.node_config["cluster"]["lease_ttl"],
        "migration_rate": cluster.node_config["cluster"].get("migration_rate", "8MB (default)"),
        "tiers": cluster.node_config["memory"]["tiers"],
        "load_balancer": "off",
    }
