"""Load balancing by ring weight: pure decisions from the loads nodes publish.

A node whose request rate stays above ``overload_factor`` x the cluster mean for
``sustain`` consecutive checks loses ``step`` of its weight (never below
``min_weight``); once its rate is back at or below the mean for ``sustain`` checks it
regains ``step`` (never above its configured weight). Each node changes at most once
per ``cooldown``, and the gap between the two thresholds is the hysteresis that keeps
weights from flapping. Hot keys are gathered from every node's sample.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping

from memcluster.common.config import LoadConfig
from memcluster.common.topology import NodeState, Topology
from memcluster.wire import coordinator_pb2


class LoadBalancer:
    """Remembers streaks and cooldowns between checks."""

    def __init__(self, config: LoadConfig) -> None:
        self.config = config
        self._over: Counter[str] = Counter()
        self._under: Counter[str] = Counter()
        self._changed_at: dict[str, float] = {}
        self.weights: dict[str, float] = {}
        self.hot_keys: list[bytes] = []

    def check(
        self,
        topology: Topology,
        loads: Mapping[str, coordinator_pb2.NodeLoad],
        base_weights: Mapping[str, float],
        now: float,
    ) -> dict[str, float]:
        """The weights the balancer wants now (only for nodes it has adjusted)."""
        cfg = self.config
        self._forget_departed(topology)
        up = [n for n in topology.nodes if n.state == NodeState.UP and n.id in loads]
        self.hot_keys = _merge_hot_keys(loads)
        if len(up) < 2:
            return dict(self.weights)
        mean = sum(loads[n.id].ops_per_second for n in up) / len(up)
        for node in up:
            rate = loads[node.id].ops_per_second
            base = base_weights.get(node.id, 1.0)
            current = self.weights.get(node.id, node.weight)
            if mean > 0 and rate > cfg.overload_factor * mean:
                self._over[node.id] += 1
                self._under[node.id] = 0
            elif rate <= mean:
                self._under[node.id] += 1
                self._over[node.id] = 0
            else:
                self._over[node.id] = self._under[node.id] = 0
            if now - self._changed_at.get(node.id, float("-inf")) < cfg.cooldown:
                continue
            if self._over[node.id] >= cfg.sustain and current > cfg.min_weight * base:
                self.weights[node.id] = max(cfg.min_weight * base, current - cfg.step * base)
            elif self._under[node.id] >= cfg.sustain and current < base:
                self.weights[node.id] = min(base, current + cfg.step * base)
            else:
                continue
            self._changed_at[node.id] = now
            self._over[node.id] = self._under[node.id] = 0
        return dict(self.weights)

    def _forget_departed(self, topology: Topology) -> None:
        """A node that left starts afresh if it returns: no weight, streak or cooldown."""
        for table in (self.weights, self._over, self._under, self._changed_at):
            for node_id in [n for n in table if topology.node(n) is None]:
                del table[node_id]


def _merge_hot_keys(loads: Mapping[str, coordinator_pb2.NodeLoad], top: int = 10) -> list[bytes]:
    ranked: Counter[bytes] = Counter()
    for load in loads.values():
        for rank, key in enumerate(load.hot_keys):
            ranked[key] += len(load.hot_keys) - rank
    return [k for k, _ in ranked.most_common(top)]
