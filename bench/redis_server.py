"""A private redis-server for the comparisons: our own process, port and directory.

The benchmarks never touch a Redis they did not start: ``RedisServer`` runs
``redis-server`` on 127.0.0.1 with a free port, no persistence (``--save ""``,
``--appendonly no``) and a temporary working directory, and always stops it.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Any

START_TIMEOUT = 10.0  # seconds for the server to answer PING
STOP_TIMEOUT = 10.0  # seconds for it to exit after SHUTDOWN / SIGTERM
_PORT_TRIES = 3  # another process may take the free port before redis-server binds it


def unavailable_reason() -> str | None:
    """Why the Redis comparison cannot run (None when redis-server and redis-py exist)."""
    if shutil.which("redis-server") is None:
        return "redis-server not installed (apt-get install -y redis-server)"
    try:
        import redis  # noqa: F401
    except ImportError:
        return "redis-py not installed (.venv/bin/pip install redis)"
    return None


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class RedisServer:
    """``with RedisServer() as server:`` a running redis-server; ``server.client()`` talks to it."""

    def __init__(self) -> None:
        self.port = 0
        self.version = ""
        self._dir: tempfile.TemporaryDirectory[str] | None = None
        self._process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> RedisServer:
        self._dir = tempfile.TemporaryDirectory(prefix="bench-redis-")
        try:
            self._start(Path(self._dir.name))
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def client(self) -> Any:
        """A redis-py client of this server (loopback only)."""
        import redis

        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=30)

    def stop(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL) and remove its directory; idempotent."""
        self._stop_process()
        if self._dir is not None:
            self._dir.cleanup()
            self._dir = None

    def _start(self, workdir: Path) -> None:
        for _ in range(_PORT_TRIES):
            port = free_port()
            log = workdir / "redis.log"
            # Popen, not a shell: the empty --save argument reaches redis-server intact.
            self._process = subprocess.Popen(
                [
                    "redis-server",
                    "--bind", "127.0.0.1",
                    "--port", str(port),
                    "--save", "",
                    "--appendonly", "no",
                    "--dir", str(workdir),
                    "--logfile", str(log),
                    "--daemonize", "no",
                ],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )  # fmt: skip
            self.port = port
            if self._wait_ready():
                self.version = self.client().info("server")["redis_version"]
                return
            self._stop_process()
        raise RuntimeError(f"redis-server did not start on {_PORT_TRIES} ports; see {log}")

    def _stop_process(self) -> None:
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.terminate()  # redis-server exits cleanly on SIGTERM, saving nothing
            try:
                process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(STOP_TIMEOUT)

    def _wait_ready(self) -> bool:
        import redis

        deadline = time.monotonic() + START_TIMEOUT
        assert self._process is not None
        while time.monotonic() < deadline and self._process.poll() is None:
            try:
                if self.client().ping():
                    return True
            except redis.ConnectionError:
                time.sleep(0.05)
        return False
