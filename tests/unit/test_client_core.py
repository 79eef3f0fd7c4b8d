"""The client: the sans-IO core driven by hand, and both faces against a fake node."""

from __future__ import annotations

import asyncio
import time
import types
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import grpc
import grpc.aio
import pytest
from google.protobuf.message import Message
from hypothesis import given
from hypothesis import strategies as st

import memcluster.client
from memcluster.client import (
    JSON,
    STR,
    AsyncClient,
    Client,
    Consistency,
    Entry,
    InternalError,
    InvalidRequest,
    NodeInfo,
    NodeState,
    NotOwner,
    Topology,
    Unavailable,
)
from memcluster.client._core import Call, Core, Op, Parallel, Sleep
from memcluster.client._options import ClientOptions, build_options
from memcluster.client._retry import RetryPolicy
from memcluster.client._ring import RingRouter
from memcluster.client._routing import StaticRouter, make_router
from memcluster.client._wire import chunks
from memcluster.common import errors
from memcluster.common.errors import MemclusterError, from_rpc_error
from memcluster.common.placement import Placement
from memcluster.wire import items_pb2, node_pb2, node_pb2_grpc, topology_pb2, topology_pb2_grpc

ADDRESS = "node-a:7000"


# -- driving the core by hand ---------------------------------------------------


class FakeRpcError(grpc.RpcError, grpc.Call):
    """What a sync grpc call raises, carrying a memcluster error's code and metadata."""

    def __init__(self, error: MemclusterError) -> None:
        self._error = error

    def code(self) -> grpc.StatusCode:
        return self._error.code

    def details(self) -> str:
        return self._error.message

    def trailing_metadata(self) -> Any:
        return errors.trailing_metadata(self._error)

    def initial_metadata(self) -> Any:
        return ()

    def is_active(self) -> bool:
        return False

    def time_remaining(self) -> float:
        return 0.0

    def cancel(self) -> bool:
        return False

    def add_callback(self, callback: Any) -> bool:
        return False


Handler = Callable[[Call], Message]
Effect = Call | Parallel | Sleep


def drive(
    op: Op[Any], handler: Handler, effects: list[Effect] | None = None
) -> tuple[Any, list[Effect]]:
    """Run ``op`` to completion, answering its calls with ``handler``; record effects.

    Pass ``effects`` to keep the record when the operation raises.
    """
    effects = [] if effects is None else effects
    reply: Any = None
    failure: grpc.RpcError | None = None
    while True:
        try:
            effect = op.send(reply) if failure is None else op.throw(failure)
        except StopIteration as done:
            return done.value, effects
        effects.append(effect)
        reply, failure = None, None
        if isinstance(effect, Call):
            try:
                reply = handler(effect)
            except grpc.RpcError as exc:
                failure = exc
        elif isinstance(effect, Parallel):
            reply = [outcome(handler, call) for call in effect.calls]


def outcome(handler: Handler, call: Call) -> Message | grpc.RpcError:
    try:
        return handler(call)
    except grpc.RpcError as exc:
        return exc


def calls(effects: Sequence[Effect]) -> list[Call]:
    """Every call made, those of Parallel effects included."""
    out: list[Call] = []
    for e in effects:
        if isinstance(e, Call):
            out.append(e)
        elif isinstance(e, Parallel):
            out.extend(e.calls)
    return out


def sleeps(effects: Sequence[Effect]) -> list[float]:
    return [e.seconds for e in effects if isinstance(e, Sleep)]


def no_io(call: Call) -> Message:
    raise AssertionError(f"unexpected I/O: {call}")


def make_core(
    codec: Any = None,
    *,
    router: Any = None,
    clock: Callable[[], float] = lambda: 0.0,
    **options: Any,
) -> Core[Any]:
    return Core(
        router or StaticRouter(ADDRESS),
        codec or memcluster.client.BYTES,
        ClientOptions(**options),
        random=lambda: 0.0,
        clock=clock,
    )


def found(value: bytes, **fields: Any) -> node_pb2.Entry:
    return node_pb2.Entry(found=True, value=value, **fields)


# -- request building and validation ----------------------------------------------


def test_put_builds_the_request_and_returns_the_version() -> None:
    core = make_core(timeout=2.5)
    op = core.put("ключ", b"v", ttl=30, priority=-7, consistency=None)
    version, effects = drive(op, lambda call: node_pb2.PutResponse(version=42))
    assert version == 42
    [call] = calls(effects)
    assert (call.address, call.service, call.method, call.timeout) == (ADDRESS, "Node", "Put", 2.5)
    assert isinstance(call.request, node_pb2.PutRequest)
    item = call.request.item
    assert item.key == "ключ".encode()
    assert (item.value, item.ttl_seconds, item.priority) == (b"v", 30.0, -7)
    assert call.request.consistency == items_pb2.QUORUM
    assert call.request.epoch == 0


def test_put_without_ttl_leaves_the_field_absent_and_consistency_overrides() -> None:
    core = make_core(write_consistency=Consistency.ALL)
    _, effects = drive(
        core.put(b"k", b"v", ttl=None, priority=0, consistency="One"),
        lambda call: node_pb2.PutResponse(),
    )
    request = calls(effects)[0].request
    assert isinstance(request, node_pb2.PutRequest)
    assert not request.item.HasField("ttl_seconds")
    assert request.consistency == items_pb2.ONE
    _, effects = drive(core.delete(b"k", consistency=None), lambda c: node_pb2.DeleteResponse())
    assert calls(effects)[0].request.consistency == items_pb2.ALL  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"key": b""}, "must not be empty"),
        ({"key": ""}, "must not be empty"),
        ({"key": 7}, "bytes or str, got int"),
        ({"key": bytearray(b"k")}, "bytes or str, got bytearray"),
        ({"value": "text"}, "cannot encode value with BYTES"),
        ({"ttl": 0}, "> 0"),
        ({"ttl": -1.5}, "> 0"),
        ({"ttl": float("nan")}, "finite"),
        ({"ttl": float("inf")}, "finite"),
        ({"ttl": "10"}, "number of seconds"),
        ({"ttl": True}, "number of seconds"),
        ({"priority": 32768}, r"\[-32768, 32767\]"),
        ({"priority": -32769}, r"\[-32768, 32767\]"),
        ({"priority": 1.0}, "must be an int"),
        ({"priority": False}, "must be an int"),
        ({"consistency": "twice"}, "'one', 'quorum', 'all'"),
        ({"consistency": 2}, "str or Consistency"),
    ],
)
def test_put_validates_before_any_io(kwargs: dict[str, Any], message: str) -> None:
    args: dict[str, Any] = {
        "key": b"k",
        "value": b"v",
        "ttl": None,
        "priority": 0,
        "consistency": None,
    } | kwargs
    key, value = args.pop("key"), args.pop("value")
    with pytest.raises(InvalidRequest, match=message):
        drive(make_core().put(key, value, **args), no_io)


def test_priority_bounds_are_inclusive() -> None:
    for priority in (-32768, 32767):
        drive(
            make_core().put(b"k", b"v", ttl=None, priority=priority, consistency=None),
            lambda call: node_pb2.PutResponse(),
        )


def test_batches_validate_every_item_before_any_io() -> None:
    core = make_core()
    with pytest.raises(InvalidRequest, match="not be empty"):
        drive(core.get_many([b"a"] * 5000 + [b""], consistency=None), no_io)
    with pytest.raises(InvalidRequest, match="cannot encode"):
        drive(
            core.put_many([(b"a", b"1"), (b"b", 2)], ttl=None, priority=0, consistency=None), no_io
        )
    with pytest.raises(InvalidRequest, match="pairs"):
        drive(core.put_many([b"ab"], ttl=None, priority=0, consistency=None), no_io)  # type: ignore[arg-type]
    with pytest.raises(InvalidRequest, match="ttl"):
        drive(core.put_many({b"a": b"1"}, ttl=-1, priority=0, consistency=None), no_io)


def test_touch_sets_or_clears_expiry_and_keeps_priority_unless_given() -> None:
    core = make_core()
    result, effects = drive(
        core.touch("k", ttl=None, priority=None), lambda c: node_pb2.TouchResponse(found=True)
    )
    request = calls(effects)[0].request
    assert result is True
    assert isinstance(request, node_pb2.TouchRequest)
    assert not request.HasField("ttl_seconds")
    assert not request.HasField("priority")
    _, effects = drive(core.touch(b"k", ttl=5, priority=3), lambda c: node_pb2.TouchResponse())
    request = calls(effects)[0].request
    assert isinstance(request, node_pb2.TouchRequest)
    assert (request.ttl_seconds, request.priority) == (5.0, 3)
    with pytest.raises(InvalidRequest, match="> 0"):
        drive(core.touch(b"k", ttl=0, priority=None), no_io)


# -- response decoding ---------------------------------------------------------


def test_get_decodes_through_the_codec_and_missing_is_none() -> None:
    core = make_core(JSON)
    value, _ = drive(
        core.get("k", consistency=None),
        lambda c: node_pb2.GetResponse(entry=found(b'{"a":[1,2]}')),
    )
    assert value == {"a": [1, 2]}
    value, _ = drive(core.get("k", consistency=None), lambda c: node_pb2.GetResponse())
    assert value is None


def test_get_entry_decodes_metadata() -> None:
    core = make_core(STR)
    pb = found(
        b"hello", expires_at_ms=1_700_000_000_250, priority=-3, version=99, tier=items_pb2.WARM
    )
    entry, _ = drive(
        core.get_entry(b"k", consistency=None), lambda c: node_pb2.GetResponse(entry=pb)
    )
    assert entry == Entry(
        value="hello", version=99, expires_at=1_700_000_000.25, priority=-3, tier="warm"
    )
    entry, _ = drive(
        core.get_entry(b"k", consistency=None),
        lambda c: node_pb2.GetResponse(entry=found(b"x")),
    )
    assert entry is not None
    assert (entry.expires_at, entry.tier) == (None, "unknown")


def test_stats_and_topology_decode_to_plain_data() -> None:
    core = make_core()
    stats_pb = node_pb2.StatsResponse(
        node_id="n1",
        epoch=4,
        tiers=[node_pb2.TierStats(tier=items_pb2.HOT, enabled=True, items=2, bytes=300)],
        counters={"rss_bytes": 1e6},
    )
    stats, effects = drive(core.stats(), lambda c: stats_pb)
    assert calls(effects)[0].method == "Stats"
    assert stats["node_id"] == "n1"
    assert stats["epoch"] == 4
    assert stats["tiers"]["hot"]["items"] == 2
    assert stats["tiers"]["hot"]["bytes"] == 300
    assert stats["counters"] == {"rss_bytes": 1e6}

    topo_pb = topology_pb2.Topology(
        epoch=9,
        replication_factor=3,
        nodes=[
            topology_pb2.NodeInfo(id="a", address="h:1", weight=1.5, state=topology_pb2.UP),
            topology_pb2.NodeInfo(id="b", address="h:2", weight=1.0),
        ],
    )
    topo, effects = drive(core.topology(), lambda c: topo_pb)
    assert (calls(effects)[0].service, calls(effects)[0].method) == (
        "TopologyService",
        "GetTopology",
    )
    # An unspecified state reads as DOWN: such a node is never routed to.
    assert topo == Topology(
        epoch=9,
        replication_factor=3,
        nodes=(NodeInfo("a", "h:1", 1.5, NodeState.UP), NodeInfo("b", "h:2", 1.0, NodeState.DOWN)),
    )


def test_a_batch_answered_with_the_wrong_count_is_an_internal_error() -> None:
    with pytest.raises(InternalError, match="1 values for a batch of 2"):
        drive(
            make_core().get_many([b"a", b"b"], consistency=None),
            lambda c: node_pb2.GetManyResponse(found=[False], values=[b""]),
        )


# -- retries -------------------------------------------------------------------


def failing(*script: MemclusterError | Message) -> Handler:
    """A handler that answers from ``script`` in order (errors are raised)."""
    replies = list(script)

    def handle(call: Call) -> Message:
        reply = replies.pop(0)
        if isinstance(reply, MemclusterError):
            raise FakeRpcError(reply)
        return reply

    return handle


def test_retriable_errors_are_retried_with_backoff() -> None:
    core = make_core(backoff=0.1, max_backoff=1.0)
    handler = failing(Unavailable("down"), errors.Timeout("slow"), node_pb2.PutResponse(version=1))
    version, effects = drive(core.put(b"k", b"v", ttl=None, priority=0, consistency=None), handler)
    assert version == 1
    assert [type(e) for e in effects] == [Call, Sleep, Call, Sleep, Call]
    # random() pinned at 0: each delay is the low end, half the growing cap.
    assert sleeps(effects) == [0.05, 0.1]


def test_non_retriable_errors_raise_at_once_from_the_rpc_error() -> None:
    core = make_core()
    op = core.put(b"k", b"v", ttl=None, priority=0, consistency=None)
    with pytest.raises(errors.CapacityExceeded, match="too big") as info:
        drive(op, failing(errors.CapacityExceeded("too big", epoch=3)))
    assert isinstance(info.value.__cause__, FakeRpcError)
    assert info.value.epoch == 3


def test_retries_stop_after_max_retries() -> None:
    core = make_core(max_retries=2)
    handler = failing(*[Unavailable("down")] * 3)
    with pytest.raises(Unavailable) as info:
        drive(core.get(b"k", consistency=None), handler)
    assert isinstance(info.value.__cause__, grpc.RpcError)
    with pytest.raises(Unavailable):
        drive(make_core(max_retries=0).get(b"k", consistency=None), failing(Unavailable("x")))


def test_retry_count_matches_effects() -> None:
    core = make_core(max_retries=3)
    effects: list[Call | Sleep] = []
    op = core.get(b"k", consistency=None)
    with pytest.raises(Unavailable):
        # Record as we go: drive() loses its log when the operation raises.
        def handler(call: Call) -> Message:
            effects.append(call)
            raise FakeRpcError(Unavailable("down"))

        drive(op, handler)
    assert len(effects) == 4


@given(
    retries_done=st.integers(min_value=0, max_value=200),
    jitter=st.floats(min_value=0.0, max_value=1.0, exclude_max=True),
    backoff=st.floats(min_value=0.0, max_value=2.0),
    extra=st.floats(min_value=0.0, max_value=10.0),
)
def test_backoff_stays_within_its_bounds(
    retries_done: int, jitter: float, backoff: float, extra: float
) -> None:
    max_backoff = backoff + extra
    policy = RetryPolicy(3, backoff, max_backoff, random=lambda: jitter)
    cap = min(max_backoff, backoff * 2.0 ** min(retries_done, 32))
    delay = policy.delay(retries_done)
    assert cap / 2 <= delay <= cap <= max_backoff


def test_retry_decisions_follow_the_error_flags() -> None:
    policy = RetryPolicy(2, 0.05, 1.0)
    assert policy.should_retry(Unavailable("x"), 0)
    assert policy.should_retry(NotOwner("x"), 1)
    assert not policy.should_retry(Unavailable("x"), 2)
    assert not policy.should_retry(InvalidRequest("x"), 0)
    assert not policy.should_retry(InternalError("x"), 0)


def test_not_owner_with_the_static_router_just_retries() -> None:
    core = make_core()
    handler = failing(NotOwner("moved"), node_pb2.GetResponse())
    _, effects = drive(core.get(b"k", consistency=None), handler)
    assert [c.method for c in calls(effects)] == ["Get", "Get"]


def test_aio_errors_map_with_their_metadata() -> None:
    exc = grpc.aio.AioRpcError(
        grpc.StatusCode.FAILED_PRECONDITION,
        grpc.aio.Metadata(),
        grpc.aio.Metadata(*errors.trailing_metadata(NotOwner("x", epoch=8))),
        details="not mine",
        debug_error_string="",
    )
    error = from_rpc_error(exc)
    assert isinstance(error, NotOwner)
    assert (error.message, error.epoch) == ("not mine", 8)
    assert isinstance(from_rpc_error(FakeRpcError(Unavailable("u"))), Unavailable)


# -- batching --------------------------------------------------------------------


def many(
    request: Any, entries: list[node_pb2.Entry], epoch: int = 0, *, flags: bool = False
) -> node_pb2.GetManyResponse:
    """A GetMany answer in the form the request asked for (values only, or entries), as
    a node answers it: values-only found flags are left out when every key was found and
    the request allows it, unless ``flags`` (a node that predates found_only_on_miss)."""
    if request.values_only:
        found = [e.found for e in entries]
        if request.found_only_on_miss and all(found) and not flags:
            found = []
        return node_pb2.GetManyResponse(found=found, values=[e.value for e in entries], epoch=epoch)
    return node_pb2.GetManyResponse(entries=entries, epoch=epoch)


def fake_get_many(store: dict[bytes, bytes], *, flags: bool = False) -> Handler:
    def handle(call: Call) -> Message:
        assert isinstance(call.request, node_pb2.GetManyRequest)
        keys = call.request.keys
        entries = [found(store[k]) if k in store else node_pb2.Entry() for k in keys]
        return many(call.request, entries, flags=flags)

    return handle


@pytest.mark.parametrize("flags", [False, True], ids=["flags-left-out", "flags-always"])
def test_get_many_reads_answers_with_or_without_found_flags(flags: bool) -> None:
    """All found (no flags from a node that knows found_only_on_miss), or a miss."""
    core = make_core()
    store = {b"a": b"1", b"b": b"2"}
    handler = fake_get_many(store, flags=flags)
    result, effects = drive(core.get_many([b"a", b"b"], consistency=None), handler)
    assert result == {b"a": b"1", b"b": b"2"}
    assert all(c.request.found_only_on_miss for c in calls(effects))
    result, _ = drive(core.get_many([b"b", b"zz", b"a"], consistency=None), handler)
    assert result == {b"b": b"2", b"a": b"1"} and list(result) == [b"b", b"a"]


def test_get_many_chunks_by_count_and_returns_the_callers_keys() -> None:
    core = make_core()
    keys = [f"k{i}" for i in range(2500)]
    store = {k.encode(): k.upper().encode() for k in keys[::2]}
    result, effects = drive(core.get_many(keys, consistency=None), fake_get_many(store))
    assert [len(c.request.keys) for c in calls(effects)] == [1000, 1000, 500]  # type: ignore[attr-defined]
    assert result == {k: k.upper().encode() for k in keys[::2]}


def test_get_many_sends_each_key_once_and_answers_every_spelling() -> None:
    core = make_core()
    result, effects = drive(
        core.get_many(["a", b"a", "a", b"missing"], consistency=None),
        fake_get_many({b"a": b"1"}),
    )
    assert list(calls(effects)[0].request.keys) == [b"a", b"missing"]  # type: ignore[attr-defined]
    assert result == {"a": b"1", b"a": b"1"}


def test_get_many_answers_in_request_order_without_the_misses() -> None:
    core = make_core(batch_items=2)
    keys = [b"c", b"a", b"x", b"b", b"a", b"y"]
    result, _ = drive(
        core.get_many(keys, consistency=None), fake_get_many({b"a": b"1", b"b": b"2", b"c": b"3"})
    )
    assert list(result.items()) == [(b"c", b"3"), (b"a", b"1"), (b"b", b"2")]


def test_get_many_keeps_a_decoded_value_that_is_none() -> None:
    core = make_core(memcluster.client.JSON)
    result, _ = drive(
        core.get_many(["n", "gone"], consistency=None), fake_get_many({b"n": b"null"})
    )
    assert result == {"n": None}


def test_get_many_decodes_with_the_codec_and_chunks_keys_by_bytes() -> None:
    core = make_core(memcluster.client.STR, batch_bytes=1000)
    keys = [b"k%03d" % i for i in range(300)]  # 12 bytes each in a request: 3 requests
    store = {k: "é".encode() * 2 for k in keys[::3]}
    result, effects = drive(core.get_many(keys, consistency=None), fake_get_many(store))
    assert [len(c.request.keys) for c in calls(effects)] == [83, 83, 83, 51]  # type: ignore[attr-defined]
    assert result == {k: "éé" for k in keys[::3]}


def test_empty_batches_make_no_calls() -> None:
    core = make_core()
    assert drive(core.get_many([], consistency=None), no_io) == ({}, [])
    assert drive(core.put_many({}, ttl=None, priority=0, consistency=None), no_io) == (None, [])
    assert drive(core.delete_many([], consistency=None), no_io) == (0, [])


def test_put_many_chunks_by_bytes_and_last_value_wins() -> None:
    core = make_core(batch_bytes=1000)
    items = [(f"k{i}", bytes(300)) for i in range(7)] + [("k0", b"latest"), ("big", bytes(5000))]
    sent: list[list[node_pb2.PutItem]] = []

    def handle(call: Call) -> Message:
        assert isinstance(call.request, node_pb2.PutManyRequest)
        sent.append(list(call.request.items))
        return node_pb2.PutManyResponse(versions=[1] * len(call.request.items))

    drive(core.put_many(items, ttl=60, priority=2, consistency="all"), handle)
    # ~334 bytes per 300-byte item (key, overhead), ~40 for k0's final 6-byte value;
    # the 5000-byte item exceeds the budget and travels alone.
    assert [len(batch) for batch in sent] == [3, 2, 2, 1]
    flat = [item for batch in sent for item in batch]
    assert [i.key for i in flat] == [f"k{i}".encode() for i in range(7)] + [b"big"]
    assert flat[0].value == b"latest"
    assert all(i.ttl_seconds == 60 and i.priority == 2 for i in flat)


def test_delete_many_counts_existing_keys_once() -> None:
    core = make_core(batch_items=2)

    def handle(call: Call) -> Message:
        assert isinstance(call.request, node_pb2.DeleteManyRequest)
        return node_pb2.DeleteManyResponse(existed=[k != b"c" for k in call.request.keys])

    count, effects = drive(core.delete_many(["a", b"a", "b", "c"], consistency=None), handle)
    assert count == 2
    assert len(calls(effects)) == 2


@given(
    sizes=st.lists(st.integers(min_value=0, max_value=50), max_size=60),
    max_items=st.integers(min_value=1, max_value=10),
    max_bytes=st.integers(min_value=1, max_value=120),
)
def test_chunks_keep_order_and_limits(sizes: list[int], max_items: int, max_bytes: int) -> None:
    pieces = list(chunks(sizes, lambda n: n, max_items, max_bytes))
    assert [n for piece in pieces for n in piece] == sizes
    for piece in pieces:
        assert 1 <= len(piece) <= max_items
        assert len(piece) == 1 or sum(piece) <= max_bytes


# -- routing in a cluster ----------------------------------------------------------


def topology(epoch: int, *ids: str, rf: int = 1, **states: NodeState) -> Topology:
    """A topology of nodes ``ids`` at ``<id>:7400`` (UP unless ``states`` says otherwise)."""
    nodes = tuple(NodeInfo(i, f"{i}:7400", 1.0, states.get(i, NodeState.UP)) for i in ids)
    return Topology(epoch=epoch, replication_factor=rf, nodes=nodes, partitions=64)


def addresses(t: Topology, key: bytes) -> tuple[str, ...]:
    """Where a key lives in ``t``, worked out by the shared placement, primary first."""
    return tuple(f"{i}:7400" for i in Placement.current(t).replicas(key))


class FakeCluster:
    """Answers a core's calls as a cluster would: serves its topology, refuses keys a
    node does not own (NotOwner), keeps one store per node, and can have nodes down."""

    def __init__(self, t: Topology) -> None:
        self.topology = t
        self.down: set[str] = set()
        self.stores: dict[str, dict[bytes, bytes]] = {}
        self.served_epoch: int | None = None  # what responses say (default: the topology's)

    def __call__(self, call: Call) -> Message:
        if call.address in self.down:
            raise FakeRpcError(Unavailable(f"{call.address}: connection refused"))
        t = self.topology
        epoch = self.served_epoch or t.epoch
        if call.service == "TopologyService":
            return t.to_wire()
        request: Any = call.request
        if call.method == "Stats":
            return node_pb2.StatsResponse(node_id=call.address, epoch=epoch)
        keys = _keys(call.method, request)
        node = call.address.removesuffix(":7400")
        placement = Placement.current(t)
        if any(node not in placement.replicas(k) for k in keys):
            raise FakeRpcError(NotOwner(f"{node} does not own every key", epoch=t.epoch))
        store = self.stores.setdefault(call.address, {})
        if call.method == "Get":
            pb = found(store[request.key]) if request.key in store else node_pb2.Entry()
            return node_pb2.GetResponse(entry=pb, epoch=epoch)
        if call.method == "GetMany":
            entries = [found(store[k]) if k in store else node_pb2.Entry() for k in keys]
            return many(request, entries, epoch)
        if call.method in ("Put", "PutMany"):
            items = [request.item] if call.method == "Put" else list(request.items)
            for item in items:  # the receiving owner replicates to the others that are up
                for address in set(addresses(t, item.key)) - self.down:
                    self.stores.setdefault(address, {})[item.key] = item.value
            if call.method == "Put":
                return node_pb2.PutResponse(version=1, epoch=epoch)
            return node_pb2.PutManyResponse(versions=[1] * len(items), epoch=epoch)
        existed = [k in store for k in keys]
        for k in keys:
            for address in addresses(t, k):
                self.stores.get(address, {}).pop(k, None)
        if call.method == "Delete":
            return node_pb2.DeleteResponse(existed=existed[0], epoch=epoch)
        return node_pb2.DeleteManyResponse(existed=existed, epoch=epoch)

    def holder(self, key: bytes) -> list[str]:
        return sorted(a for a, store in self.stores.items() if key in store)


def _keys(method: str, request: Any) -> list[bytes]:
    if method in ("GetMany", "DeleteMany"):
        return list(request.keys)
    if method == "PutMany":
        return [i.key for i in request.items]
    return [request.item.key if method == "Put" else request.key]


def ring_core(cluster: FakeCluster, *seeds: str, **options: Any) -> Core[Any]:
    """A core on a RingRouter, bootstrapped from ``seeds`` (by hand, against ``cluster``)."""
    core = make_core(router=RingRouter(seeds or ("a:7400",)), **options)
    drive(core.topology(), cluster)
    return core


def put(core: Core[Any], key: bytes, value: bytes = b"v") -> Op[int]:
    return core.put(key, value, ttl=None, priority=0, consistency=None)


def test_ring_router_routes_by_placement_and_swaps_only_for_newer_epochs() -> None:
    router = RingRouter(["seed:1", "seed:2"])
    assert (router.epoch, router.topology) == (0, None)
    assert router.replicas(b"k") == ("seed:1", "seed:2")  # no ring yet
    assert {router.any_address() for _ in range(4)} == {"seed:1", "seed:2"}
    t = topology(3, "a", "b", "c", "d", rf=2, d=NodeState.DRAINING)
    assert router.update(t)
    for key in (b"k", b"user:1", b"{user1}.a"):
        assert tuple(router.replicas(key)) == addresses(t, key)
        assert len(set(router.replicas(key))) == 2
    # Calls about the cluster rotate over ring members, never the draining node.
    assert {router.any_address() for _ in range(6)} == {"a:7400", "b:7400", "c:7400"}
    assert set(router.sources()) == {"a:7400", "b:7400", "c:7400", "seed:1", "seed:2"}
    assert list(router.sources())[-2:] == ["seed:1", "seed:2"]
    assert not router.update(topology(3, "x"))
    assert not router.update(topology(2, "x"))
    assert router.topology is t
    assert router.update(topology(4, "x"))
    assert router.replicas(b"k") == ("x:7400",)
    # A cluster rebuilt from scratch restarts its epochs.
    rebuilt = Topology(epoch=1, replication_factor=1, nodes=(NodeInfo("y", "y:1"),), cluster="new")
    assert router.update(rebuilt)
    assert router.replicas(b"k") == ("y:1",)


def test_requests_try_a_joining_replica_last() -> None:
    t = topology(5, "a", "b", "c", "d", rf=2, d=NodeState.JOINING)
    router = RingRouter(["a:7400"])
    router.update(t)
    keys = [f"user{i}".encode() for i in range(200)]
    led_by_d = [k for k in keys if addresses(t, k)[0] == "d:7400"]
    assert led_by_d  # the joining node is the placement's primary of some keys
    for key in keys:
        where = addresses(t, key)
        assert tuple(router.replicas(key)) == tuple(
            sorted(where, key=lambda a: a == "d:7400")  # stable: the others keep their order
        )
    assert router.replicas_many(keys) == [router.replicas(k) for k in keys]

    cluster = FakeCluster(t)
    core = ring_core(cluster)
    key = led_by_d[0]
    other = addresses(t, key)[1]
    # Reads and writes alike go to the replica that is not joining: a write reaches
    # the joining one through it.
    _, effects = drive(put(core, key), cluster)
    assert [e.address for e in effects if isinstance(e, Call)] == [other]
    _, effects = drive(core.get(key, consistency=None), cluster)
    assert [e.address for e in effects if isinstance(e, Call)] == [other]
    writes = dict.fromkeys(led_by_d, b"v")
    batches = (
        core.get_many(led_by_d, consistency=None),
        core.put_many(writes, ttl=None, priority=0, consistency=None),
    )
    for many in batches:
        _, effects = drive(many, cluster)
        calls = [c for e in effects if isinstance(e, Parallel) for c in e.calls]
        calls += [e for e in effects if isinstance(e, Call) and e.service == "Node"]
        assert calls and "d:7400" not in {c.address for c in calls}
    # Once it is UP, the node leads its keys again.
    core.dispatch.router.update(topology(6, "a", "b", "c", "d", rf=2))
    assert tuple(core.dispatch.router.replicas(key)) == addresses(t, key)
    _, effects = drive(core.get(key, consistency=None), cluster)
    assert [e.address for e in effects if isinstance(e, Call)][-1] == "d:7400"
    _, effects = drive(put(core, key), cluster)
    assert [e.address for e in effects if isinstance(e, Call)][-1] == "d:7400"


def test_an_empty_ring_routes_to_the_bootstrap_nodes() -> None:
    router = RingRouter(["seed:1"])
    router.update(topology(1, "a", a=NodeState.DOWN))
    assert router.replicas(b"k") == ("seed:1",)
    assert router.any_address() == "seed:1"


def test_the_core_bootstraps_once_from_the_first_node_that_answers() -> None:
    cluster = FakeCluster(topology(1, "a", "b", "c"))
    cluster.down.add("seed-1:7400")
    core = make_core(router=RingRouter(["seed-1:7400", "b:7400"]))
    _, effects = drive(put(core, b"k"), cluster)
    bootstrap = calls(effects)[:2]
    assert [(c.address, c.method) for c in bootstrap] == [
        ("seed-1:7400", "GetTopology"),
        ("b:7400", "GetTopology"),
    ]
    [request] = calls(effects)[2:]
    assert (request.address, request.method) == (addresses(cluster.topology, b"k")[0], "Put")
    assert request.request.epoch == 1  # type: ignore[attr-defined]
    assert sleeps(effects) == []
    _, effects = drive(put(core, b"k2"), cluster)
    assert [c.method for c in calls(effects)] == ["Put"]


def test_bootstrap_fails_with_unavailable_naming_every_address() -> None:
    cluster = FakeCluster(topology(1, "a"))
    cluster.down.update({"a:7400", "b:7400"})
    core = make_core(router=RingRouter(["a:7400", "b:7400"]))
    with pytest.raises(Unavailable, match=r"a:7400 \(.*refused.*\), b:7400") as info:
        drive(core.get(b"k", consistency=None), cluster)
    assert isinstance(info.value.__cause__, grpc.RpcError)


def test_a_standalone_node_is_a_cluster_of_one() -> None:
    cluster = FakeCluster(topology(1, "solo"))
    core = make_core(router=RingRouter(["solo:7400"]))
    drive(put(core, b"a"), cluster)
    drive(core.put_many({b"b": b"1", b"c": b"2"}, ttl=None, priority=0, consistency=None), cluster)
    assert sorted(cluster.stores["solo:7400"]) == [b"a", b"b", b"c"]


def test_each_key_goes_to_its_primary_with_the_routing_epoch() -> None:
    cluster = FakeCluster(topology(5, "a", "b", "c", rf=2))
    core = ring_core(cluster)
    for i in range(20):
        key = f"key-{i}".encode()
        _, effects = drive(put(core, key), cluster)
        [call] = calls(effects)
        assert call.address == addresses(cluster.topology, key)[0]
        assert call.request.epoch == 5  # type: ignore[attr-defined]


def test_not_owner_refreshes_from_the_refusing_node_and_reroutes_at_once() -> None:
    old = topology(1, "a", "b")
    cluster = FakeCluster(old)
    core = ring_core(cluster)
    cluster.topology = new = topology(2, "a", "b", "c")
    key = next(
        k
        for k in (f"k{i}".encode() for i in range(1000))
        if addresses(new, k) == ("c:7400",) and addresses(old, k) != ("c:7400",)
    )
    version, effects = drive(put(core, key), cluster)
    assert version == 1
    put_1, fetch, put_2 = calls(effects)
    assert (fetch.address, fetch.method) == (put_1.address, "GetTopology")
    assert fetch.request.known_epoch == 1  # type: ignore[attr-defined]
    assert (put_2.address, put_2.request.epoch) == ("c:7400", 2)  # type: ignore[attr-defined]
    assert sleeps(effects) == []  # the routing moved: no reason to wait
    assert core.router.epoch == 2


def test_three_redirects_in_a_row_fetch_the_topology_from_another_node() -> None:
    cluster = FakeCluster(topology(1, "a", "b", "c"))
    core = ring_core(cluster, max_retries=4)

    def refuse(call: Call) -> Message:
        # A confused node: refuses the key, yet serves the topology that sends it there.
        if call.method == "Put":
            raise FakeRpcError(NotOwner("not mine", epoch=1))
        return cluster(call)

    effects: list[Effect] = []
    with pytest.raises(NotOwner):
        drive(put(core, b"k"), refuse, effects)
    primary = addresses(cluster.topology, b"k")[0]
    fetched_from = [c.address for c in calls(effects) if c.method == "GetTopology"]
    assert fetched_from[:2] == [primary, primary]
    assert primary not in fetched_from[2:]
    assert len([c for c in calls(effects) if c.method == "Put"]) == 5
    # The topology did not change, so each retry backs off first.
    assert len(sleeps(effects)) == 4


def test_a_newer_epoch_in_a_response_refreshes_before_the_next_request() -> None:
    cluster = FakeCluster(topology(1, "a", "b"))
    core = ring_core(cluster)
    cluster.served_epoch = 2  # the node moved on; the topology it serves is epoch 2
    cluster.topology = topology(2, "a", "b")
    _, effects = drive(core.get(b"k", consistency=None), cluster)
    [get] = calls(effects)  # no extra I/O in this call
    _, effects = drive(core.get(b"k", consistency=None), cluster)
    fetch, get_2 = calls(effects)
    assert (fetch.address, fetch.method) == (get.address, "GetTopology")
    assert get_2.request.epoch == 2  # type: ignore[attr-defined]
    _, effects = drive(core.get(b"k", consistency=None), cluster)
    assert [c.method for c in calls(effects)] == ["Get"]


def test_a_failed_refresh_keeps_the_old_routing() -> None:
    cluster = FakeCluster(topology(1, "a"))
    core = ring_core(cluster)
    cluster.served_epoch = 2
    drive(core.get(b"k", consistency=None), cluster)

    def no_topology(call: Call) -> Message:
        if call.method == "GetTopology":
            raise FakeRpcError(Unavailable("busy"))
        return cluster(call)

    _, effects = drive(core.get(b"k", consistency=None), no_topology)
    assert [c.method for c in calls(effects)] == ["GetTopology", "Get"]
    assert core.router.epoch == 1


def test_static_routing_never_fetches_a_topology() -> None:
    cluster = FakeCluster(topology(1, "a"))
    cluster.served_epoch = 7
    core = make_core(router=StaticRouter("a:7400"))
    for _ in range(2):
        _, effects = drive(core.get(b"k", consistency=None), cluster)
        assert [c.method for c in calls(effects)] == ["Get"]


def test_reads_fail_over_to_replicas_and_avoid_a_failed_node_for_a_while() -> None:
    now = [100.0]
    cluster = FakeCluster(topology(1, "a", "b", "c", rf=3))
    core = ring_core(cluster, clock=lambda: now[0], suspect_seconds=1.0)
    primary, second, _ = addresses(cluster.topology, b"k")
    cluster.down.add(primary)
    _, effects = drive(core.get(b"k", consistency=None), cluster)
    assert [c.address for c in calls(effects)] == [primary, second]
    assert sleeps(effects) == []  # another node: no reason to wait
    _, effects = drive(core.get(b"k", consistency=None), cluster)
    assert [c.address for c in calls(effects)] == [second]
    now[0] += 1.5
    cluster.down.clear()
    _, effects = drive(core.get(b"k", consistency=None), cluster)
    assert [c.address for c in calls(effects)] == [primary]


def test_reads_fail_over_on_timeouts_too_and_cycle_back_after_every_replica() -> None:
    cluster = FakeCluster(topology(1, "a", "b", rf=2))
    core = ring_core(cluster, max_retries=3)
    primary, second = addresses(cluster.topology, b"k")
    effects: list[Effect] = []

    def slow(call: Call) -> Message:
        raise FakeRpcError(errors.Timeout("slow"))

    with pytest.raises(errors.Timeout):
        drive(core.get(b"k", consistency=None), slow, effects)
    assert [c.address for c in calls(effects)] == [primary, second, primary, primary]


def test_writes_fail_over_when_the_primary_is_unavailable_but_not_on_timeout() -> None:
    cluster = FakeCluster(topology(1, "a", "b", "c", rf=2))
    core = ring_core(cluster)
    primary, second = addresses(cluster.topology, b"k")
    cluster.down.add(primary)
    _, effects = drive(put(core, b"k"), cluster)
    assert [c.address for c in calls(effects)] == [primary, second]
    assert cluster.holder(b"k") == [second]  # the replica coordinated the write

    core = ring_core(FakeCluster(cluster.topology))
    script = failing(errors.Timeout("slow"), node_pb2.DeleteResponse(existed=True))
    _, effects = drive(core.delete(b"k", consistency=None), script)
    assert [c.address for c in calls(effects)] == [primary, primary]
    assert len(sleeps(effects)) == 1


def test_consistency_defaults_to_one_for_reads_and_quorum_for_writes() -> None:
    cluster = FakeCluster(topology(1, "a", "b", "c", rf=3))
    core = ring_core(cluster)
    levels = {}
    for name, op in [
        ("get", core.get(b"k", consistency=None)),
        ("get_many", core.get_many([b"k"], consistency=None)),
        ("put", put(core, b"k")),
        ("put_many", core.put_many({b"k": b"v"}, ttl=None, priority=0, consistency=None)),
        ("delete", core.delete(b"k", consistency=None)),
        ("delete_many", core.delete_many([b"k"], consistency=None)),
        ("get_all", core.get(b"k", consistency="all")),
    ]:
        _, effects = drive(op, cluster)
        levels[name] = calls(effects)[0].request.consistency  # type: ignore[attr-defined]
    assert levels == {
        "get": items_pb2.ONE,
        "get_many": items_pb2.ONE,
        "put": items_pb2.QUORUM,
        "put_many": items_pb2.QUORUM,
        "delete": items_pb2.QUORUM,
        "delete_many": items_pb2.QUORUM,
        "get_all": items_pb2.ALL,
    }
    custom = make_core(read_consistency=Consistency.QUORUM, write_consistency=Consistency.ONE)
    _, effects = drive(custom.get(b"k", consistency=None), lambda c: node_pb2.GetResponse())
    assert calls(effects)[0].request.consistency == items_pb2.QUORUM  # type: ignore[attr-defined]
    _, effects = drive(put(custom, b"k"), lambda c: node_pb2.PutResponse())
    assert calls(effects)[0].request.consistency == items_pb2.ONE  # type: ignore[attr-defined]


# -- fan-out -------------------------------------------------------------------------


def test_batches_fan_out_by_primary_in_one_parallel_effect_and_merge_in_order() -> None:
    cluster = FakeCluster(topology(1, "a", "b", "c", rf=2))
    core = ring_core(cluster)
    keys = [f"k{i}" for i in range(60)]
    _, effects = drive(
        core.put_many({k: k.encode() for k in keys}, ttl=None, priority=0, consistency=None),
        cluster,
    )
    [parallel] = effects
    assert isinstance(parallel, Parallel)
    assert sorted(c.address for c in parallel.calls) == ["a:7400", "b:7400", "c:7400"]
    for call in parallel.calls:
        assert all(
            addresses(cluster.topology, k)[0] == call.address
            for k in _keys("PutMany", call.request)
        )
    wanted = [*reversed(keys), "absent"]
    result, effects = drive(core.get_many(wanted, consistency=None), cluster)
    assert [type(e) for e in effects] == [Parallel]
    assert list(result) == wanted[:-1]  # request order, missing keys left out
    assert result == {k: k.encode() for k in keys}
    count, _ = drive(core.delete_many([*keys[:10], "absent"], consistency=None), cluster)
    assert count == 10


def test_fan_out_sends_at_most_max_parallel_calls_at_once() -> None:
    cluster = FakeCluster(topology(1, "a"))
    core = ring_core(cluster, batch_items=10, max_parallel=2)
    result, effects = drive(core.get_many([f"k{i}" for i in range(45)], consistency=None), cluster)
    assert [len(e.calls) for e in effects if isinstance(e, Parallel)] == [2, 2, 1]
    assert result == {}


def test_a_partial_not_owner_resplits_only_the_refused_keys() -> None:
    old = topology(1, "a", "b")
    cluster = FakeCluster(old)
    core = ring_core(cluster)
    cluster.topology = new = topology(2, "a", "b", "c")
    keys = [f"k{i}".encode() for i in range(200)]
    _, effects = drive(
        core.put_many({k: b"v" for k in keys}, ttl=None, priority=0, consistency=None), cluster
    )
    first, fetch, second = effects
    assert isinstance(first, Parallel)
    assert isinstance(fetch, Call)
    assert fetch.method == "GetTopology"
    assert isinstance(second, Parallel)
    # Both old nodes lost keys to c, so both refused; nothing else was sent twice.
    refused = {k for c in first.calls for k in _keys("PutMany", c.request)}
    resent = [k for c in second.calls for k in _keys("PutMany", c.request)]
    assert sorted(resent) == sorted(refused) == sorted(keys)
    assert sorted(c.address for c in second.calls) == ["a:7400", "b:7400", "c:7400"]
    for k in keys:
        assert cluster.holder(k) == [addresses(new, k)[0]]


def test_only_the_failed_sub_call_is_retried() -> None:
    cluster = FakeCluster(topology(1, "a", "b", "c", rf=2))
    core = ring_core(cluster)
    keys = [f"k{i}".encode() for i in range(60)]
    drive(core.put_many({k: b"v" for k in keys}, ttl=None, priority=0, consistency=None), cluster)
    cluster.down.add("a:7400")
    result, effects = drive(core.get_many(keys, consistency=None), cluster)
    assert result == dict.fromkeys(keys, b"v")
    first, second = effects  # the failed keys move on to their replicas at once
    assert isinstance(first, Parallel)
    retried = calls([second])
    on_a = [k for k in keys if addresses(cluster.topology, k)[0] == "a:7400"]
    assert sorted(k for c in retried for k in _keys("GetMany", c.request)) == sorted(on_a)
    assert "a:7400" not in {c.address for c in retried}


def test_a_non_retriable_sub_call_failure_raises() -> None:
    cluster = FakeCluster(topology(1, "a", "b"))
    core = ring_core(cluster)

    def too_big(call: Call) -> Message:
        if call.address == "b:7400":
            raise FakeRpcError(errors.CapacityExceeded("batch too large"))
        return cluster(call)

    keys = {f"k{i}": b"v" for i in range(40)}
    with pytest.raises(errors.CapacityExceeded, match="too large"):
        drive(core.put_many(keys, ttl=None, priority=0, consistency=None), too_big)


# -- node-scoped calls -----------------------------------------------------------------


def test_stats_goes_to_the_node_named_or_to_any_node() -> None:
    cluster = FakeCluster(topology(1, "a", "b"))
    core = make_core(router=RingRouter(["a:7400"]))
    stats, effects = drive(core.stats("b:7400"), cluster)
    assert [c.address for c in calls(effects)] == ["b:7400"]  # no bootstrap needed
    assert stats["node_id"] == "b:7400"
    drive(core.topology(), cluster)
    seen = {calls(drive(core.stats(), cluster)[1])[0].address for _ in range(4)}
    assert seen == {"a:7400", "b:7400"}
    with pytest.raises(InvalidRequest, match="address"):
        drive(core.stats(""), no_io)


def test_topology_is_cached_until_stale_or_asked_afresh() -> None:
    cluster = FakeCluster(topology(1, "a"))
    core = make_core(router=RingRouter(["a:7400"]))
    t, effects = drive(core.topology(), cluster)
    assert (t.epoch, len(calls(effects))) == (1, 1)
    assert drive(core.topology(), no_io) == (t, [])
    cluster.topology = topology(2, "a")
    t, effects = drive(core.topology(refresh=True), cluster)
    assert (t.epoch, len(calls(effects))) == (2, 1)


# -- options, routing, exports ---------------------------------------------------


def test_options_are_validated_with_value_errors() -> None:
    with pytest.raises(ValueError, match="timeout must be > 0"):
        ClientOptions(timeout=0)
    with pytest.raises(ValueError, match="max_retries"):
        ClientOptions(max_retries=-1)
    with pytest.raises(ValueError, match="backoff <= max_backoff"):
        ClientOptions(backoff=2.0, max_backoff=1.0)
    with pytest.raises(ValueError, match="consistency must be one of"):
        Client(ADDRESS, read_consistency="most")
    with pytest.raises(ValueError, match="consistency must be one of"):
        AsyncClient(ADDRESS, write_consistency="twice")
    with pytest.raises(ValueError, match="max_parallel"):
        ClientOptions(max_parallel=0)


def test_batch_bytes_fit_a_small_message_limit() -> None:
    settings: dict[str, Any] = {"timeout": 1.0, "max_retries": 0, "backoff": 0.0}
    small = build_options(
        read_consistency="QUORUM",
        write_consistency="all",
        max_backoff=0.0,
        max_message_bytes=1 << 20,
        **settings,
    )
    assert small.batch_bytes == 1 << 19
    assert (small.read_consistency, small.write_consistency) == (
        Consistency.QUORUM,
        Consistency.ALL,
    )
    assert ("grpc.max_receive_message_length", 1 << 20) in small.channel_options()


def test_routers_are_chosen_and_addresses_checked_at_construction() -> None:
    ring = make_router(["h:1", " h:2", "h:1"], "cluster")
    assert isinstance(ring, RingRouter)
    assert ring.bootstrap == ("h:1", "h:2")
    commas = make_router("h:1,h:2", "cluster")
    assert isinstance(commas, RingRouter)
    assert commas.bootstrap == ("h:1", "h:2")
    static = make_router(["h:1"], "static")
    assert isinstance(static, StaticRouter)
    assert static.replicas(b"k") == ("h:1",)
    with pytest.raises(ValueError, match="exactly one node"):
        make_router(["h:1", "h:2"], "static")
    with pytest.raises(ValueError, match="required"):
        make_router("", "cluster")
    with pytest.raises(ValueError, match="required"):
        make_router([], "cluster")
    with pytest.raises(ValueError, match="strings"):
        make_router([b"h:1"], "cluster")  # type: ignore[list-item]
    with pytest.raises(ValueError, match="'cluster' or 'static'"):
        Client(ADDRESS, routing="ring")  # type: ignore[arg-type]


def test_all_is_complete() -> None:
    public = {
        name
        for name, value in vars(memcluster.client).items()
        if not name.startswith("_") and not isinstance(value, types.ModuleType)
    }
    assert public == set(memcluster.client.__all__)


# -- both faces against a fake node ------------------------------------------------


class FakeNode(node_pb2_grpc.NodeServicer, topology_pb2_grpc.TopologyServiceServicer):
    """An in-memory node: a dict, versions from a counter, scripted failures per key.

    It serves ``topology`` (by default a cluster of itself alone). With ``barrier``
    set, each GetMany waits until that many are in flight at once.
    """

    def __init__(self, node_id: str = "fake") -> None:
        self.node_id = node_id
        self.topology: Topology | None = None
        self.items: dict[bytes, node_pb2.Entry] = {}
        self.version = 0
        self.failures: dict[bytes, list[MemclusterError]] = {}
        self.attempts: dict[bytes, int] = {}
        self.barrier = 0
        self.arrived = 0
        self.all_arrived = asyncio.Event()

    async def _maybe_fail(self, key: bytes, context: Any) -> None:
        self.attempts[key] = self.attempts.get(key, 0) + 1
        if self.failures.get(key):
            error = self.failures[key].pop(0)
            await context.abort(error.code, error.message, errors.trailing_metadata(error))

    def _put(self, item: node_pb2.PutItem) -> int:
        self.version += 1
        expires = (
            int((time.time() + item.ttl_seconds) * 1000) if item.HasField("ttl_seconds") else 0
        )
        self.items[item.key] = found(
            item.value,
            expires_at_ms=expires,
            priority=item.priority,
            version=self.version,
            tier=items_pb2.HOT,
        )
        return self.version

    async def Get(self, request: Any, context: Any) -> node_pb2.GetResponse:
        await self._maybe_fail(request.key, context)
        return node_pb2.GetResponse(entry=self.items.get(request.key), epoch=1)

    async def Put(self, request: Any, context: Any) -> node_pb2.PutResponse:
        await self._maybe_fail(request.item.key, context)
        return node_pb2.PutResponse(version=self._put(request.item), epoch=1)

    async def Delete(self, request: Any, context: Any) -> node_pb2.DeleteResponse:
        return node_pb2.DeleteResponse(existed=self.items.pop(request.key, None) is not None)

    async def GetMany(self, request: Any, context: Any) -> node_pb2.GetManyResponse:
        if self.barrier:
            self.arrived += 1
            if self.arrived >= self.barrier:
                self.all_arrived.set()
            # Calls made one after another would never get past this point.
            await asyncio.wait_for(self.all_arrived.wait(), timeout=10)
        return many(request, [self.items.get(k, node_pb2.Entry()) for k in request.keys])

    async def PutMany(self, request: Any, context: Any) -> node_pb2.PutManyResponse:
        return node_pb2.PutManyResponse(versions=[self._put(i) for i in request.items])

    async def DeleteMany(self, request: Any, context: Any) -> node_pb2.DeleteManyResponse:
        existed = [self.items.pop(k, None) is not None for k in request.keys]
        return node_pb2.DeleteManyResponse(existed=existed)

    async def Touch(self, request: Any, context: Any) -> node_pb2.TouchResponse:
        entry = self.items.get(request.key)
        if entry is None:
            return node_pb2.TouchResponse(found=False)
        ttl = request.ttl_seconds if request.HasField("ttl_seconds") else None
        entry.expires_at_ms = 0 if ttl is None else int((time.time() + ttl) * 1000)
        return node_pb2.TouchResponse(found=True, expires_at_ms=entry.expires_at_ms)

    async def Stats(self, request: Any, context: Any) -> node_pb2.StatsResponse:
        hot = node_pb2.TierStats(tier=items_pb2.HOT, enabled=True, items=len(self.items))
        return node_pb2.StatsResponse(node_id=self.node_id, tiers=[hot], epoch=1)

    async def GetTopology(self, request: Any, context: Any) -> topology_pb2.Topology:
        assert self.topology is not None
        return self.topology.to_wire()


async def serve(fake: FakeNode) -> tuple[grpc.aio.Server, str]:
    server = grpc.aio.server()
    node_pb2_grpc.add_NodeServicer_to_server(fake, server)
    topology_pb2_grpc.add_TopologyServiceServicer_to_server(fake, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    return server, f"127.0.0.1:{port}"


@pytest.fixture
async def node() -> AsyncIterator[tuple[str, FakeNode]]:
    fake = FakeNode()
    server, address = await serve(fake)
    # A standalone node: a cluster of one.
    fake.topology = Topology(epoch=1, replication_factor=1, nodes=(NodeInfo("fake", address),))
    try:
        yield address, fake
    finally:
        await server.stop(None)


@pytest.fixture
async def two_nodes() -> AsyncIterator[list[tuple[str, FakeNode]]]:
    fakes = [FakeNode("n0"), FakeNode("n1")]
    started = [await serve(fake) for fake in fakes]
    shared = Topology(
        epoch=1,
        replication_factor=1,
        nodes=tuple(NodeInfo(f.node_id, a) for f, (_, a) in zip(fakes, started, strict=True)),
    )
    for fake in fakes:
        fake.topology = shared
    try:
        yield [(address, fake) for (_, address), fake in zip(started, fakes, strict=True)]
    finally:
        for server, _ in started:
            await server.stop(None)


FACE_OPTIONS: dict[str, Any] = {"codec": JSON, "backoff": 0.001, "max_backoff": 0.002}


def check_results(results: dict[str, Any]) -> None:
    """What one scenario (below) must see, whichever face ran it."""
    assert results["version"] >= 1
    assert results["get"] == {"n": 1}
    entry = results["entry"]
    assert (entry.value, entry.priority, entry.tier) == ({"n": 1}, 5, "hot")
    assert entry.expires_at == pytest.approx(time.time() + 60, abs=30)
    assert results["touch"] is True
    assert results["after_touch"].expires_at is None
    assert results["many"] == {"a": [1], b"b": [2]}
    assert results["deleted"] == (True, False, 2)
    assert results["missing"] is None
    assert results["stats"]["tiers"]["hot"]["enabled"] is True
    assert results["topology"].nodes[0].state == "up"
    assert results["flaky"] == "ok"


def sync_scenario(address: str) -> dict[str, Any]:
    with Client(address, **FACE_OPTIONS) as client:
        out: dict[str, Any] = {"version": client.put("k", {"n": 1}, ttl=60, priority=5)}
        out["get"] = client.get("k")
        out["entry"] = client.get_entry(b"k")
        out["touch"] = client.touch("k", ttl=None)
        out["after_touch"] = client.get_entry("k")
        client.put_many({"a": [1], "b": [2], "c": [3]})
        out["many"] = client.get_many(["a", b"b", "zzz"])
        out["deleted"] = (client.delete("c"), client.delete("c"), client.delete_many(["a", "b"]))
        out["missing"] = client.get("a")
        out["stats"] = client.stats()
        out["topology"] = client.topology()
        client.put("flaky", "ok")
        out["flaky"] = client.get("flaky")
    return out


async def async_scenario(address: str) -> dict[str, Any]:
    async with AsyncClient(address, **FACE_OPTIONS) as client:
        out: dict[str, Any] = {"version": await client.put("k", {"n": 1}, ttl=60, priority=5)}
        out["get"] = await client.get("k")
        out["entry"] = await client.get_entry(b"k")
        out["touch"] = await client.touch("k", ttl=None)
        out["after_touch"] = await client.get_entry("k")
        await client.put_many({"a": [1], "b": [2], "c": [3]})
        out["many"] = await client.get_many(["a", b"b", "zzz"])
        out["deleted"] = (
            await client.delete("c"),
            await client.delete("c"),
            await client.delete_many(["a", "b"]),
        )
        out["missing"] = await client.get("a")
        out["stats"] = await client.stats()
        out["topology"] = await client.topology()
        await client.put("flaky", "ok")
        out["flaky"] = await client.get("flaky")
    return out


async def test_async_face_talks_to_a_node(node: tuple[str, FakeNode]) -> None:
    address, fake = node
    fake.failures[b"flaky"] = [Unavailable("warming up")]
    check_results(await async_scenario(address))
    assert fake.attempts[b"flaky"] == 3  # one failed put, its retry, then the get


async def test_sync_face_talks_to_a_node(node: tuple[str, FakeNode]) -> None:
    address, fake = node
    fake.failures[b"flaky"] = [Unavailable("warming up")]
    # The fake node serves on this event loop; the blocking client runs in a thread.
    check_results(await asyncio.to_thread(sync_scenario, address))
    assert fake.attempts[b"flaky"] == 3


async def test_async_face_maps_server_errors(node: tuple[str, FakeNode]) -> None:
    address, fake = node
    fake.failures[b"k"] = [InvalidRequest("value too large: 40 MiB > 32 MiB", epoch=6)]
    fake.failures[b"gone"] = [NotOwner("not mine", epoch=7)] * 2
    async with AsyncClient(address, max_retries=1, backoff=0.0, max_backoff=0.0) as client:
        with pytest.raises(InvalidRequest, match="too large") as info:
            await client.put("k", b"v")
        assert info.value.epoch == 6
        assert isinstance(info.value.__cause__, grpc.aio.AioRpcError)
        with pytest.raises(NotOwner, match="not mine"):
            await client.get("gone")
    assert fake.attempts[b"gone"] == 2
    with pytest.raises(RuntimeError, match="closed"):
        await client.get("k")


async def test_sync_face_maps_server_errors(node: tuple[str, FakeNode]) -> None:
    address, fake = node
    fake.failures[b"k"] = [errors.CapacityExceeded("node full", epoch=2)]

    def scenario() -> None:
        client: Client[bytes] = Client([address])
        with client, pytest.raises(errors.CapacityExceeded, match="node full") as info:
            client.put(b"k", b"v")
        assert isinstance(info.value.__cause__, grpc.RpcError)
        with pytest.raises(RuntimeError, match="closed"):
            client.get(b"k")

    await asyncio.to_thread(scenario)


async def test_both_faces_send_a_fan_out_concurrently(node: tuple[str, FakeNode]) -> None:
    address, fake = node
    keys = [f"k{i:02}" for i in range(30)]
    # 128-byte batches (half the message limit) cut the 30 keys into 3 GetMany calls.
    fake.barrier = 3
    async with AsyncClient(address, max_message_bytes=256) as aclient:
        assert await aclient.get_many(keys) == {}
    fake.arrived, fake.all_arrived = 0, asyncio.Event()

    def blocking() -> dict[str, bytes]:
        with Client(address, max_message_bytes=256) as client:
            return client.get_many(keys)

    assert await asyncio.to_thread(blocking) == {}


async def test_keys_land_on_their_primaries_across_nodes(
    two_nodes: list[tuple[str, FakeNode]],
) -> None:
    (first, n0), (second, n1) = two_nodes
    assert n0.topology is not None
    placement = Placement.current(n0.topology)
    keys = [f"user:{i}" for i in range(40)]
    async with AsyncClient(first) as client:  # bootstraps from one node, finds both
        await client.put_many({k: k.encode() for k in keys})
        await client.put("single", b"1")
        assert await client.get_many(keys) == {k: k.encode() for k in keys}
        assert (await client.stats(second))["node_id"] == "n1"
        assert len((await client.topology()).nodes) == 2
    for fake in (n0, n1):
        expected = {k.encode() for k in [*keys, "single"]}
        mine = {k for k in expected if placement.replicas(k)[0] == fake.node_id}
        assert set(fake.items) == mine
        assert mine  # both nodes got a share


async def test_static_routing_talks_to_the_given_node_only(
    two_nodes: list[tuple[str, FakeNode]],
) -> None:
    (first, n0), (_, n1) = two_nodes

    def scenario() -> None:
        with Client(first, routing="static") as client:
            client.put_many({f"k{i}": b"v" for i in range(20)})
            assert client.stats()["node_id"] == "n0"
            assert len(client.topology().nodes) == 2

    await asyncio.to_thread(scenario)
    assert len(n0.items) == 20
    assert not n1.items
