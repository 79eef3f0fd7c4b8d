"""Human-readable tables for the CLI (rich)."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table

from memcluster.common.config import format_size


def render_node_stats(stats: dict[str, Any], console: Console | None = None) -> None:
    """Print one node's per-tier figures."""
    console = console or Console()
    table = Table(title=f"node {stats.get('node_id', '?')}  (epoch {stats.get('epoch', 0)})")
    for column in ("tier", "items", "bytes", "capacity", "used", "hit rate"):
        table.add_column(column, justify="left" if column == "tier" else "right")
    for name, tier in stats.get("tiers", {}).items():
        lookups = tier["hits"] + tier["misses"]
        table.add_row(
            name,
            f"{tier['items']:,}",
            format_size(tier["bytes"]),
            format_size(tier["capacity"]),
            f"{100 * tier['bytes'] / tier['capacity']:.1f}%" if tier["capacity"] else "-",
            f"{100 * tier['hits'] / lookups:.1f}%" if lookups else "-",
        )
    console.print(table)
    counters = stats.get("counters", {})
    if counters:
        console.print(
            "  ".join(f"{k}={v:,.0f}" if v >= 100 else f"{k}={v:g}" for k, v in counters.items())
        )


def _migration(progress: Any, epoch: int) -> str:
    if progress is None:
        return "-"
    if progress.epoch < epoch:
        return f"at epoch {progress.epoch}"
    if progress.done:
        return f"done, {progress.items_sent:,} sent" if progress.items_sent else "done"
    total = progress.items_total or 1
    return f"{100 * progress.items_scanned / total:.0f}%, {progress.items_sent:,} sent"


def node_stats(address: str, timeout: float) -> dict[str, Any] | None:
    """One node's stats, or None if it does not answer."""
    from memcluster.client import Client
    from memcluster.common.errors import MemclusterError

    try:
        with Client(address, timeout=timeout) as client:
            return client.stats(address=address)
    except MemclusterError:
        return None


def render_cluster_status(
    status: Any, *, timeout: float = 5.0, console: Console | None = None
) -> None:
    """Print the coordinator's view: nodes, states, epoch, RF, tiers, migrations, hot keys."""
    from memcluster.common.topology import NodeInfo

    console = console or Console(width=max(Console().width, 130))
    topology = status.topology
    console.print(
        f"cluster [bold]{topology.cluster or '-'}[/bold]  epoch {topology.epoch}  "
        f"replication factor {topology.replication_factor}  partitions {topology.partitions}  "
        f"leader {status.leader_id or '(none)'}"
    )
    loads = {load.node_id: load for load in status.loads}
    migrations = {m.node_id: m for m in status.migrations}
    table = Table()
    for column in (
        "node",
        "address",
        "state",
        "weight",
        "ops/s",
        "items",
        "hot",
        "warm",
        "cold",
        "hits",
        "migration",
    ):
        table.add_column(
            column, justify="left" if column in ("node", "address", "state") else "right"
        )
    for wire in topology.nodes:
        node = NodeInfo.from_wire(wire)
        load = loads.get(node.id)
        stats = node_stats(node.address, timeout)
        hits = lookups = 0
        if stats is not None and stats["tiers"]:
            tiers = list(stats["tiers"].values())
            hits = sum(t["hits"] for t in tiers)
            lookups = tiers[0]["hits"] + tiers[0]["misses"]  # every lookup starts at the top
        state = (
            str(node.state)
            if load is not None and load.alive
            else f"[red]{node.state}, no lease[/red]"
        )
        table.add_row(
            node.id,
            node.address,
            state,
            f"{node.weight:g}",
            f"{load.ops_per_second:,.0f}" if load else "-",
            f"{load.items:,}" if load else "-",
            format_size(load.hot_bytes) if load else "-",
            format_size(load.warm_bytes) if load else "-",
            format_size(load.cold_bytes) if load else "-",
            f"{100 * hits / lookups:.0f}%" if lookups else "-",
            _migration(migrations.get(node.id), topology.epoch),
        )
    console.print(table)
    hot_keys = [k for load in status.loads for k in load.hot_keys][:10]
    if hot_keys:
        console.print("hot keys: " + ", ".join(repr(k)[2:-1] for k in hot_keys))
