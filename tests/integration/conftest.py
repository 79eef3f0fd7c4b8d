"""Clusters for the integration tests: real etcd, coordinators and nodes.

MEMCLUSTER_TEST_TARGET picks who runs them: ``local`` (default: processes on this
machine, loopback only) or ``compose`` (containers, see tests/docker).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest

from memcluster.cli.local import LocalCluster
from memcluster.wire import peer_pb2, peer_pb2_grpc
from tests.integration.target import COORDINATORS, NODES, REPLICATION_FACTOR, ClusterTarget

pytestmark = pytest.mark.integration

MakeCluster = Callable[[], ClusterTarget]


def _local(root: Path) -> ClusterTarget:
    cluster = LocalCluster(
        root,
        nodes=NODES,
        coordinators=COORDINATORS,
        replication_factor=REPLICATION_FACTOR,
        down_after="3s",
    )
    return cluster.start(timeout=90)


@pytest.fixture
def make_cluster(tmp_path: Path) -> Iterator[MakeCluster]:
    """Start a cluster in the standard shape; everything it started is stopped at teardown."""
    made: list[ClusterTarget] = []
    target = os.environ.get("MEMCLUSTER_TEST_TARGET", "local")

    def make() -> ClusterTarget:
        if target == "compose":
            from tests.docker.compose import ComposeCluster

            cluster: ClusterTarget = ComposeCluster.start_fresh()
        elif target == "local":
            cluster = _local(tmp_path / f"cluster{len(made)}")
        else:
            raise ValueError(f"MEMCLUSTER_TEST_TARGET={target!r}: expected local or compose")
        made.append(cluster)
        return cluster

    try:
        yield make
    finally:
        for cluster in made:
            cluster.stop()


def holders(cluster: ClusterTarget, keys: list[bytes]) -> dict[bytes, list[str]]:
    """Which running nodes hold each key (asked directly over the peer service)."""
    found: dict[bytes, list[str]] = {k: [] for k in keys}
    for address in cluster.node_addresses():
        with grpc.insecure_channel(address) as channel:
            stub = peer_pb2_grpc.PeerStub(channel)
            for start in range(0, len(keys), 2000):
                chunk = keys[start : start + 2000]
                reply = stub.Fetch(peer_pb2.FetchRequest(keys=chunk), timeout=30)
                for item in reply.items:
                    if not item.tombstone:
                        found[item.key].append(address)
    return found
