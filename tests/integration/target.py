"""What the integration tests need from a cluster, whoever runs it.

`LocalCluster` (memcluster.cli.local: processes on this machine) provides it; the
docker target (tests/docker) provides the same methods over `docker compose`. The
suite picks one with MEMCLUSTER_TEST_TARGET (``local``, the default, or ``compose``).
Every target starts in the standard shape: 3 nodes (n1..n3), 2 coordinators (c1, c2),
replication factor 2; a fourth node, n4, can be added.
"""

from __future__ import annotations

from typing import Protocol

from memcluster.wire import coordinator_pb2

NODES = 3
COORDINATORS = 2
REPLICATION_FACTOR = 2


class ClusterTarget(Protocol):
    """A running cluster the tests can observe and hurt."""

    def node_addresses(self) -> list[str]:
        """host:port of every running node, as the test process reaches them."""
        ...

    def coordinator_address(self) -> str:
        """host:port of a running coordinator."""
        ...

    def status(self) -> coordinator_pb2.ClusterStatus:
        """The coordinator's view of the cluster."""
        ...

    def wait_settled(
        self, timeout: float = 60.0, *, nodes: int | None = None, required: list[str] | None = None
    ) -> coordinator_pb2.ClusterStatus:
        """Wait until every topology node is UP and done migrating."""
        ...

    def add_node(self, name: str, *, wait: bool = True, timeout: float = 60.0) -> object:
        """Start another node and (by default) wait until it is UP."""
        ...

    def kill_node(self, name: str) -> None: ...

    def pause_node(self, name: str) -> None: ...

    def resume_node(self, name: str) -> None: ...

    def wait_node_exit(self, name: str, timeout: float) -> int: ...

    def kill_coordinator(self, name: str) -> None: ...

    def stop_etcd(self) -> None: ...

    def start_etcd(self) -> None: ...

    def stop(self) -> None: ...
