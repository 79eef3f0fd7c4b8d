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
