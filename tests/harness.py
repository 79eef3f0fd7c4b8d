"""Real node processes for component and integration tests.

Nodes are started through the product's own launcher (memcluster.cli.procs), in a
temporary directory, with tiny tiers so that little data shows demotion. Every
process started here is killed at teardown, also when the test fails.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from memcluster.cli.procs import ManagedProcess


def small_config(data_dir: Path, **overrides: Any) -> dict[str, Any]:
    """A node config with tiny tiers; ``overrides`` use dotted keys."""
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


class NodeFactory:
    """Makes node processes under one directory; kills them all on close()."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.nodes: list[ManagedProcess] = []

    def config(self, name: str, **overrides: Any) -> Path:
        """The config file of node ``name`` (written on first use or when overridden)."""
        data_dir = self.root / name
        data_dir.mkdir(parents=True, exist_ok=True)
        path = data_dir / "node.yaml"
        if not path.exists() or overrides:
            path.write_text(yaml.safe_dump(small_config(data_dir, **overrides)))
        return path

    def start(self, name: str = "n1", **overrides: Any) -> ManagedProcess:
        """Start node ``name`` and wait until it serves."""
        node = ManagedProcess.node(self.config(name, **overrides))
        self.nodes.append(node)
        return node.start()

    def close(self) -> None:
        """Kill every process started here."""
        for node in self.nodes:
            node.kill()
