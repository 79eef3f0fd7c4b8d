"""The integration tests' cluster target over Docker Compose (deploy/docker-compose.yml).

:class:`ComposeCluster` provides what tests/integration/target.py asks for, with the
containers of one compose project: ``etcd``, coordinators ``c1``/``c2``, nodes
``n1``..``n3`` and, under the ``extra`` profile, ``n4``. Every service runs with host
networking on its own loopback port (see the compose file), so the addresses the nodes
advertise are the ones this process, the client and the CLI use: nothing here leaves
the machine's loopback. Faults map onto Docker: SIGKILL is ``docker kill``, SIGSTOP is
``docker pause`` (the cgroup freezer), a restart of etcd is ``docker stop``/``start``.

The image (``memcluster:test`` unless MEMCLUSTER_IMAGE says otherwise) must exist:
``scripts/docker_test_env.sh`` installs Docker and builds it offline.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import urllib.request
from collections.abc import Sequence
from functools import cache
from pathlib import Path
from typing import Any

from memcluster.cli.local import ObservedCluster, wait_for

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "deploy" / "docker-compose.yml"
ENV_FILE = Path(__file__).resolve().parent / "compose.env"
PROJECT = os.environ.get("MEMCLUSTER_COMPOSE_PROJECT", "memcluster-test")
IMAGE = os.environ.get("MEMCLUSTER_IMAGE", "memcluster:test")
ETCD_HEALTH_URL = "http://127.0.0.1:12379/health"
INITIAL_NODES = ("n1", "n2", "n3")
COORDINATORS = ("c1", "c2")
SETUP_HINT = "set it up with: sudo scripts/docker_test_env.sh"
COMMAND_TIMEOUT = 180.0
# Loopback ports of the compose file's services (etcd, coordinators, nodes, node metrics).
PORTS = (12379, 12380, 17501, 17502, *range(17401, 17405), *range(19401, 19405))


class DockerUnavailable(RuntimeError):
    """Docker (engine, CLI or compose) cannot be used here; the message says what to do."""


def _run(argv: Sequence[str], timeout: float = COMMAND_TIMEOUT, check: bool = True) -> str:
    """Run a command, return its stdout; RuntimeError with its stderr when it fails."""
    env = {**os.environ, "MC_IMAGE": IMAGE}
    try:
        result = subprocess.run(
            list(argv), capture_output=True, text=True, timeout=timeout, env=env, check=False
        )
    except FileNotFoundError as exc:
        raise DockerUnavailable(f"{argv[0]} is not installed; {SETUP_HINT}") from exc
    if check and result.returncode != 0:
        raise RuntimeError(
            f"{' '.join(argv)} exited {result.returncode}:\n{result.stderr.strip()[-2000:]}"
        )
    return result.stdout


@cache
def compose_command() -> tuple[str, ...]:
    """``docker compose`` (v2 plugin) when it works, else ``docker-compose`` (v1)."""
    if shutil.which("docker"):
        probe = subprocess.run(
            ["docker", "compose", "version"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        if probe.returncode == 0:
            return ("docker", "compose")
    if shutil.which("docker-compose"):
        return ("docker-compose",)
    raise DockerUnavailable(
        f"neither `docker compose` nor `docker-compose` is installed; {SETUP_HINT}"
    )


def check_docker(image: str = IMAGE) -> None:
    """DockerUnavailable, saying what is missing, unless docker, compose and the image are here."""
    if shutil.which("docker") is None:
        raise DockerUnavailable(f"the docker CLI is not installed; {SETUP_HINT}")
    info = subprocess.run(
        ["docker", "info", "--format", "{{.ServerVersion}}"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    if info.returncode != 0:
        raise DockerUnavailable(
            f"the docker engine does not answer ({info.stderr.strip()[:300]}); {SETUP_HINT}"
        )
    compose_command()
    found = subprocess.run(
        ["docker", "image", "inspect", image], capture_output=True, timeout=30, check=False
    )
    if found.returncode != 0:
        raise DockerUnavailable(f"no image {image}; {SETUP_HINT}")


def _in_use(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1.0)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def etcd_healthy() -> bool:
    """True when the compose project's etcd answers /health with a leader."""
    # No proxy: an http_proxy from the environment must not see loopback checks.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(ETCD_HEALTH_URL, timeout=1.0) as response:
            return bool(json.loads(response.read()).get("health") == "true")
    except (OSError, ValueError):
        return False


class ComposeCluster(ObservedCluster):
    """One compose project of deploy/docker-compose.yml; ``stop()`` removes it with its volumes."""

    def __init__(self, project: str = PROJECT) -> None:
        self.project = project
        self.containers: dict[str, str] = {}  # service -> container id, once created

    # -- lifecycle -----------------------------------------------------------

    @classmethod
    def start_fresh(cls, timeout: float = 180.0) -> ComposeCluster:
        """Remove what a previous run left, start the standard shape, wait until it settles."""
        check_docker()
        cluster = cls()
        cluster.down()
        busy = [port for port in PORTS if _in_use(port)]
        if busy:
            raise RuntimeError(
                f"127.0.0.1 ports {busy} are taken: deploy/docker-compose.yml needs them "
                "(another compose project of that file, or a local process, still runs)"
            )
        try:
            cluster.compose("up", "-d", "--no-build", timeout=timeout)
            for service in ("etcd", *COORDINATORS, *INITIAL_NODES):
                cluster._remember(service)
            cluster.wait_settled(timeout, nodes=len(INITIAL_NODES))
        except BaseException:
            cluster.dump_logs()
            cluster.stop()
            raise
        return cluster

    def compose(self, *args: str, extra: bool = False, timeout: float = COMMAND_TIMEOUT) -> str:
        """Run a compose command on this project; ``extra``: with the `extra` profile (n4)."""
        argv = [
            *compose_command(),
            *("-f", str(COMPOSE_FILE), "--env-file", str(ENV_FILE), "-p", self.project),
            *(("--profile", "extra") if extra else ()),
            *args,
        ]
        return _run(argv, timeout=timeout)

    def down(self) -> None:
        """Remove the project's containers and volumes (paused ones included)."""
        ids = _run(
            [
                "docker",
                "ps",
                "-q",
                "--filter",
                f"label=com.docker.compose.project={self.project}",
                "--filter",
                "status=paused",
            ],
            check=False,
        ).split()
        if ids:
            _run(["docker", "unpause", *ids], check=False)
        self.compose("down", "-v", "--remove-orphans", "-t", "2", extra=True)
        self.containers.clear()

    def stop(self) -> None:
        """Always remove the project (containers and volumes); errors are reported, not raised."""
        try:
            self.down()
        except Exception as exc:  # teardown must go on
            print(f"ComposeCluster.stop: {exc}")

    def dump_logs(self, tail: int = 40) -> None:
        """Print the end of every service's log (for a failed start)."""
        try:
            print(self.compose("logs", "--no-color", f"--tail={tail}", timeout=60))
        except Exception as exc:
            print(f"compose logs: {exc}")

    def _remember(self, service: str) -> str:
        container = self.compose("ps", "-q", service, extra=True).strip()
        if not container:
            raise RuntimeError(f"compose project {self.project}: no container for {service}")
        self.containers[service] = container
        return container

    def _container(self, service: str) -> str:
        try:
            return self.containers[service]
        except KeyError:
            raise KeyError(f"{service} was never started in {self.project}") from None

    def _inspect(self, services: Sequence[str]) -> dict[str, dict[str, Any]]:
        """``docker inspect`` of the services' containers, by service name."""
        known = [s for s in services if s in self.containers]
        if not known:
            return {}
        found = json.loads(_run(["docker", "inspect", *(self.containers[s] for s in known)]))
        by_id = {c["Id"]: c for c in found}
        return {s: by_id[self.containers[s]] for s in known if self.containers[s] in by_id}

    @staticmethod
    def _advertised(container: dict[str, Any]) -> str:
        env = dict(item.split("=", 1) for item in container["Config"]["Env"])
        return str(env["MEMCLUSTER_SERVER__ADVERTISE"])

    def _running(self, services: Sequence[str]) -> list[str]:
        """Advertised addresses of the services whose container runs (paused included)."""
        found = self._inspect(services)
        return [
            self._advertised(found[s])
            for s in services
            if s in found and found[s]["State"]["Running"]
        ]

    def add_node(self, name: str, *, wait: bool = True, timeout: float = 60.0) -> str:
        """Start node ``name`` (n4: the `extra` profile; a stopped node: same container, same
        data) and by default wait until it is UP. Returns the container id."""
        self.compose("up", "-d", "--no-deps", "--no-build", name, extra=True)
        container = self._remember(name)
        if wait:
            self.wait_settled(timeout, required=[name])
        return container

    # -- faults --------------------------------------------------------------

    def kill_node(self, name: str) -> None:
        """SIGKILL the node's process (``docker kill``: no restart, the policy is on-failure)."""
        _run(["docker", "kill", self._container(name)])

    def pause_node(self, name: str) -> None:
        """Freeze the node (``docker pause``): a hung process, not a dead one."""
        _run(["docker", "pause", self._container(name)])

    def resume_node(self, name: str) -> None:
        """Thaw a paused node."""
        _run(["docker", "unpause", self._container(name)])

    def wait_node_exit(self, name: str, timeout: float) -> int:
        """Wait for the node's container to exit by itself; its exit code."""
        try:
            out = _run(["docker", "wait", self._container(name)], timeout=timeout)
        except subprocess.TimeoutExpired:
            raise TimeoutError(
                f"timed out after {timeout:.0f}s waiting for {name} to exit"
            ) from None
        return int(out.strip())

    def kill_coordinator(self, name: str) -> None:
        """SIGKILL a coordinator replica."""
        _run(["docker", "kill", self._container(name)])

    def stop_etcd(self) -> None:
        """Stop etcd (SIGTERM; its data stays in its volume)."""
        _run(["docker", "stop", "-t", "10", self._container("etcd")])

    def start_etcd(self, timeout: float = 30.0) -> None:
        """Start etcd again (same address, same data) and wait until it is healthy."""
        _run(["docker", "start", self._container("etcd")])
        wait_for(etcd_healthy, timeout, "etcd to be healthy again")

    # -- observation ---------------------------------------------------------

    def node_addresses(self) -> list[str]:
        """The advertised addresses of the node containers that run (n1 first)."""
        names = sorted(s for s in self.containers if s not in ("etcd", *COORDINATORS))
        return self._running(names)

    def coordinator_address(self) -> str:
        """A running coordinator's address."""
        running = self._running(COORDINATORS)
        if not running:
            raise RuntimeError("no coordinator is running")
        return running[0]
