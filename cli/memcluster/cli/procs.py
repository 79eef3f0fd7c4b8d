"""Child processes that report readiness: how `memcluster local`, the demo and the tests
start nodes (and, for clusters, etcd and coordinators) and stop them again.

A memcluster process prints one JSON line ``{"event": "ready", ...}`` on stdout once
it serves (with the real ports, since it may bind port 0). ``ManagedProcess`` waits
for that line with a deadline, keeps stderr in a log file, and stops the process with
SIGTERM (then SIGKILL past a timeout).
"""

from __future__ import annotations

import json
import os
import selectors
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

START_TIMEOUT = 30.0
STOP_TIMEOUT = 30.0


class ManagedProcess:
    """One child process and what it reported when ready."""

    def __init__(self, argv: Sequence[str], log_path: Path, env: dict[str, str] | None = None):
        self.argv = list(argv)
        self.log_path = log_path
        self.env = env
        self.proc: subprocess.Popen[bytes] | None = None
        self.ready: dict[str, Any] = {}

    @staticmethod
    def memcluster(*args: str) -> list[str]:
        """The argv of a `memcluster` command run by this Python."""
        return [sys.executable, "-m", "memcluster.cli.main", *args]

    @classmethod
    def node(cls, config_path: Path, log_path: Path | None = None) -> ManagedProcess:
        """A `memcluster node` process for ``config_path``."""
        argv = cls.memcluster("node", "--config", str(config_path))
        return cls(argv, log_path or config_path.with_suffix(".log"))

    @property
    def address(self) -> str:
        """The gRPC address the process reported."""
        return str(self.ready["address"])

    @property
    def alive(self) -> bool:
        """True while the process runs."""
        return self.proc is not None and self.proc.poll() is None

    def start(self, timeout: float = START_TIMEOUT) -> ManagedProcess:
        """Start the process and wait for its ready line."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                self.argv,
                stdout=subprocess.PIPE,
                stderr=log,
                env={**(self.env or os.environ), "PYTHONUNBUFFERED": "1"},
                start_new_session=True,  # Ctrl-C in a terminal reaches only our parent
            )
        try:
            self.ready = self.wait_event("ready", timeout)
        except BaseException:
            self.kill()
            raise
        return self

    def wait_event(self, event: str, timeout: float) -> dict[str, Any]:
        """Read stdout until a JSON line with ``"event": event`` (or fail at the deadline)."""
        assert self.proc is not None and self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        buffer = b""
        with selectors.DefaultSelector() as sel:
            sel.register(self.proc.stdout, selectors.EVENT_READ)
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"{self.argv[3:5]} did not report {event!r}; {self.tail()}")
                if not sel.select(left):
                    continue
                chunk = os.read(self.proc.stdout.fileno(), 65536)
                if not chunk:
                    raise RuntimeError(f"process exited before {event!r}; {self.tail()}")
                buffer += chunk
                while b"\n" in buffer:
                    line, buffer = buffer.split(b"\n", 1)
                    try:
                        message = json.loads(line)
                    except ValueError:
                        continue
                    if isinstance(message, dict) and message.get("event") == event:
                        return message

    def tail(self, lines: int = 30) -> str:
        """The end of the process's log, for error messages."""
        if not self.log_path.exists():
            return "no log"
        text = self.log_path.read_text(errors="replace")
        return "log tail:\n" + "\n".join(text.splitlines()[-lines:])

    def signal(self, sig: int) -> None:
        """Send ``sig`` if the process still runs."""
        if self.alive:
            assert self.proc is not None
            self.proc.send_signal(sig)

    def wait(self, timeout: float = STOP_TIMEOUT) -> int:
        """Wait for exit; returns the exit code."""
        assert self.proc is not None
        code = self.proc.wait(timeout)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        return code

    def stop(self, timeout: float = STOP_TIMEOUT) -> int:
        """SIGTERM, then SIGKILL if it has not exited within ``timeout``."""
        if self.proc is None:
            return 0
        self.signal(signal.SIGTERM)
        try:
            return self.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            return self.proc.returncode

    def kill(self) -> None:
        """SIGKILL and reap (no shutdown code runs in the child)."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
