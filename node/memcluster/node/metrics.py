"""The node's Prometheus endpoint: figures are read from the node at scrape time.

Nothing is counted twice: the store's counters and the runtime's figures are the
source; the collector only renders them (the stats RPC reads the same sources).
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

if TYPE_CHECKING:
    from memcluster.node.runtime import NodeRuntime

TIER_COUNTERS = ("hits", "misses", "promotions", "demotions", "evictions", "expirations")
# Runtime counters that only grow; the rest of NodeRuntime.counters() are gauges.
MONOTONIC = {
    "gc_pause_seconds",
    "gc_collections",
    "oom_near_misses",
    "memory_churn_bytes",
    "ops",
    "replication_failures",
    "read_repairs",
    "fallback_fetches",
    "frames_requests",
}


class GcMonitor:
    """Adds up the time the garbage collector stops the process (gc.callbacks)."""

    def __init__(self, clock: Callable[[], float] = time.perf_counter) -> None:
        self._clock = clock
        self._started = 0.0
        self.pause_seconds = 0.0
        self.collections = 0

    def install(self) -> None:
        """Start measuring."""
        gc.callbacks.append(self._callback)

    def uninstall(self) -> None:
        """Stop measuring."""
        if self._callback in gc.callbacks:
            gc.callbacks.remove(self._callback)

    def _callback(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._started = self._clock()
        elif phase == "stop":
            self.pause_seconds += self._clock() - self._started
            self.collections += 1


class NodeCollector:
    """Renders a node's tiers and runtime figures as Prometheus metrics."""

    def __init__(self, node: NodeRuntime) -> None:
        self._node = node

    def collect(self) -> Iterator[Metric]:
        """Called by prometheus_client on every scrape."""
        labels = ["node", "tier"]
        node_id = self._node.node_id
        items = GaugeMetricFamily("memcluster_tier_items", "Items held per tier", labels=labels)
        held = GaugeMetricFamily("memcluster_tier_bytes", "Bytes held per tier", labels=labels)
        cap = GaugeMetricFamily(
            "memcluster_tier_capacity_bytes", "Capacity per tier", labels=labels
        )
        counters = {
            name: CounterMetricFamily(
                f"memcluster_tier_{name}", f"Tier {name} since start", labels=labels
            )
            for name in TIER_COUNTERS
        }
        for stats in self._node.store.stats():
            tier_labels = [node_id, stats.name]
            items.add_metric(tier_labels, stats.items)
            held.add_metric(tier_labels, stats.bytes)
            cap.add_metric(tier_labels, stats.capacity)
            for name, counter in counters.items():
                counter.add_metric(tier_labels, getattr(stats.counters, name))
        yield items
        yield held
        yield cap
        yield from counters.values()
        for name, value in sorted(self._node.counters().items()):
            help_text = name.replace("_", " ")
            family: CounterMetricFamily | GaugeMetricFamily
            if name in MONOTONIC:
                family = CounterMetricFamily(f"memcluster_{name}", help_text, labels=["node"])
            else:
                family = GaugeMetricFamily(f"memcluster_{name}", help_text, labels=["node"])
            family.add_metric([node_id], value)
            yield family


def serve_metrics(node: NodeRuntime, host: str, port: int) -> tuple[Any, int]:
    """Start the HTTP endpoint in a daemon thread; returns (server, bound port)."""
    registry = CollectorRegistry()
    registry.register(NodeCollector(node))
    server, _thread = start_http_server(port, addr=host, registry=registry)
    return server, server.server_port
