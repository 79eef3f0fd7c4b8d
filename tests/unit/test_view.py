"""ClusterView: acks per consistency level, ownership checks, swapping topologies."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from memcluster.common.errors import NotOwner
from memcluster.common.placement import Placement
from memcluster.common.topology import NodeInfo, NodeState, Topology
from memcluster.node.view import (
    CONSISTENCY_ALL,
    CONSISTENCY_ONE,
    CONSISTENCY_QUORUM,
    ClusterView,
    required_acks,
    standalone,
)

PARTITIONS = 64
KEYS = [f"key-{i}".encode() for i in range(200)]


def ring(*ids: str, epoch: int = 1, rf: int = 2, previous: tuple[str, ...] = ()) -> Topology:
    return Topology(
        epoch,
        rf,
        tuple(NodeInfo(i, f"{i}:7400") for i in ids),
        partitions=PARTITIONS,
        previous_nodes=tuple(NodeInfo(i, f"{i}:7400") for i in previous),
    )


def key_not_owned_by(view: ClusterView, node_id: str) -> bytes:
    return next(k for k in KEYS if node_id not in view.owners(k))


def key_owned_by(view: ClusterView, node_id: str) -> bytes:
    return next(k for k in KEYS if node_id in view.owners(k))


# -- required_acks -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("replicas", "one", "quorum", "all_"),
    [(1, 1, 1, 1), (2, 1, 2, 2), (3, 1, 2, 3), (4, 1, 3, 4), (5, 1, 3, 5)],
)
def test_required_acks(replicas: int, one: int, quorum: int, all_: int) -> None:
    assert required_acks(CONSISTENCY_ONE, replicas) == one
    assert required_acks(CONSISTENCY_QUORUM, replicas) == quorum
    assert required_acks(CONSISTENCY_ALL, replicas) == all_


def test_an_unknown_consistency_level_means_quorum() -> None:
    assert required_acks(0, 3) == 2


# -- ownership ---------------------------------------------------------------------


def test_owners_follow_the_placement_of_the_current_epoch() -> None:
    view = ClusterView("a", ring("a", "b", "c"))
    placement = Placement.current(view.topology)
    assert all(view.owners(k) == placement.replicas(k) for k in KEYS)
    assert all(len(view.owners(k)) == 2 for k in KEYS)


def test_check_owner_returns_the_owners_of_keys_this_node_holds() -> None:
    view = ClusterView("a", ring("a", "b", "c"))
    mine = [k for k in KEYS if "a" in view.owners(k)][:5]
    assert view.check_owner(mine) == [view.owners(k) for k in mine]
    assert view.check_owner([]) == []


def test_check_owner_raises_not_owner_with_epoch_and_owners() -> None:
    view = ClusterView("a", ring("a", "b", "c", epoch=7))
    other = key_not_owned_by(view, "a")
    with pytest.raises(NotOwner) as caught:
        view.check_owner([key_owned_by(view, "a"), other])
    error = caught.value
    assert error.epoch == 7
    assert error.retriable and error.refresh_routing
    assert f"in epoch 7 (owners: {', '.join(view.owners(other))})" in str(error)
    assert repr(other) in str(error)


def test_a_node_out_of_the_ring_owns_nothing() -> None:
    t = ring("a", "b").evolve(
        nodes=(
            NodeInfo("a", "a:1"),
            NodeInfo("b", "b:1"),
            NodeInfo("x", "x:1", 1.0, NodeState.DRAINING),
        )
    )
    view = ClusterView("x", t)
    with pytest.raises(NotOwner, match=r"node x does not own"):
        view.check_owner([KEYS[0]])


def test_an_empty_ring_lists_no_owners() -> None:
    view = ClusterView("a", Topology(3, 1, (), partitions=PARTITIONS))
    with pytest.raises(NotOwner, match=r"owners: none"):
        view.check_owner([b"k"])


def test_long_keys_are_cut_in_the_message() -> None:
    view = ClusterView("zz", ring("a", "b"))
    with pytest.raises(NotOwner) as caught:
        view.check_owner([b"x" * 1000])
    assert repr(b"x" * 64) in str(caught.value) and "x" * 65 not in str(caught.value)


@settings(max_examples=100)
@given(key=st.binary(min_size=1, max_size=40), me=st.sampled_from("abcd"))
def test_check_owner_passes_exactly_for_replicas(key: bytes, me: str) -> None:
    view = ClusterView(me, ring("a", "b", "c", rf=2))
    if me in view.owners(key):
        assert view.check_owner([key]) == [view.owners(key)]
        assert view.check_owner_of(key) == view.owners(key)
    else:
        with pytest.raises(NotOwner):
            view.check_owner([key])
        with pytest.raises(NotOwner, match=f"owners: {', '.join(view.owners(key))}"):
            view.check_owner_of(key)


def test_standalone_owns_every_key() -> None:
    view = ClusterView("solo", standalone("solo", "127.0.0.1:7400"))
    assert view.epoch == 1
    assert view.check_owner(KEYS) == [("solo",)] * len(KEYS)
    assert view.address("solo") == "127.0.0.1:7400"


# -- updates and settling ----------------------------------------------------------


def test_update_takes_only_newer_epochs() -> None:
    first = ring("a", "b", epoch=5)
    view = ClusterView("a", first)
    assert not view.update(ring("a", "b", "c", epoch=5))
    assert not view.update(ring("a", "c", epoch=4))
    assert view.topology is first and view.epoch == 5
    newer = ring("a", "b", "c", epoch=6)
    assert view.update(newer)
    assert view.topology is newer and view.epoch == 6
    assert all(view.owners(k) == Placement.current(newer).replicas(k) for k in KEYS)


def test_update_settles_at_once_without_a_previous_ring() -> None:
    view = ClusterView("a", ring("a", epoch=1))
    assert view.update(ring("a", "b", epoch=2))
    assert not view.settling and view.previous is None
    assert view.previous_owners(KEYS[0]) == ()


def test_update_with_a_previous_ring_is_settling_and_knows_previous_owners() -> None:
    view = ClusterView("c", ring("a", "b", epoch=1, rf=1))
    t = ring("a", "b", "c", epoch=2, rf=1, previous=("a", "b"))
    assert view.update(t)
    assert view.settling
    previous = Placement.previous(t)
    assert previous is not None
    moved = [k for k in KEYS if view.owners(k) == ("c",)]
    assert moved  # c took over some keys
    for key in moved:
        assert view.previous_owners(key) == previous.replicas(key)
        assert view.previous_owners(key) != ()


def test_previous_owners_leave_this_node_out() -> None:
    view = ClusterView("a", ring("a", "b", epoch=1))
    assert view.update(ring("a", "b", "c", epoch=2, rf=2, previous=("a", "b")))
    # rf 2 over a and b: both held every key; a asks only b.
    assert {view.previous_owners(k) for k in KEYS} == {("b",)}


def test_previous_owners_use_the_previous_replication_factor() -> None:
    view = ClusterView("z", ring("a", epoch=1))
    t = ring("a", "b", "c", epoch=2, rf=1, previous=("a", "b", "c"))
    assert view.update(t.evolve(previous_replication_factor=3))
    assert all(len(view.previous_owners(k)) == 3 for k in KEYS)


def test_previous_owners_are_empty_once_settled() -> None:
    view = ClusterView("c", ring("a", "b", epoch=1))
    assert view.update(ring("a", "b", "c", epoch=2, previous=("a", "b")))
    assert any(view.previous_owners(k) for k in KEYS)
    view.settling = False
    assert all(view.previous_owners(k) == () for k in KEYS)


def test_a_later_topology_without_previous_ring_ends_settling() -> None:
    view = ClusterView("c", ring("a", "b", epoch=1))
    assert view.update(ring("a", "b", "c", epoch=2, previous=("a", "b")))
    assert view.update(ring("a", "b", "c", epoch=3))
    assert not view.settling
    assert all(view.previous_owners(k) == () for k in KEYS)


def test_address_covers_nodes_of_the_previous_ring() -> None:
    view = ClusterView("a", ring("a", epoch=1))
    assert view.update(ring("a", epoch=2, previous=("a", "gone")))
    assert view.address("gone") == "gone:7400"
    assert view.address("never") is None
