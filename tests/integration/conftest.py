"""Clusters of real processes: embedded etcd, coordinators and nodes on loopback."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from memcluster.cli.local import LocalCluster
from memcluster.wire import peer_pb2, peer_pb2_grpc

pytestmark = pytest.mark.integration

MakeCluster = Callable[..., LocalCluster]


@pytest.fixture
def make_cluster(tmp_path: Path) -> Iterator[MakeCluster]:
    """Start LocalClusters; every process they started is stopped at teardown."""
    made: list[LocalCluster] = []

    def make(**kwargs: Any) -> LocalCluster:
        kwargs.setdefault("down_after", "3s")
        cluster = LocalCluster(tmp_path / f"cluster{len(made)}", **kwargs)
        made.append(cluster)
        return cluster.start(timeout=90)

    try:
        yield make
    finally:
        for cluster in made:
            cluster.stop()


def holders(cluster: LocalCluster, keys: list[bytes]) -> dict[bytes, list[str]]:
    """Which running nodes hold each key (asked directly over the peer service)."""
    found: dict[bytes, list[str]] = {k: [] for k in keys}
    for name, proc in cluster.nodes.items():
        if not proc.alive:
            continue
        with grpc.insecure_channel(proc.address) as channel:
            stub = peer_pb2_grpc.PeerStub(channel)
            for start in range(0, len(keys), 2000):
                reply = stub.Fetch(
                    peer_pb2.FetchRequest(keys=keys[start : start + 2000]), timeout=30
                )
                for item in reply.items:
                    if not item.tombstone:
                        found[item.key].append(name)
    return found
