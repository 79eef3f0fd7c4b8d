"""The leader's pure topology decisions (plan.next_topology), one rule at a time."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from memcluster.common.topology import NodeInfo, NodeState, Topology
from memcluster.coordinator.keys import Registration
from memcluster.coordinator.plan import Desired, Observed, next_topology, settled
from memcluster.wire import coordinator_pb2

DOWN_AFTER = 30.0
NOW = 1_000.0

UP = NodeState.UP
JOINING = NodeState.JOINING
DRAINING = NodeState.DRAINING


def node(node_id: str, state: NodeState = UP, weight: float = 1.0) -> NodeInfo:
    return NodeInfo(node_id, f"{node_id}:7400", weight, state)


def reg(node_id: str, weight: float = 1.0, address: str | None = None) -> Registration:
    return Registration(address or f"{node_id}:7400", weight)


def topology(*nodes: NodeInfo, epoch: int = 5, rf: int = 2) -> Topology:
    return Topology(epoch, rf, tuple(nodes), partitions=64)


def progress(
    node_id: str, epoch: int, done: bool = True
) -> tuple[str, coordinator_pb2.MigrationProgress]:
    return node_id, coordinator_pb2.MigrationProgress(node_id=node_id, epoch=epoch, done=done)


def all_done(t: Topology) -> dict[str, coordinator_pb2.MigrationProgress]:
    """Every node of ``t`` finished migrating for ``t``'s epoch."""
    return dict(progress(n.id, t.epoch) for n in t.nodes)


def observed(
    members: Iterable[str] | Mapping[str, Registration],
    progress: Mapping[str, coordinator_pb2.MigrationProgress] | None = None,
    missing_since: Mapping[str, float] | None = None,
    now: float = NOW,
) -> Observed:
    if not isinstance(members, Mapping):
        members = {m: reg(m) for m in members}
    return Observed(members, progress or {}, missing_since or {}, now)


def settled_cluster(*nodes: NodeInfo, epoch: int = 5, rf: int = 2) -> tuple[Topology, Observed]:
    """A topology whose every node is registered and done for its epoch."""
    t = topology(*nodes, epoch=epoch, rf=rf)
    return t, observed([n.id for n in nodes], all_done(t))


def ids(nodes: Iterable[NodeInfo]) -> list[str]:
    return [n.id for n in nodes]


def states(t: Topology) -> dict[str, NodeState]:
    return {n.id: n.state for n in t.nodes}


# -- settled() ---------------------------------------------------------------------


def test_settled_needs_every_live_node_done_for_the_current_epoch() -> None:
    t = topology(node("a"), node("b"), node("c", NodeState.DOWN))
    assert settled(t, dict([progress("a", 5), progress("b", 5)]))
    assert settled(t, dict([progress("a", 6), progress("b", 5)]))  # newer counts
    assert not settled(t, dict([progress("a", 5)]))
    assert not settled(t, dict([progress("a", 5), progress("b", 4)]))
    assert not settled(t, dict([progress("a", 5), progress("b", 5, done=False)]))


def test_an_empty_topology_is_settled() -> None:
    assert settled(Topology(0, 1, ()), {})


# -- admissions --------------------------------------------------------------------


def test_a_fresh_cluster_admits_every_registered_member_as_joining_in_one_epoch() -> None:
    fresh = Topology(0, 2, (), partitions=64, cluster="c1")
    new, reasons = next_topology(fresh, observed(["c", "a", "b"]), Desired(), DOWN_AFTER)
    assert new is not None
    assert new.epoch == 1
    assert ids(new.nodes) == ["a", "b", "c"]  # sorted, whatever the order seen
    assert set(states(new).values()) == {JOINING}
    assert ids(new.members()) == ["a", "b", "c"]  # JOINING nodes are in the ring
    assert new.previous_nodes == ()  # the old ring was empty
    assert new.replication_factor == 2
    assert new.partitions == 64 and new.cluster == "c1"
    assert [r for r in reasons if "joins" in r] == [
        "a joins at a:7400",
        "b joins at b:7400",
        "c joins at c:7400",
    ]


def test_a_new_member_joins_a_settled_cluster_remembering_the_old_ring() -> None:
    current, seen = settled_cluster(node("a"), node("b"), node("x", DRAINING))
    seen = observed(["a", "b", "x", "c"], seen.progress)
    new, reasons = next_topology(current, seen, Desired(drain=frozenset({"x"})), DOWN_AFTER)
    # x (DRAINING, done) leaves first; c waits for the next step.
    assert new is not None and reasons == ["x drained: it handed its data over"]
    new2, reasons2 = next_topology(
        new,
        observed(["a", "b", "x", "c"], all_done(new)),
        Desired(drain=frozenset({"x"})),
        DOWN_AFTER,
    )
    assert new2 is not None and reasons2 == ["c joins at c:7400"]
    assert states(new2) == {"a": UP, "b": UP, "c": JOINING}
    assert new2.previous_nodes == new.members() == (node("a"), node("b"))
    assert new2.previous_replication_factor == new.replication_factor


def test_joining_node_takes_its_registered_weight_or_the_desired_one() -> None:
    current, _ = settled_cluster(node("a"))
    seen = observed(
        {"a": reg("a"), "b": reg("b", weight=2.0), "c": reg("c", weight=2.0)},
        all_done(current),
    )
    new, _ = next_topology(current, seen, Desired(weights={"c": 0.5}), DOWN_AFTER)
    assert new is not None
    assert {n.id: n.weight for n in new.nodes} == {"a": 1.0, "b": 2.0, "c": 0.5}


def test_a_registered_node_at_a_new_address_is_moved_in_place() -> None:
    current, seen = settled_cluster(node("a"), node("b"))
    seen = observed({"a": reg("a"), "b": reg("b", address="10.0.0.9:7400")}, seen.progress)
    new, reasons = next_topology(current, seen, Desired(), DOWN_AFTER)
    assert new is not None and reasons == ["b moved to 10.0.0.9:7400"]
    assert new.node("b") == NodeInfo("b", "10.0.0.9:7400", 1.0, UP)
    assert new.node("a") == current.node("a")
    assert new.members() == (node("a"), NodeInfo("b", "10.0.0.9:7400", 1.0, UP))
    assert new.epoch == current.epoch + 1


def test_nothing_but_removals_happens_before_the_epoch_has_settled() -> None:
    current = topology(node("a"), node("b", JOINING))
    unsettled = dict([progress("a", 5), progress("b", 5, done=False)])
    seen = observed({"a": reg("a"), "b": reg("b", address="b2:1"), "c": reg("c")}, unsettled)
    desired = Desired(replication_factor=3, weights={"a": 2.0}, drain=frozenset({"a"}))
    assert next_topology(current, seen, desired, DOWN_AFTER) == (None, [])


# -- JOINING -> UP -----------------------------------------------------------------


@pytest.mark.parametrize(
    "reports",
    [
        pytest.param([("a", 7, True), ("b", 7, True)], id="c-never-reported"),
        pytest.param([("a", 7, True), ("b", 7, True), ("c", 6, True)], id="c-done-for-older"),
        pytest.param([("a", 7, True), ("b", 7, True), ("c", 7, False)], id="c-not-done"),
        pytest.param([("a", 7, False), ("b", 7, True), ("c", 7, True)], id="old-member-not-done"),
    ],
)
def test_joining_waits_until_every_node_is_done_for_the_current_epoch(
    reports: list[tuple[str, int, bool]],
) -> None:
    current = topology(node("a"), node("b"), node("c", JOINING), epoch=7)
    seen = observed(["a", "b", "c"], dict(progress(*r) for r in reports))
    assert next_topology(current, seen, Desired(), DOWN_AFTER) == (None, [])


def test_joining_nodes_become_up_once_everyone_is_done() -> None:
    current, seen = settled_cluster(node("a"), node("b", JOINING), node("c", JOINING), epoch=7)
    new, reasons = next_topology(current, seen, Desired(), DOWN_AFTER)
    assert new is not None and new.epoch == 8
    assert states(new) == {"a": UP, "b": UP, "c": UP}
    assert reasons == ["b is up: its data has arrived", "c is up: its data has arrived"]
    # The ring did not change (JOINING was already in it), so nothing moves.
    assert ids(new.previous_nodes) == ids(new.members()) == ["a", "b", "c"]


def test_promotion_is_alone_in_its_epoch() -> None:
    current, seen = settled_cluster(node("a"), node("b", JOINING))
    seen = observed(["a", "b", "c"], seen.progress)
    new, reasons = next_topology(current, seen, Desired(replication_factor=3), DOWN_AFTER)
    assert new is not None and reasons == ["b is up: its data has arrived"]
    assert new.node("c") is None and new.replication_factor == 2


# -- removals ----------------------------------------------------------------------


def test_a_missing_node_stays_until_down_after() -> None:
    current, seen = settled_cluster(node("a"), node("b"), node("c"))
    just_before = observed(["a", "b"], seen.progress, {"c": NOW - DOWN_AFTER + 0.5})
    assert next_topology(current, just_before, Desired(), DOWN_AFTER) == (None, [])


def test_a_missing_node_is_removed_after_down_after_even_while_unsettled() -> None:
    current = topology(node("a"), node("b", JOINING), node("c"))
    unsettled = dict([progress("a", 5, done=False)])  # b and c never reported
    seen = observed(["a", "b"], unsettled, {"c": NOW - DOWN_AFTER})
    new, reasons = next_topology(current, seen, Desired(), DOWN_AFTER)
    assert new is not None and new.epoch == 6
    assert reasons == ["c left: no registration for 30s"]
    assert states(new) == {"a": UP, "b": JOINING}
    assert ids(new.previous_nodes) == ["a", "b", "c"]  # where the data was


def test_a_removal_step_changes_nothing_else() -> None:
    current = topology(node("a"), node("b", JOINING), node("c"), node("d", DRAINING), rf=2)
    seen = observed(
        {"a": reg("a", address="a2:1"), "b": reg("b"), "d": reg("d"), "e": reg("e")},
        all_done(current),  # settled, so each of these changes would otherwise apply
        {"c": NOW - 100},
    )
    desired = Desired(replication_factor=3, weights={"a": 3.0}, drain=frozenset({"b", "d"}))
    new, reasons = next_topology(current, seen, desired, DOWN_AFTER, {"a": 0.5})
    assert new is not None and reasons == ["c left: no registration for 100s"]
    assert new.nodes == (node("a"), node("b", JOINING), node("d", DRAINING))
    assert new.replication_factor == 2


def test_several_nodes_can_leave_in_one_step_but_only_those_overdue() -> None:
    current, seen = settled_cluster(node("a"), node("b"), node("c"), node("d"))
    missing = {"b": NOW - 31, "c": NOW - 29, "d": NOW - 90, "ghost": NOW - 500}
    new, reasons = next_topology(
        current, observed(["a"], seen.progress, missing), Desired(), DOWN_AFTER
    )
    assert new is not None
    assert ids(new.nodes) == ["a", "c"]
    assert sorted(reasons) == ["b left: no registration for 31s", "d left: no registration for 90s"]


@settings(max_examples=100)
@given(
    # Whole seconds keep NOW - (NOW - gone_for) exact.
    down_after=st.integers(min_value=0, max_value=600),
    gone_for=st.integers(min_value=0, max_value=1200),
)
def test_removal_happens_exactly_when_down_after_has_elapsed(
    down_after: int, gone_for: int
) -> None:
    current, seen = settled_cluster(node("a"), node("b"))
    seen = observed(["a"], seen.progress, {"b": NOW - gone_for})
    new, _ = next_topology(current, seen, Desired(), down_after)
    if gone_for >= down_after:
        assert new is not None and ids(new.nodes) == ["a"]
    else:
        assert new is None


# -- draining ----------------------------------------------------------------------


def test_admin_drain_takes_the_node_out_of_the_ring() -> None:
    current, seen = settled_cluster(node("a"), node("b"), node("c"))
    new, reasons = next_topology(current, seen, Desired(drain=frozenset({"b"})), DOWN_AFTER)
    assert new is not None and reasons == ["b drains (admin request)"]
    assert states(new) == {"a": UP, "b": DRAINING, "c": UP}
    assert ids(new.members()) == ["a", "c"]
    assert ids(new.previous_nodes) == ["a", "b", "c"]  # b's data is found via the old ring


def test_drain_of_an_unknown_node_is_ignored() -> None:
    current, seen = settled_cluster(node("a"), node("b"))
    assert next_topology(current, seen, Desired(drain=frozenset({"zz"})), DOWN_AFTER) == (
        None,
        [],
    )


def test_a_draining_node_leaves_only_after_it_reported_done() -> None:
    current = topology(node("a"), node("b", DRAINING), node("c"), epoch=9)
    drain = Desired(drain=frozenset({"b"}))
    not_yet = dict([progress("a", 9), progress("b", 9, done=False), progress("c", 9)])
    assert next_topology(current, observed(["a", "b", "c"], not_yet), drain, DOWN_AFTER) == (
        None,
        [],
    )

    new, reasons = next_topology(
        current, observed(["a", "b", "c"], all_done(current)), drain, DOWN_AFTER
    )
    assert new is not None and new.epoch == 10
    assert reasons == ["b drained: it handed its data over"]
    assert ids(new.nodes) == ["a", "c"]
    # The ring was already without b: nothing moves in this epoch.
    assert ids(new.previous_nodes) == ids(new.members()) == ["a", "c"]


def test_a_drained_node_still_registered_is_not_readmitted_while_the_drain_stands() -> None:
    current, _ = settled_cluster(node("a"), node("c"))
    seen = observed(["a", "b", "c"], all_done(current))
    assert next_topology(current, seen, Desired(drain=frozenset({"b"})), DOWN_AFTER) == (None, [])


# -- replication factor and weights ------------------------------------------------


def test_desired_replication_factor_is_applied_once_settled() -> None:
    current = topology(node("a"), node("b"), node("c"), rf=2)
    desired = Desired(replication_factor=3)
    unsettled = observed(["a", "b", "c"], dict([progress("a", 5), progress("b", 5)]))
    assert next_topology(current, unsettled, desired, DOWN_AFTER) == (None, [])

    new, reasons = next_topology(
        current, observed(["a", "b", "c"], all_done(current)), desired, DOWN_AFTER
    )
    assert new is not None and reasons == ["replication factor 2 -> 3"]
    assert new.replication_factor == 3 and new.previous_replication_factor == 2
    assert new.nodes == current.nodes


def test_desired_replication_factor_equal_to_the_current_one_changes_nothing() -> None:
    current, seen = settled_cluster(node("a"), node("b"), rf=2)
    assert next_topology(current, seen, Desired(replication_factor=2), DOWN_AFTER) == (None, [])


def test_balancer_weight_applies_when_no_admin_weight_is_set() -> None:
    current, seen = settled_cluster(node("a"), node("b"))
    new, reasons = next_topology(current, seen, Desired(), DOWN_AFTER, {"a": 0.75})
    assert new is not None and reasons == ["a weight 1 -> 0.75"]
    assert new.node("a") == node("a", weight=0.75)


def test_admin_weight_wins_over_the_balancer() -> None:
    current, seen = settled_cluster(node("a"), node("b"))
    new, reasons = next_topology(
        current, seen, Desired(weights={"a": 2.0}), DOWN_AFTER, {"a": 0.5, "b": 0.5}
    )
    assert new is not None
    assert {n.id: n.weight for n in new.nodes} == {"a": 2.0, "b": 0.5}
    assert sorted(reasons) == ["a weight 1 -> 2", "b weight 1 -> 0.5"]


def test_a_node_marked_draining_keeps_its_weight() -> None:
    current, seen = settled_cluster(node("a"), node("b"))
    desired = Desired(weights={"b": 3.0}, drain=frozenset({"b"}))
    new, reasons = next_topology(current, seen, desired, DOWN_AFTER, {"b": 0.5})
    assert new is not None and reasons == ["b drains (admin request)"]
    assert new.node("b") == node("b", DRAINING, weight=1.0)


def test_a_weight_within_1e_9_of_the_current_one_is_no_change() -> None:
    current, seen = settled_cluster(node("a"), node("b"))
    desired = Desired(weights={"a": 1.0 + 1e-12})
    assert next_topology(current, seen, desired, DOWN_AFTER, {"b": 1.0 - 1e-12}) == (None, [])


# -- no change, epochs, convergence ------------------------------------------------


def test_a_steady_cluster_gets_no_new_topology() -> None:
    current, seen = settled_cluster(node("a"), node("b"), node("c"))
    assert next_topology(current, seen, Desired(), DOWN_AFTER, {}) == (None, [])
    assert next_topology(current, seen, Desired(), DOWN_AFTER, {"a": 1.0}) == (None, [])


@settings(max_examples=60, deadline=None)
@given(
    registered=st.sets(st.sampled_from("abcdef"), min_size=1),
    drain=st.sets(st.sampled_from("abcdef")),
    rf=st.integers(min_value=1, max_value=3),
    weights=st.dictionaries(st.sampled_from("abcdef"), st.sampled_from([0.5, 1.0, 2.0])),
)
def test_a_fresh_cluster_converges_one_epoch_at_a_time(
    registered: set[str], drain: set[str], rf: int, weights: dict[str, float]
) -> None:
    """Every node reports done after each epoch: the plan converges, epochs step by 1."""
    desired = Desired(replication_factor=rf, weights=weights, drain=frozenset(drain))
    current = Topology(0, 1, (), partitions=16)
    for _ in range(10):
        new, reasons = next_topology(
            current, observed(sorted(registered), all_done(current)), desired, DOWN_AFTER
        )
        if new is None:
            break
        assert reasons
        assert new.epoch == current.epoch + 1
        assert new.previous_nodes == current.members()
        assert new.previous_replication_factor == current.replication_factor
        current = new
    else:
        pytest.fail("the plan did not converge in 10 epochs")
    wanted = sorted(registered - drain)
    assert ids(current.nodes) == wanted
    assert all(n.state == UP for n in current.nodes)
    assert all(n.weight == weights.get(n.id, 1.0) for n in current.nodes)
    assert current.replication_factor == rf
