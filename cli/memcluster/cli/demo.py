"""`memcluster demo`: start a real node with small tiers, run a short workload, show the tiers.

The node runs as its own process with its data in one directory (a temporary one
unless --data-dir is given). The workload writes a JSON dataset several times larger
than the hot tier, so that the warm (compressed RAM) and cold (LMDB on disk) tiers
fill, reads a skewed sample back (promoting what it touches), then restarts the node
with SIGTERM to show that a planned restart keeps everything.
"""

from __future__ import annotations

import json
import random
import tempfile
from pathlib import Path

import yaml
from rich.console import Console

from memcluster.cli.procs import ManagedProcess
from memcluster.cli.tables import render_node_stats
from memcluster.client import Client


def demo_config(data_dir: Path) -> dict[str, object]:
    """Small tiers so that a few MB of data reach every tier."""
    return {
        "server": {"listen": "127.0.0.1:0", "metrics_listen": "127.0.0.1:0", "grace_period": "5s"},
        "memory": {
            "tiers": {
                "hot": {"capacity": "2MB", "ttl": "1h", "cleanup_interval": "1s"},
                "warm": {"capacity": "2MB", "compression_level": 3, "ttl": "1d"},
                "cold": {"capacity": "1GB", "compression_level": 5, "path": str(data_dir / "cold")},
            }
        },
    }


def document(i: int, rng: random.Random) -> bytes:
    """A user-profile-like JSON document of ~400 bytes."""
    return json.dumps(
        {
            "id": i,
            "name": f"user-{i}",
            "email": f"user{i}@example.com",
            "plan": rng.choice(["free", "pro", "team", "enterprise"]),
            "country": rng.choice(["DE", "FR", "US", "JP", "BR", "IN"]),
            "visits": rng.randint(0, 10_000),
            "tags": rng.sample(["ml", "etl", "web", "mobile", "batch", "gpu", "cache"], 3),
            "bio": " ".join(rng.choices(["fast", "data", "python", "cluster", "memory"], k=30)),
        }
    ).encode()


def run_demo(data_dir: str | None, items: int, console: Console | None = None) -> int:
    """The whole demo; returns an exit code."""
    console = console or Console()
    with tempfile.TemporaryDirectory(prefix="memcluster-demo-") as tmp:
        root = Path(data_dir or tmp)
        root.mkdir(parents=True, exist_ok=True)
        config_path = root / "node.yaml"
        config_path.write_text(yaml.safe_dump(demo_config(root)))
        node = ManagedProcess.node(config_path)
        try:
            return _workload(node, items, console)
        finally:
            node.stop()


def _workload(node: ManagedProcess, items: int, console: Console) -> int:
    rng = random.Random(7)
    console.rule("memcluster demo: one node, three tiers")
    node.start()
    console.print(f"node up at {node.address} (metrics http://{node.ready['metrics']}/metrics)")
    data = {f"user:{i}".encode(): document(i, rng) for i in range(items)}
    raw = sum(len(v) for v in data.values())
    with Client(node.address) as client:
        client.put_many(data)
        console.print(f"wrote {items:,} JSON documents ({raw / 1e6:.1f} MB) into 2 MB of hot tier")
        render_node_stats(client.stats(), console)
        hot_keys = [f"user:{int(rng.paretovariate(1.2)) % items}".encode() for _ in range(2000)]
        first = client.get_entry(hot_keys[0])
        for _ in range(3):  # the first pass promotes, the next ones hit the hot tier
            got = client.get_many(hot_keys)
            if any(got.get(k) != data[k] for k in hot_keys):
                console.print("[red]a read returned the wrong value[/red]")
                return 1
        console.print(
            f"read {len(set(hot_keys)):,} popular keys three times; {hot_keys[0].decode()} came"
            f" from the {first.tier if first else '?'} tier, was promoted, then served hot"
        )
        render_node_stats(client.stats(), console)
    console.rule("planned restart (SIGTERM): RAM tiers are handed to the cold tier")
    node.stop()
    node.start()
    with Client(node.address) as client:
        back = client.get_many(list(data))
        lost = len(data) - sum(1 for k, v in back.items() if v == data[k])
        render_node_stats(client.stats(), console)
    console.print(f"after restart: {len(back):,} of {items:,} keys readable, {lost} lost")
    return 0 if lost == 0 else 1
