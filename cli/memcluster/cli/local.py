"""A whole cluster on one machine: embedded etcd, coordinators and nodes as real processes.

`memcluster local` runs one for a person to try; the demo, the integration tests and
the benchmarks use the same class. Everything lives under one directory: etcd's data,
each process's config and log, each node's cold tier.
"""

from __future__ import annotations

import copy
import signal
import socket
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import yaml

from memcluster.cli.procs import ManagedProcess
from memcluster.client.admin import AdminClient
from memcluster.coordinator.embedded import EmbeddedEtcd
from memcluster.wire import coordinator_pb2, topology_pb2

NODE_DEFAULTS: dict[str, Any] = {
    "server": {"listen": "127.0.0.1:0", "metrics_listen": "127.0.0.1:0", "grace_period": "5s"},
    "memory": {
        "tiers": {
            "hot": {"capacity": "8MB", "ttl": "1h", "cleanup_interval": "1s"},
            "warm": {"capacity": "16MB", "ttl": "1d"},
            "cold": {"capacity": "1GB"},
        },
        "pressure": {"enabled": False},
    },
    "cluster": {"lease_ttl": "2s", "load_interval": "1s"},
}


def merged(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """``base`` with ``overrides`` applied; dotted keys ("memory.tiers.hot.capacity") allowed."""
    out = copy.deepcopy(base)
    for dotted, value in overrides.items():
        node = out
        *parents, leaf = dotted.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        if isinstance(value, dict) and isinstance(node.get(leaf), dict):
            node[leaf] = merged(node[leaf], value)
        else:
            node[leaf] = value
    return out


def port_free(port: int) -> bool:
    """True when nothing listens on 127.0.0.1:``port``."""
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def is_settled(
    status: coordinator_pb2.ClusterStatus,
    *,
    nodes: int | None = None,
    required: Sequence[str] = (),
) -> bool:
    """True when ``status`` shows every topology node UP and done migrating for its epoch
    (with at least ``nodes`` nodes, ``required`` among them)."""
    topology = status.topology
    if topology.epoch == 0:
        return False
    ids = {n.id for n in topology.nodes}
    if nodes is not None and len(ids) < nodes:
        return False
    if not set(required) <= ids:
        return False
    if any(n.state != topology_pb2.UP for n in topology.nodes):
        return False
    done = {m.node_id for m in status.migrations if m.epoch >= topology.epoch and m.done}
    return ids <= done


def wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll ``predicate`` every 0.1 s; TimeoutError naming ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.1)


class ObservedCluster:
    """Status and settling of a cluster, through whichever coordinator is running."""

    def coordinator_address(self) -> str:
        """A running coordinator's address."""
        raise NotImplementedError

    def status(self) -> coordinator_pb2.ClusterStatus:
        """The coordinator's view of the cluster."""
        with AdminClient(self.coordinator_address()) as admin:
            return admin.status()

    def settled(self, *, nodes: int | None = None, required: Sequence[str] = ()) -> bool:
        """True when every topology node is UP and has finished migrating for the epoch."""
        try:
            status = self.status()
        except Exception:
            return False
        return is_settled(status, nodes=nodes, required=required)

    def wait_settled(
        self, timeout: float = 60.0, *, nodes: int | None = None, required: list[str] | None = None
    ) -> coordinator_pb2.ClusterStatus:
        """Wait until the cluster has settled (see ``settled``)."""
        wait_for(
            lambda: self.settled(nodes=nodes, required=required or []),
            timeout,
            f"{type(self).__name__} to settle",
        )
        return self.status()


class LocalCluster(ObservedCluster):
    """etcd + coordinators + nodes under ``root``; ``stop()`` (or the context) ends them all."""

    def __init__(
        self,
        root: Path,
        *,
        nodes: int = 3,
        coordinators: int = 1,
        replication_factor: int = 2,
        partitions: int = 256,
        down_after: str = "5s",
        node_overrides: dict[str, Any] | None = None,
        coordinator_overrides: dict[str, Any] | None = None,
        well_known_ports: bool = False,
    ) -> None:
        self.root = root
        #: Listen on the default ports (coordinator 7500, nodes 7401, 7402, ...) where
        #: free, so that `memcluster status` and friends work without addresses.
        self.well_known_ports = well_known_ports
        self.initial_nodes = nodes
        self.initial_coordinators = coordinators
        self.name = "local"
        self.etcd = EmbeddedEtcd(root / "etcd", name=self.name)
        self.coordinator_config = merged(
            {
                "server": {"listen": "127.0.0.1:0", "grace_period": "2s"},
                "cluster": {"name": self.name, "lease_ttl": "2s"},
                "topology": {
                    "replication_factor": replication_factor,
                    "partitions": partitions,
                    "down_after": down_after,
                },
                "balancing": {"check_interval": "2s", "cooldown": "10s"},
            },
            coordinator_overrides or {},
        )
        self.node_config = merged(NODE_DEFAULTS, node_overrides or {})
        self.coordinators: dict[str, ManagedProcess] = {}
        self.nodes: dict[str, ManagedProcess] = {}

    def __enter__(self) -> LocalCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- lifecycle -----------------------------------------------------------

    def start(self, timeout: float = 60.0) -> LocalCluster:
        """Start etcd, the coordinators and the nodes; return once every node is UP."""
        try:
            self.etcd.start()
            for i in range(self.initial_coordinators):
                self.add_coordinator(f"c{i + 1}")
            for i in range(self.initial_nodes):
                self.add_node(f"n{i + 1}", wait=False)
            self.wait_settled(timeout, nodes=self.initial_nodes)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop nodes, then coordinators, then etcd (SIGTERM, SIGKILL past a timeout)."""
        for proc in [*self.nodes.values(), *self.coordinators.values()]:
            try:
                proc.stop(timeout=15)
            except Exception:
                proc.kill()
        self.etcd.stop()

    def add_coordinator(self, name: str) -> ManagedProcess:
        """Start a coordinator replica."""
        directory = self.root / name
        directory.mkdir(parents=True, exist_ok=True)
        config = merged(
            self.coordinator_config,
            {
                "server.id": name,
                "server.listen": self._listen(7500 + len(self.coordinators)),
                "cluster.etcd": self.etcd.endpoint,
            },
        )
        path = directory / "coordinator.yaml"
        path.write_text(yaml.safe_dump(config))
        argv = ManagedProcess.memcluster("coordinator", "--config", str(path))
        proc = ManagedProcess(argv, directory / "coordinator.log").start()
        self.coordinators[name] = proc
        return proc

    def write_node_config(self, name: str, **overrides: Any) -> Path:
        """The config file of node ``name`` (cold tier under its own directory)."""
        directory = self.root / name
        directory.mkdir(parents=True, exist_ok=True)
        config = merged(
            self.node_config,
            {
                "server.id": name,
                "server.listen": self._listen(7401 + len(self.nodes)),
                "cluster.name": self.name,
                "cluster.etcd": self.etcd.endpoint,
                "memory.tiers.cold.path": str(directory / "cold"),
                **overrides,
            },
        )
        path = directory / "node.yaml"
        path.write_text(yaml.safe_dump(config))
        return path

    def add_node(
        self, name: str, *, wait: bool = True, timeout: float = 60.0, **overrides: Any
    ) -> ManagedProcess:
        """Start node ``name`` (again, if it ran before: same config and data)."""
        path = self.root / name / "node.yaml"
        if overrides or not path.exists():
            path = self.write_node_config(name, **overrides)
        proc = ManagedProcess.node(path).start()
        self.nodes[name] = proc
        if wait:
            self.wait_settled(timeout, required=[name])
        return proc

    def _listen(self, port: int) -> str:
        if self.well_known_ports and port_free(port):
            return f"127.0.0.1:{port}"
        return "127.0.0.1:0"

    # -- faults (the integration tests' vocabulary; the docker target mirrors it) ----

    def kill_node(self, name: str) -> None:
        """SIGKILL a node: no shutdown code runs."""
        self.nodes[name].kill()

    def pause_node(self, name: str) -> None:
        """SIGSTOP a node: a hung process, not a dead one."""
        self.nodes[name].signal(signal.SIGSTOP)

    def resume_node(self, name: str) -> None:
        """SIGCONT a paused node."""
        self.nodes[name].signal(signal.SIGCONT)

    def wait_node_exit(self, name: str, timeout: float) -> int:
        """Wait for a node to exit by itself (after a drain); returns its exit code."""
        return self.nodes[name].wait(timeout)

    def kill_coordinator(self, name: str) -> None:
        """SIGKILL a coordinator replica."""
        self.coordinators[name].kill()

    def stop_etcd(self) -> None:
        """Stop etcd (its data stays)."""
        self.etcd.stop()

    def start_etcd(self) -> None:
        """Start etcd again on the same port and data."""
        self.etcd.start()

    # -- observation ---------------------------------------------------------

    def coordinator_address(self) -> str:
        """A live coordinator's address."""
        for proc in self.coordinators.values():
            if proc.alive:
                return proc.address
        raise RuntimeError("no coordinator is running")

    def node_addresses(self) -> list[str]:
        """Addresses of the node processes that run."""
        return [p.address for p in self.nodes.values() if p.alive]
