"""deploy/docker-compose.yml: the cluster comes up healthy and the host reaches it.

The client and the CLI on the host use the addresses the nodes advertise
(127.0.0.1:17401..), exactly as containers do; every listener is on loopback.
The integration suite itself runs against the same target with
MEMCLUSTER_TEST_TARGET=compose (tests/integration/test_cluster.py).
"""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request

import psutil
import pytest

from memcluster.cli.local import wait_for
from memcluster.client import Client
from tests.docker.compose import ComposeCluster
from tests.integration.conftest import holders

pytestmark = pytest.mark.docker

NODES = {"n1": "127.0.0.1:17401", "n2": "127.0.0.1:17402", "n3": "127.0.0.1:17403"}
COORDINATORS = {"c1": "127.0.0.1:17501", "c2": "127.0.0.1:17502"}
PORTS = {12379, 12380, 17401, 17402, 17403, 17501, 17502, 19401, 19402, 19403}


def test_topology_advertises_host_reachable_addresses(compose_cluster: ComposeCluster) -> None:
    status = compose_cluster.status()
    assert {n.id: n.address for n in status.topology.nodes} == NODES
    assert status.topology.replication_factor == 2
    assert status.leader_id in COORDINATORS
    assert compose_cluster.node_addresses() == list(NODES.values())
    assert compose_cluster.coordinator_address() in COORDINATORS.values()


def test_status_cli_on_the_host(compose_cluster: ComposeCluster) -> None:
    for address in COORDINATORS.values():
        result = subprocess.run(
            [sys.executable, "-m", "memcluster.cli.main", "status", "-c", address],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert result.returncode == 0, result.stderr
        for text in ("n1", "n2", "n3", "127.0.0.1:17401", "up", "replication factor 2"):
            assert text in result.stdout, result.stdout


def test_client_on_the_host_routes_to_every_node(compose_cluster: ComposeCluster) -> None:
    data = {f"compose:{i}".encode(): f"value {i}".encode() for i in range(3000)}
    with Client("127.0.0.1:17402") as client:  # bootstrap from any one node
        client.put_many(data)
        assert client.get_many(list(data)) == data
        assert client.get(b"compose:7") == b"value 7"
    placed = holders(compose_cluster, list(data))
    assert all(len(nodes) == 2 for nodes in placed.values())  # replicated between containers
    assert {n for nodes in placed.values() for n in nodes} == set(NODES.values())


def test_metrics_on_loopback(compose_cluster: ComposeCluster) -> None:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open("http://127.0.0.1:19401/metrics", timeout=5) as response:
        text = response.read().decode()
    assert "memcluster_tier_items" in text


def test_every_listener_is_on_loopback(compose_cluster: ComposeCluster) -> None:
    listening: set[tuple[str, int]] = set()
    for conn in psutil.net_connections(kind="inet"):
        if conn.status == psutil.CONN_LISTEN and isinstance(conn.laddr, tuple) and conn.laddr:
            ip, port = conn.laddr[0], int(conn.laddr[1])
            if port in PORTS:
                listening.add((str(ip), port))
    assert {port for _, port in listening} == PORTS
    # gRPC binds IPv4 loopback through a dual-stack socket: ::ffff:127.0.0.1.
    assert {ip.removeprefix("::ffff:") for ip, _ in listening} == {"127.0.0.1"}, listening


def test_containers_turn_healthy(compose_cluster: ComposeCluster) -> None:
    def states() -> dict[str, str]:
        found = compose_cluster._inspect(list(compose_cluster.containers))
        return {s: c["State"].get("Health", {}).get("Status", "none") for s, c in found.items()}

    wait_for(lambda: set(states().values()) == {"healthy"}, 90, "every container healthy")
    assert set(states()) == {"etcd", *COORDINATORS, *NODES}


def test_services_run_as_non_root(compose_cluster: ComposeCluster) -> None:
    found = compose_cluster._inspect(list(compose_cluster.containers))
    users = {s: c["Config"]["User"] for s, c in found.items()}
    assert set(users.values()) == {"10001:10001"}, json.dumps(users)
