"""`memcluster local` and `memcluster demo`: a real cluster on this machine, and a tour of it.

`local` starts an embedded etcd, a coordinator and N nodes (real processes, loopback
only, data under one directory), prints the cluster's status and keeps it running
until Ctrl-C. With `--demo` (or `memcluster demo`) it runs a short workload instead:
it writes a JSON dataset larger than the nodes' hot tiers, shows the items spread
over nodes and tiers, adds a node, waits for the rebalance to finish, and checks that
every key is still there.
"""

from __future__ import annotations

import json
import random
import signal
import tempfile
import threading
import time
from pathlib import Path

from rich.console import Console

from memcluster.cli.local import LocalCluster
from memcluster.cli.tables import render_cluster_status
from memcluster.client import Client
from memcluster.common.placement import Placement, partition_of


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


def run_local(data_dir: str | None, nodes: int, rf: int, *, demo: bool, items: int = 30_000) -> int:
    """Start a local cluster; run the demo or wait for Ctrl-C; stop everything."""
    console = Console(width=max(Console().width, 130))
    with tempfile.TemporaryDirectory(prefix="memcluster-local-") as tmp:
        root = Path(data_dir or tmp)
        console.print(f"starting etcd, a coordinator and {nodes} nodes under {root} ...")
        overrides = (
            {"memory.tiers.hot.capacity": "2MB", "memory.tiers.warm.capacity": "2MB"}
            if demo
            else {}
        )
        cluster = LocalCluster(
            root,
            nodes=nodes,
            replication_factor=rf,
            node_overrides=overrides,
            well_known_ports=not demo,
        )
        with cluster:
            render_cluster_status(cluster.status(), console=console)
            console.print(
                f"bootstrap: {', '.join(cluster.node_addresses())}  "
                f"coordinator: {cluster.coordinator_address()}  etcd: {cluster.etcd.endpoint}"
            )
            if demo:
                return _demo(cluster, items, console)
            console.print("running; Ctrl-C stops every process")
            stopped = threading.Event()
            signal.signal(signal.SIGINT, lambda *_: stopped.set())
            signal.signal(signal.SIGTERM, lambda *_: stopped.set())
            stopped.wait()
            console.print("stopping ...")
    return 0


def _demo(cluster: LocalCluster, items: int, console: Console) -> int:
    rng = random.Random(7)
    data = {f"user:{i}".encode(): document(i, rng) for i in range(items)}
    raw = sum(len(v) for v in data.values())
    with Client(cluster.node_addresses()) as client:
        console.rule("1. write a dataset larger than the hot tiers")
        started = time.perf_counter()
        client.put_many(data)
        elapsed = time.perf_counter() - started
        console.print(
            f"wrote {items:,} JSON documents ({raw / 1e6:.1f} MB, replication factor "
            f"{client.topology().replication_factor}) in {elapsed:.1f}s; "
            "each node has a 2 MB hot tier"
        )
        status = cluster.status()
        render_cluster_status(status, console=console)
        console.rule("2. routing: each key lives on its replicas")
        placement = Placement.current(client.topology())
        for key in (b"user:1", b"user:2", f"user:{items - 1}".encode()):
            entry = client.get_entry(key)
            console.print(
                f"{key.decode()}: partition {partition_of(key, placement.partitions)}, replicas "
                f"{' + '.join(placement.replicas(key))}, served from the primary's "
                f"{entry.tier if entry else '?'} tier"
            )
        console.rule("3. add a node: its share of the data moves to it")
        started = time.perf_counter()
        name = f"n{len(cluster.nodes) + 1}"
        cluster.add_node(name, wait=True, timeout=120)
        elapsed = time.perf_counter() - started
        status = cluster.status()
        held = {load.node_id: load.items for load in status.loads}
        total = sum(held.values())
        share = 100 * held.get(name, 0) / max(total, 1)
        console.print(
            f"{name} joined and the rebalance finished in {elapsed:.1f}s: it now holds "
            f"{held.get(name, 0):,} of {total:,} replicas "
            f"({share:.0f}%; its ring share is {100 / len(held):.0f}%)"
        )
        render_cluster_status(cluster.status(), console=console)
        console.rule("4. every key is still there")
        back = client.get_many(list(data))
        lost = sum(1 for k, v in data.items() if back.get(k) != v)
        console.print(f"{len(back):,} of {items:,} keys read back, {lost} lost or wrong")
    return 0 if lost == 0 else 1
