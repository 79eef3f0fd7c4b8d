"""Real node processes for component and integration tests.

A node is started as `python -m memcluster.cli.main node` with a config file in a
temporary directory; the harness reads the node's "ready" JSON line (real port
numbers, since nodes bind port 0) from its stdout, with a deadline. Every process
started here is stopped at teardown, also when the test fails.
"""

from __future__ import annotations

import json
import os
import selectors
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

START_TIMEOUT = 30.0
STOP_TIMEOUT = 30.0


def wait_until(
    predicate: Callable[[], bool], timeout: float, what: str, interval: float = 0.05
) -> None:
    """Poll ``predicate`` until it holds; fail with ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


def small_config(data_dir: Path, **overrides: Any) -> dict[str, Any]:
    """A node config with tiny tiers, so that tests see demotion with little data."""
    config: dict[str, Any] = {
        "server": {"listen": "127.0.0.1:0", "metrics_listen": "127.0.0.1:0", "grace_period": "5s"},
        "memory": {
            "tiers": {
                "hot": {"capacity": "64KB", "ttl": "1h", "cleanup_interval": "200ms"},
                "warm": {"capacity": "64KB", "ttl": "1d"},
                "cold": {"capacity": "64MB", "path": str(data_dir / "cold")},
            },
            "pressure": {"enabled": False},
        },
    }
    for dotted, value in overrides.items():
        node = config
        *parents, leaf = dotted.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return config


@dataclass
class NodeProcess:
    """One node process and what it reported when ready."""

    config_path: Path
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None
    ready: dict[str, Any] = field(default_factory=dict)

    @property
    def address(self) -> str:
        return str(self.ready["address"])

    @property
    def metrics(self) -> str:
        return str(self.ready["metrics"])

    def start(self) -> NodeProcess:
        """Start the process and wait for its ready line."""
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "memcluster.cli.main",
                "node",
                "--config",
                str(self.config_path),
            ],
            stdout=subprocess.PIPE,
            stderr=log,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        log.close()
        self.ready = self._read_event("ready", START_TIMEOUT)
        return self

    def _read_event(self, event: str, timeout: float) -> dict[str, Any]:
        assert self.proc is not None and self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        buffer = b""
        with selectors.DefaultSelector() as sel:
            sel.register(self.proc.stdout, selectors.EVENT_READ)
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(
                        f"node did not report {event!r} in {timeout}s; {self.tail()}"
                    )
                if not sel.select(left):
                    continue
                chunk = os.read(self.proc.stdout.fileno(), 65536)
                if not chunk:
                    raise RuntimeError(f"node exited before {event!r}; {self.tail()}")
                buffer += chunk
                while b"\n" in buffer:
                    line, buffer = buffer.split(b"\n", 1)
                    try:
                        message = json.loads(line)
                    except ValueError:
                        continue
                    if message.get("event") == event:
                        return dict(message)

    def tail(self, lines: int = 30) -> str:
        """The end of the node's log, for failure messages."""
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return "log tail:\n" + "\n".join(text.splitlines()[-lines:])

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def wait(self, timeout: float = STOP_TIMEOUT) -> int:
        """Wait for the process to exit; returns its exit code."""
        assert self.proc is not None
        code = self.proc.wait(timeout)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        return code

    def kill9(self) -> None:
        """SIGKILL: no shutdown code runs."""
        self.signal(signal.SIGKILL)
        self.wait()

    def stop(self) -> int:
        """SIGTERM and wait (SIGKILL if it hangs past the timeout)."""
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.signal(signal.SIGTERM)
        try:
            return self.wait()
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
            raise


class NodeFactory:
    """Makes NodeProcesses under one directory; stops them all on close()."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.nodes: list[NodeProcess] = []

    def config(self, name: str, **overrides: Any) -> Path:
        data_dir = self.root / name
        data_dir.mkdir(parents=True, exist_ok=True)
        path = data_dir / "node.yaml"
        if not path.exists() or overrides:
            path.write_text(yaml.safe_dump(small_config(data_dir, **overrides)))
        return path

    def start(self, name: str = "n1", **overrides: Any) -> NodeProcess:
        path = self.config(name, **overrides)
        node = NodeProcess(path, path.parent / "node.log")
        self.nodes.append(node)
        return node.start()

    def close(self) -> None:
        for node in self.nodes:
            if node.proc is not None and node.proc.poll() is None:
                node.proc.kill()
                node.proc.wait(10)
            if node.proc is not None and node.proc.stdout is not None:
                node.proc.stdout.close()
