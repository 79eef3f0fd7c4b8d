"""The container image: builds offline, runs as non-root, serves and reports health.

Containers here run with ``--network none`` (they talk only to their own loopback,
through ``docker exec``), except the data-volume test, which uses host networking on
one loopback port. Every container started here is removed, also when a test fails.
"""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from collections.abc import Iterator, Sequence
from typing import Any

import pytest

from memcluster.cli.local import wait_for
from memcluster.client import Client
from tests.docker.compose import IMAGE, ROOT

pytestmark = pytest.mark.docker

BASE_IMAGE = "memcluster-base:bookworm"
STANDALONE_ADDRESS = "127.0.0.1:17490"  # the volume test's node (host network, loopback)


def docker(
    *args: str, timeout: float = 120, check: bool = True
) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        ["docker", *args], capture_output=True, text=True, timeout=timeout, check=False
    )
    if check and result.returncode != 0:
        raise AssertionError(f"docker {' '.join(args)} exited {result.returncode}: {result.stderr}")
    return result


def inspect(ref: str, kind: str = "container") -> dict[str, Any]:
    return json.loads(docker(kind, "inspect", ref).stdout)[0]  # type: ignore[no-any-return]


class Containers:
    """Starts containers with unique names; removes them (and named volumes) at the end."""

    def __init__(self) -> None:
        self.names: list[str] = []
        self.volumes: list[str] = []

    def run(self, options: Sequence[str], command: Sequence[str] = ()) -> str:
        """``docker run -d OPTIONS IMAGE COMMAND``; the container's name."""
        name = f"memcluster-test-{uuid.uuid4().hex[:8]}"
        self.names.append(name)
        docker("run", "-d", "--name", name, *options, IMAGE, *command, timeout=60)
        return name

    def volume(self) -> str:
        name = f"memcluster-test-{uuid.uuid4().hex[:8]}"
        docker("volume", "create", name)
        self.volumes.append(name)
        return name

    def close(self) -> None:
        for name in self.names:
            docker("rm", "-f", "-v", name, check=False)
        for volume in self.volumes:
            docker("volume", "rm", "-f", volume, check=False)


@pytest.fixture
def containers(docker_ready: None) -> Iterator[Containers]:
    made = Containers()
    try:
        yield made
    finally:
        made.close()


def health(name: str) -> str:
    return str(inspect(name)["State"].get("Health", {}).get("Status", "none"))


def logs(name: str) -> str:
    result = docker("logs", name, check=False)
    return result.stdout + result.stderr


def run_once(*args: str, entrypoint: Sequence[str] = ()) -> subprocess.CompletedProcess[str]:
    """``docker run --rm --network none`` the image once, its exit code unchecked."""
    extra = ["--entrypoint", entrypoint[0]] if entrypoint else []
    return docker(
        "run", "--rm", "--network", "none", *extra, IMAGE, *entrypoint[1:], *args, check=False
    )


def test_image_builds_offline(docker_ready: None) -> None:
    """The Dockerfile builds with no network at all, from the wheelhouse in deploy/wheels."""
    if docker("image", "inspect", BASE_IMAGE, check=False).returncode != 0:
        pytest.fail(f"no base image {BASE_IMAGE}: run scripts/docker_test_env.sh")
    built = subprocess.run(
        [
            "docker",
            "build",
            "--network",
            "none",
            "--build-arg",
            f"BASE={BASE_IMAGE}",
            "-t",
            IMAGE,
            str(ROOT),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        env={**os.environ, "DOCKER_BUILDKIT": "0"},
    )
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]


def test_image_metadata(docker_ready: None) -> None:
    config = inspect(IMAGE, "image")["Config"]
    assert config["User"] == "10001:10001"
    assert config["Entrypoint"] == ["memcluster"]
    assert config["Cmd"][0] == "node"
    assert set(config["ExposedPorts"]) == {"7400/tcp", "7401/tcp", "7500/tcp", "9400/tcp"}
    assert "/data" in config["Volumes"]
    assert "memcluster health" in " ".join(config["Healthcheck"]["Test"])


def test_runs_as_non_root_without_build_tools(docker_ready: None) -> None:
    probe = run_once(
        "-c",
        "id -u; id -g; stat -c %u /data; "
        "for t in pip pip3 gcc cc make; do command -v $t && echo found $t; done; "
        "ls /wheels /src 2>/dev/null && echo found sources; true",
        entrypoint=["sh"],
    )
    assert probe.returncode == 0, probe.stderr
    lines = probe.stdout.split()
    assert lines[:3] == ["10001", "10001", "10001"], probe.stdout
    assert "found" not in probe.stdout, probe.stdout


def test_cli_help_and_bundled_etcd(docker_ready: None) -> None:
    helped = run_once("--help")
    assert helped.returncode == 0, helped.stderr
    for command in ("node", "coordinator", "status", "health"):
        assert command in helped.stdout
    etcd = run_once("--version", entrypoint=["etcd"])
    assert etcd.returncode == 0 and "etcd Version: 3.5" in etcd.stdout, etcd.stdout + etcd.stderr


def test_bad_env_setting_is_a_clear_config_error(docker_ready: None) -> None:
    bad = docker(
        "run", "--rm", "--network", "none",
        "-e", "MEMCLUSTER_MEMORY__TIERS__WARM__COMPRESSION_LEVEL=30",
        IMAGE, check=False,
    )  # fmt: skip
    assert bad.returncode == 2, bad.stdout + bad.stderr
    assert "memory.tiers.warm.compression_level" in bad.stderr
    assert "MEMCLUSTER_MEMORY__TIERS__WARM__COMPRESSION_LEVEL" in bad.stderr


def test_node_container_is_configured_by_env_and_turns_healthy(containers: Containers) -> None:
    name = containers.run([
        "--network", "none", "--health-interval", "1s",
        "-e", "MEMCLUSTER_SERVER__ID=env-node",
        "-e", "MEMCLUSTER_MEMORY__TIERS__HOT__CAPACITY=3MB",
    ])  # fmt: skip
    wait_for(lambda: health(name) == "healthy", 60, f"{name} healthy; log:\n{logs(name)}")
    ready = json.loads(next(line for line in logs(name).splitlines() if '"ready"' in line))
    assert ready["node_id"] == "env-node"
    # A wildcard bind advertises the container's own address (--network none: no IP,
    # so its hostname), never 0.0.0.0, which nobody can dial.
    host = docker("exec", name, "hostname").stdout.strip()
    assert ready["address"] == f"{host}:7400"
    assert ready["frames"] == f"{host}:7401"
    assert ready["cold_path"] == "/data/cold"
    stats = docker("exec", name, "memcluster", "stats", "--json", "-a", "127.0.0.1:7400")
    assert "env-node" in stats.stdout
    data = json.loads(stats.stdout)
    assert data["node_id"] == "env-node"
    metrics = docker(
        "exec", name, "python3", "-c",
        "import urllib.request as u; print(u.urlopen('http://127.0.0.1:9400/metrics').read().decode())",
    )  # fmt: skip
    assert "memcluster_tier_capacity_bytes" in metrics.stdout
    assert 'node="env-node",tier="hot"} 3e+06' in metrics.stdout  # 3MB from the env
    # SIGTERM reaches the node as PID 1: it flushes and exits 0.
    docker("stop", "-t", "30", name, timeout=60)
    assert inspect(name)["State"]["ExitCode"] == 0, logs(name)
    assert '"event": "stopped"' in logs(name)


def test_coordinator_health_address_comes_from_env(containers: Containers) -> None:
    """HEALTHCHECK_ADDRESS points the image's check at a coordinator's port (7500)."""
    name = containers.run(
        [
            "--network", "none", "--health-interval", "1s",
            "-e", "HEALTHCHECK_ADDRESS=127.0.0.1:7500",
            "-e", "MEMCLUSTER_SERVER__ID=env-coordinator",
            "--entrypoint", "sh",
        ],
        [
            "-c",
            "etcd --data-dir /data/etcd --listen-client-urls http://127.0.0.1:2379 "
            "--advertise-client-urls http://127.0.0.1:2379 >/dev/null 2>&1 & "
            "exec memcluster coordinator --config /etc/memcluster/coordinator.yaml",
        ],
    )  # fmt: skip
    wait_for(lambda: health(name) == "healthy", 60, f"{name} healthy; log:\n{logs(name)}")
    checked = docker("exec", name, "memcluster", "status", "-c", "127.0.0.1:7500")
    assert "replication factor" in checked.stdout, checked.stdout + checked.stderr


def test_node_data_survives_container_replacement(containers: Containers) -> None:
    """The cold tier lives in the /data volume: a new container with it serves the old data."""
    volume = containers.volume()
    args = [
        "--network", "host", "-v", f"{volume}:/data",
        "-e", f"MEMCLUSTER_SERVER__LISTEN={STANDALONE_ADDRESS}",
        "-e", "MEMCLUSTER_SERVER__METRICS_LISTEN=",
        "-e", "MEMCLUSTER_SERVER__GRACE_PERIOD=2s",
        "-e", f"HEALTHCHECK_ADDRESS={STANDALONE_ADDRESS}",
    ]  # fmt: skip
    first = containers.run(args)
    data = {f"k{i}".encode(): f"value {i}".encode() * 10 for i in range(500)}
    with Client(STANDALONE_ADDRESS, routing="static") as client:
        wait_for(lambda: _answers(client), 60, f"{first} to serve; log:\n{logs(first)}")
        client.put_many(data)
    docker("stop", "-t", "30", first, timeout=60)  # graceful: hot and warm go to disk
    assert inspect(first)["State"]["ExitCode"] == 0, logs(first)
    docker("rm", first)
    second = containers.run(args)
    with Client(STANDALONE_ADDRESS, routing="static") as client:
        wait_for(lambda: _answers(client), 60, f"{second} to serve; log:\n{logs(second)}")
        tiers = set()
        for key in list(data)[:5]:
            entry = client.get_entry(key)
            assert entry is not None
            tiers.add(entry.tier)
        assert tiers == {"cold"}  # read from disk, before any promotion
        assert client.get_many(list(data)) == data


def _answers(client: Client[bytes]) -> bool:
    try:
        client.get(b"probe")
    except Exception:
        return False
    return True
