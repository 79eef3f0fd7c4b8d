"""LoadBalancer: sustained overload costs weight, recovery gives it back, with hysteresis."""

from __future__ import annotations

import pytest

from memcluster.common.config import LoadConfig
from memcluster.common.topology import NodeInfo, NodeState, Topology
from memcluster.coordinator.balance import LoadBalancer
from memcluster.wire import coordinator_pb2

#: overload above 1.5 x mean, 3 checks in a row, 0.25 of base per step, floor 0.25 x base.
CONFIG = LoadConfig(overload_factor=1.5, sustain=3, step=0.25, min_weight=0.25, cooldown=60.0)


def cluster(
    *ids: str, joining: tuple[str, ...] = (), weights: dict[str, float] | None = None
) -> Topology:
    weights = weights or {}
    nodes = [NodeInfo(i, f"{i}:7400", weights.get(i, 1.0)) for i in ids]
    nodes += [NodeInfo(i, f"{i}:7400", state=NodeState.JOINING) for i in joining]
    return Topology(3, 1, tuple(nodes), partitions=16)


def loads(**rates: float) -> dict[str, coordinator_pb2.NodeLoad]:
    return {n: coordinator_pb2.NodeLoad(node_id=n, ops_per_second=r) for n, r in rates.items()}


HOT_A = loads(a=300, b=100, c=100)  # mean 166.7: a is above 1.5 x mean (250)
EVEN = loads(a=100, b=100, c=100)  # everyone at the mean
BAND_A = loads(a=200, b=100, c=100)  # a above the mean but under 1.5 x mean


def run(
    balancer: LoadBalancer,
    rates: dict[str, coordinator_pb2.NodeLoad],
    times: range | list[float],
    topology: Topology | None = None,
    base: dict[str, float] | None = None,
) -> list[dict[str, float]]:
    """One check per time in ``times``; the weights wanted after each."""
    t = topology or cluster("a", "b", "c")
    return [balancer.check(t, rates, base or {}, now) for now in times]


def test_sustained_overload_costs_one_step_after_sustain_checks() -> None:
    lb = LoadBalancer(CONFIG)
    assert run(lb, HOT_A, [0, 5, 10]) == [{}, {}, {"a": 0.75}]


def test_an_interrupted_streak_starts_over() -> None:
    lb = LoadBalancer(CONFIG)
    assert run(lb, HOT_A, [0, 5]) == [{}, {}]
    assert run(lb, BAND_A, [10]) == [{}]  # in the band: both streaks reset
    assert run(lb, HOT_A, [15, 20]) == [{}, {}]
    assert run(lb, HOT_A, [25]) == [{"a": 0.75}]


def test_weight_never_goes_below_min_weight_times_base() -> None:
    lb = LoadBalancer(LoadConfig(sustain=1, step=0.4, min_weight=0.25, cooldown=0.0))
    base = {"a": 2.0}
    wanted = run(lb, HOT_A, range(5), cluster("a", "b", "c", weights=base), base)
    assert [w["a"] for w in wanted] == pytest.approx([1.2, 0.5, 0.5, 0.5, 0.5])


def test_cooldown_spaces_changes_of_one_node() -> None:
    lb = LoadBalancer(LoadConfig(sustain=1, step=0.25, min_weight=0.25, cooldown=60.0))
    assert run(lb, HOT_A, [0]) == [{"a": 0.75}]
    assert run(lb, HOT_A, [10, 30, 59.9]) == [{"a": 0.75}] * 3
    assert run(lb, HOT_A, [60]) == [{"a": 0.5}]
    assert run(lb, HOT_A, [100]) == [{"a": 0.5}]
    assert run(lb, HOT_A, [120]) == [{"a": 0.25}]


def test_cooldown_is_per_node() -> None:
    lb = LoadBalancer(LoadConfig(sustain=1, cooldown=60.0))
    assert run(lb, HOT_A, [0]) == [{"a": 0.75}]
    hot_b = loads(a=100, b=300, c=100)
    assert run(lb, hot_b, [1]) == [{"a": 0.75, "b": 0.75}]


def test_recovery_after_sustain_checks_at_or_below_the_mean_capped_at_base() -> None:
    lb = LoadBalancer(LoadConfig(sustain=2, step=0.4, min_weight=0.25, cooldown=0.0))
    run(lb, HOT_A, range(4))
    assert lb.weights == {"a": 0.25}
    # a back exactly at the mean: "at or below" counts.
    wanted = run(lb, EVEN, range(10, 16))
    assert [w["a"] for w in wanted] == pytest.approx([0.25, 0.65, 0.65, 1.0, 1.0, 1.0])


def test_recovery_is_capped_at_the_nodes_base_weight() -> None:
    lb = LoadBalancer(LoadConfig(sustain=1, step=0.5, min_weight=0.25, cooldown=0.0))
    base = {"a": 1.5}
    t = cluster("a", "b", "c", weights=base)
    run(lb, HOT_A, [0, 1], t, base)
    assert lb.weights == pytest.approx({"a": 0.375})  # 1.5 -> 0.75 -> floor 0.25 x 1.5
    wanted = run(lb, EVEN, [2, 3, 4], t, base)
    assert [w["a"] for w in wanted] == pytest.approx([1.125, 1.5, 1.5])  # not 1.875


def test_the_band_between_mean_and_overload_is_hysteresis() -> None:
    lb = LoadBalancer(LoadConfig(sustain=1, step=0.25, cooldown=0.0))
    run(lb, HOT_A, [0])
    assert lb.weights == {"a": 0.75}
    # Neither overloaded nor at the mean: no change either way, however long.
    assert run(lb, BAND_A, range(1, 20)) == [{"a": 0.75}] * 19


def test_recovery_waits_for_the_cooldown_too() -> None:
    lb = LoadBalancer(LoadConfig(sustain=1, step=0.25, cooldown=60.0))
    run(lb, HOT_A, [0])
    assert run(lb, EVEN, [30, 59]) == [{"a": 0.75}] * 2
    assert run(lb, EVEN, [60]) == [{"a": 1.0}]


def test_nodes_at_base_weight_and_under_the_mean_are_left_out() -> None:
    lb = LoadBalancer(LoadConfig(sustain=1, cooldown=0.0))
    assert run(lb, EVEN, range(5)) == [{}] * 5


def test_no_decision_with_fewer_than_two_up_nodes_reporting() -> None:
    lb = LoadBalancer(LoadConfig(sustain=1, cooldown=0.0))
    only_a = cluster("a", joining=("b",))
    assert lb.check(only_a, loads(a=1000, b=1), {}, 0) == {}
    assert lb.check(cluster("a", "b"), loads(a=1000), {}, 1) == {}


def test_joining_nodes_do_not_count_toward_the_mean() -> None:
    lb = LoadBalancer(LoadConfig(sustain=1, cooldown=0.0))
    t = cluster("a", "b", joining=("c",))
    # Counting c (0 ops/s) the mean would be 100 and a (200) overloaded; without, it is 150.
    assert lb.check(t, loads(a=200, b=100, c=0), {}, 0) == {}


def test_an_idle_cluster_overloads_no_one() -> None:
    lb = LoadBalancer(LoadConfig(sustain=1, cooldown=0.0))
    assert run(lb, loads(a=0, b=0, c=0), range(3)) == [{}] * 3


def test_nodes_removed_from_the_topology_are_forgotten() -> None:
    lb = LoadBalancer(LoadConfig(sustain=1, cooldown=0.0))
    run(lb, HOT_A, [0])
    assert lb.weights == {"a": 0.75}
    assert lb.check(cluster("b", "c"), loads(b=100, c=100), {}, 1) == {}
    assert lb.weights == {}


def test_nodes_removed_are_forgotten_even_when_one_node_is_left() -> None:
    lb = LoadBalancer(LoadConfig(sustain=1, cooldown=0.0))
    run(lb, loads(a=400, b=100), [0], topology=cluster("a", "b"))
    assert lb.weights == {"a": 0.75}
    assert lb.check(cluster("b"), loads(b=100), {}, 1) == {}


def test_a_returning_node_starts_a_fresh_streak() -> None:
    lb = LoadBalancer(CONFIG)  # sustain 3
    run(lb, HOT_A, [0, 5])  # a: two overloaded checks
    lb.check(cluster("b", "c"), loads(b=100, c=100), {}, 10)  # a leaves
    assert run(lb, HOT_A, [1000]) == [{}]  # a is back: one check is not "sustained"


# -- hot keys ----------------------------------------------------------------------


def test_hot_keys_are_merged_by_rank_across_nodes() -> None:
    lb = LoadBalancer(CONFIG)
    reported = loads(a=1, b=1)
    reported["a"].hot_keys.extend([b"k1", b"k2", b"k3"])  # scores 3, 2, 1
    reported["b"].hot_keys.extend([b"k2", b"k4"])  # scores 2, 1
    lb.check(cluster("a", "b"), reported, {}, 0)
    assert lb.hot_keys == [b"k2", b"k1", b"k3", b"k4"]


def test_hot_keys_keep_the_top_ten_and_are_gathered_even_from_one_node() -> None:
    lb = LoadBalancer(CONFIG)
    reported = loads(a=1)
    reported["a"].hot_keys.extend(f"k{i:02}".encode() for i in range(15))
    lb.check(cluster("a"), reported, {}, 0)
    assert lb.hot_keys == [f"k{i:02}".encode() for i in range(10)]
    lb.check(cluster("a"), loads(a=1), {}, 1)
    assert lb.hot_keys == []
