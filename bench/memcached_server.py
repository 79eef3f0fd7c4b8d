"""A private memcached for the comparisons: our own process and port, always stopped.

``MemcachedServer`` runs ``memcached -l 127.0.0.1 -p PORT -m 4096 -U 0`` (TCP only,
4 GB of item memory, no UDP) on a free port and stops it at the end, on errors and
on Ctrl-C too; the benchmarks never connect to a memcached they did not start.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from types import TracebackType
from typing import Any

from bench.redis_server import free_port

START_TIMEOUT = 10.0  # seconds for the server to answer "version"
STOP_TIMEOUT = 10.0  # seconds for it to exit after SIGTERM
MEMORY_MB = 4096  # -m: item memory; larger than any dataset the benchmarks load
_PORT_TRIES = 3  # another process may take the free port before memcached binds it


def unavailable_reason() -> str | None:
    """Why the memcached comparison cannot run (None when memcached and pymemcache exist)."""
    if shutil.which("memcached") is None:
        return "memcached not installed (apt-get install -y memcached)"
    try:
        import pymemcache  # type: ignore[import-untyped]  # noqa: F401
    except ImportError:
        return "pymemcache not installed (.venv/bin/pip install pymemcache)"
    return None


class MemcachedServer:
    """``with MemcachedServer() as server:`` a running memcached; ``server.client()`` uses it."""

    def __init__(self) -> None:
        self.port = 0
        self.version = ""
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        """The server's process id (for its RSS)."""
        assert self._process is not None
        return self._process.pid

    def __enter__(self) -> MemcachedServer:
        try:
            self._start()
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
        """A pymemcache client of this server (loopback only) that waits for every reply."""
        from pymemcache.client.base import Client  # type: ignore[import-untyped]

        return Client(
            ("127.0.0.1", self.port), connect_timeout=5, timeout=30, default_noreply=False
        )

    def stats(self) -> dict[str, Any]:
        """The server's ``stats`` (names and values decoded)."""
        client = self.client()
        try:
            raw = client.stats()
        finally:
            client.close()
        return {k.decode(): v.decode() if isinstance(v, bytes) else v for k, v in raw.items()}

    def stop(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL); idempotent."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(STOP_TIMEOUT)

    def _start(self) -> None:
        for _ in range(_PORT_TRIES):
            self.port = free_port()
            argv = ["memcached", "-l", "127.0.0.1", "-p", str(self.port), "-m", str(MEMORY_MB)]
            argv += ["-U", "0"]
            if os.geteuid() == 0:
                argv += ["-u", "root"]  # memcached refuses to run as root unless told to
            self._process = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
            )
            if self._wait_ready():
                self.version = self.stats()["version"]
                return
            self.stop()
        raise RuntimeError(f"memcached did not start on {_PORT_TRIES} ports")

    def _wait_ready(self) -> bool:
        deadline = time.monotonic() + START_TIMEOUT
        assert self._process is not None
        while time.monotonic() < deadline and self._process.poll() is None:
            client = self.client()
            try:
                client.version()
                return True
            except OSError:
                time.sleep(0.05)
            finally:
                client.close()
        return False
