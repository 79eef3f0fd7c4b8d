"""The cluster under faults: real etcd, coordinators and nodes, driven by the client and CLI.

Each test waits on conditions with deadlines and stops every process it started.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections import Counter
from typing import Any

import pytest

from memcluster.cli.local import wait_for
from memcluster.client import Client
from memcluster.client.admin import AdminClient
from memcluster.common.errors import MemclusterError
from tests.integration.conftest import MakeCluster, holders
from tests.integration.target import ClusterTarget

pytestmark = pytest.mark.integration


def value(i: int, generation: int = 0) -> bytes:
    return json.dumps({"id": i, "gen": generation, "body": "x" * 40}).encode()


def write_all(client: Client[bytes], count: int, generation: int = 0) -> dict[bytes, bytes]:
    data = {f"key:{i}".encode(): value(i, generation) for i in range(count)}
    client.put_many(data)
    return data


def replicas_restored(cluster: ClusterTarget, keys: list[bytes], rf: int) -> bool:
    return all(len(nodes) == rf for nodes in holders(cluster, keys).values())


class Load:
    """Writes and reads in a thread until stopped; records every failure."""

    def __init__(self, cluster: ClusterTarget, known: dict[bytes, bytes]) -> None:
        self.client = Client(cluster.node_addresses(), timeout=5.0)
        self.known = dict(known)
        self.failures: list[str] = []
        self.reads = self.writes = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Load:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(60)
        self.client.close()

    def _run(self) -> None:
        keys = list(self.known)
        i = 0
        deadline = time.monotonic() + 300  # bounded even if nobody stops us
        while not self._stop.is_set() and time.monotonic() < deadline:
            i += 1
            key = keys[(i * 7919) % len(keys)]
            try:
                got = self.client.get(key)
                self.reads += 1
                if got != self.known[key]:
                    self.failures.append(f"read {key!r}: {got!r} != {self.known[key]!r}")
                if i % 4 == 0:
                    new = value(i, generation=i)
                    self.client.put(key, new)
                    self.known[key] = new
                    self.writes += 1
            except MemclusterError as exc:
                self.failures.append(f"{key!r}: {type(exc).__name__}: {exc}")


def test_sigkill_a_node_keeps_acknowledged_writes_and_restores_rf(
    make_cluster: MakeCluster,
) -> None:
    cluster = make_cluster()
    with Client(cluster.node_addresses()) as client:
        data = write_all(client, 10_000)
        cluster.kill_node("n3")
        assert client.get_many(list(data)) == data  # reads fail over to the other replica
        wait_for(
            lambda: "n3" not in {n.id for n in cluster.status().topology.nodes},
            30,
            "the dead node to leave the ring",
        )
        cluster.wait_settled(120)
        keys = list(data)
        wait_for(lambda: replicas_restored(cluster, keys, 2), 60, "every key on 2 live nodes")
        assert client.get_many(keys) == data


def test_add_a_node_under_load_without_failed_reads(make_cluster: MakeCluster) -> None:
    cluster = make_cluster()
    with Client(cluster.node_addresses()) as client:
        data = write_all(client, 8_000)
    with Load(cluster, data) as load:
        wait_for(lambda: load.reads > 200, 60, "the load to run")
        cluster.add_node("n4", wait=True, timeout=180)
        reads_after = load.reads
        wait_for(lambda: load.reads > reads_after + 200, 60, "load after the move")
    assert load.failures == [], load.failures[:5]
    assert load.writes > 0
    with Client(cluster.node_addresses()) as client:
        assert client.get_many(list(load.known)) == load.known
    keys = list(load.known)
    # Old owners drop their copies once the whole cluster has settled.
    wait_for(lambda: replicas_restored(cluster, keys, 2), 60, "every key on exactly 2 nodes")
    per_node = Counter(n for nodes in holders(cluster, list(load.known)).values() for n in nodes)
    ideal = 2 * len(load.known) / 4
    assert len(per_node) == 4
    for node, count in per_node.items():
        assert 0.6 * ideal <= count <= 1.4 * ideal, (node, count, ideal)


def test_drain_hands_everything_over_and_exits(make_cluster: MakeCluster) -> None:
    cluster = make_cluster()
    with Client(cluster.node_addresses()) as client:
        data = write_all(client, 5_000)
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "memcluster.cli.main",
            "admin",
            "-c",
            cluster.coordinator_address(),
            "drain",
            "n2",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "n2" in result.stdout
    assert cluster.wait_node_exit("n2", timeout=120) == 0
    cluster.wait_settled(60)
    assert {n.id for n in cluster.status().topology.nodes} == {"n1", "n3"}
    with Client(cluster.node_addresses()) as client:
        assert client.get_many(list(data)) == data
    assert replicas_restored(cluster, list(data), 2)


def test_sigstop_then_sigcont_converges(make_cluster: MakeCluster) -> None:
    cluster = make_cluster()
    with Client(cluster.node_addresses(), timeout=3.0) as client:
        data = write_all(client, 3_000)
        cluster.pause_node("n2")
        try:
            wait_for(
                lambda: "n2" not in {n.id for n in cluster.status().topology.nodes},
                30,
                "the hung node to leave the ring",
            )
            cluster.wait_settled(60, required=["n1", "n3"])
            # Writes while n2 is frozen: they must win over whatever n2 still holds.
            newer = write_all(client, 3_000, generation=1)
        finally:
            cluster.resume_node("n2")
        wait_for(
            lambda: "n2" in {n.id for n in cluster.status().topology.nodes},
            30,
            "the resumed node to rejoin",
        )
        cluster.wait_settled(120, nodes=3)
        assert client.get_many(list(data)) == newer
        keys = list(newer)
        wait_for(lambda: replicas_restored(cluster, keys, 2), 60, "every key on 2 nodes")


def test_coordinator_leader_failover(make_cluster: MakeCluster) -> None:
    cluster = make_cluster()
    leader = cluster.status().leader_id
    assert leader in ("c1", "c2")
    cluster.kill_coordinator(leader)
    survivor = "c2" if leader == "c1" else "c1"
    started = time.monotonic()
    wait_for(lambda: cluster.status().leader_id == survivor, 15, "a new leader")
    assert time.monotonic() - started < 2 * 2 + 3  # lease ttl 2s, plus detection slack
    cluster.add_node("n4", wait=True, timeout=120)  # topology changes go on
    assert len(cluster.status().topology.nodes) == 4


def test_etcd_restart_keeps_serving_and_nodes_register_again(make_cluster: MakeCluster) -> None:
    cluster = make_cluster()
    epoch = cluster.status().topology.epoch
    with Client(cluster.node_addresses()) as client:
        data = write_all(client, 2_000)
        cluster.stop_etcd()
        # No etcd: nodes and clients go on with the last topology they know.
        more = {f"during:{i}".encode(): value(i) for i in range(500)}
        client.put_many(more)
        assert client.get_many(list(data) + list(more)) == {**data, **more}
        cluster.start_etcd()
        wait_for(lambda: len(_members(cluster)) == 3, 60, "nodes to register again")
        assert cluster.status().topology.epoch == epoch  # nothing moved meanwhile
        cluster.add_node("n4", wait=True, timeout=180)
        assert client.get_many(list(more)) == more


def test_stale_epoch_client_is_redirected(make_cluster: MakeCluster) -> None:
    cluster = make_cluster()
    stale = Client(cluster.node_addresses())
    try:
        data = write_all(stale, 2_000)
        old_epoch = stale.topology().epoch
        cluster.add_node("n4", wait=True, timeout=120)
        assert stale.topology().epoch == old_epoch  # still the cached topology
        assert stale.get_many(list(data)) == data  # NotOwner -> refresh -> retry
        stale.put(b"after-move", b"ok")
        assert stale.get(b"after-move") == b"ok"
        assert stale.topology().epoch > old_epoch
    finally:
        stale.close()


def test_status_and_set_rf_through_the_cli(make_cluster: MakeCluster) -> None:
    cluster = make_cluster()
    with Client(cluster.node_addresses()) as client:
        data = write_all(client, 2_000)

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [
                sys.executable,
                "-m",
                "memcluster.cli.main",
                *args,
                "-c",
                cluster.coordinator_address(),
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    status = cli("status")
    assert status.returncode == 0, status.stderr
    for text in ("epoch", "n1", "n2", "n3", "up", "replication factor 2"):
        assert text in status.stdout
    assert cli("admin", "set-rf", "3").returncode == 0
    wait_for(lambda: cluster.status().topology.replication_factor == 3, 30, "rf 3")
    cluster.wait_settled(120)
    keys = list(data)
    wait_for(lambda: replicas_restored(cluster, keys, 3), 60, "every key on 3 nodes")
    bad = cli("admin", "set-rf", "0")
    assert bad.returncode == 1 and "replication factor" in bad.stderr


def _members(cluster: ClusterTarget) -> set[str]:
    status: Any = cluster.status()
    return {load.node_id for load in status.loads if load.alive}


def test_admin_errors_are_clear(make_cluster: MakeCluster) -> None:
    cluster = make_cluster()
    with AdminClient(cluster.coordinator_address()) as admin:
        with pytest.raises(MemclusterError, match="no node 'ghost'"):
            admin.drain("ghost")
        with pytest.raises(MemclusterError, match="weight"):
            admin.set_weight("n1", -1)
        with pytest.raises(MemclusterError, match="replication factor"):
            admin.set_replication_factor(99)


def test_writes_and_their_replication_travel_on_the_frame_transport(
    make_cluster: MakeCluster,
) -> None:
    cluster = make_cluster()
    with Client(cluster.node_addresses()) as client:
        topology = client.topology()
        assert topology.replication_factor >= 2
        addresses = [n.address for n in topology.nodes]

        def frames_requests() -> float:
            return sum(client.stats(a)["counters"]["frames_requests"] for a in addresses)

        before = frames_requests()
        for i in range(50):
            client.put(f"framed-{i}".encode(), b"v" * 50)
        # Each put: one frame from the client to a replica, one from it to the other.
        assert frames_requests() - before >= 100
