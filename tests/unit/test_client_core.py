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
    NotOwner,
    Topology,
    Unavailable,
)
from memcluster.client._core import Call, Core, Op, Sleep
from memcluster.client._options import ClientOptions, build_options
from memcluster.client._retry import RetryPolicy, map_rpc_error
from memcluster.client._routing import StaticRouter
from memcluster.client._wire import chunks
from memcluster.client.types import NodeInfo
from memcluster.common import errors
from memcluster.common.errors import MemclusterError
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


def drive(op: Op[Any], handler: Handler) -> tuple[Any, list[Call | Sleep]]:
    """Run ``op`` to completion, answering its calls with ``handler``; record effects."""
    effects: list[Call | Sleep] = []
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


def calls(effects: Sequence[Call | Sleep]) -> list[Call]:
    return [e for e in effects if isinstance(e, Call)]


def sleeps(effects: Sequence[Call | Sleep]) -> list[float]:
    return [e.seconds for e in effects if isinstance(e, Sleep)]


def no_io(call: Call) -> Message:
    raise AssertionError(f"unexpected I/O: {call}")


def make_core(codec: Any = None, *, router: Any = None, **options: Any) -> Core[Any]:
    return Core(
        router or StaticRouter(ADDRESS),
        codec or memcluster.client.BYTES,
        ClientOptions(**options),
        random=lambda: 0.0,
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
    core = make_core(consistency=Consistency.ALL)
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
    assert topo == Topology(
        epoch=9,
        replication_factor=3,
        nodes=(NodeInfo("a", "h:1", 1.5, "up"), NodeInfo("b", "h:2", 1.0, "unknown")),
    )


def test_a_batch_answered_with_the_wrong_count_is_an_internal_error() -> None:
    with pytest.raises(InternalError, match="1 entries for a batch of 2"):
        drive(
            make_core().get_many([b"a", b"b"], consistency=None),
            lambda c: node_pb2.GetManyResponse(entries=[node_pb2.Entry()]),
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


class MovingRouter:
    """A router that asks for a topology and then routes to its first node."""

    def __init__(self) -> None:
        self.addresses: tuple[str, ...] = ("old:1", "old:2")
        self.epoch = 1
        self.refreshed: list[MemclusterError] = []

    def replicas(self, key: bytes) -> Sequence[str]:
        return self.addresses

    def any_address(self) -> str:
        return self.addresses[0]

    def refresh(self, error: MemclusterError) -> bool:
        self.refreshed.append(error)
        return True

    def update(self, topology: Topology) -> None:
        self.addresses = tuple(n.address for n in topology.nodes)
        self.epoch = topology.epoch


def test_refresh_routing_errors_fetch_a_topology_and_reroute() -> None:
    router = MovingRouter()
    core = make_core(router=router)
    new = topology_pb2.Topology(epoch=2, nodes=[topology_pb2.NodeInfo(address="new:1")])
    handler = failing(NotOwner("moved", epoch=2), new, node_pb2.PutResponse(version=5))
    version, effects = drive(core.put(b"k", b"v", ttl=None, priority=0, consistency=None), handler)
    assert version == 5
    first, fetch, retry = calls(effects)
    assert [(c.address, c.method) for c in (first, fetch, retry)] == [
        ("old:1", "Put"),
        ("old:1", "GetTopology"),
        ("new:1", "Put"),
    ]
    assert isinstance(fetch.request, topology_pb2.GetTopologyRequest)
    assert fetch.request.known_epoch == 1
    # Each attempt is built afresh, with the epoch the routing now rests on.
    assert isinstance(first.request, node_pb2.PutRequest)
    assert isinstance(retry.request, node_pb2.PutRequest)
    assert (first.request.epoch, retry.request.epoch) == (1, 2)
    assert [type(e) for e in router.refreshed] == [NotOwner]


def test_reads_fail_over_to_replicas_and_writes_stay_on_the_primary() -> None:
    core = make_core(router=MovingRouter())
    _, effects = drive(
        core.get(b"k", consistency=None), failing(Unavailable("x"), node_pb2.GetResponse())
    )
    assert [c.address for c in calls(effects)] == ["old:1", "old:2"]
    _, effects = drive(
        core.delete(b"k", consistency=None),
        failing(Unavailable("x"), node_pb2.DeleteResponse()),
    )
    assert [c.address for c in calls(effects)] == ["old:1", "old:1"]


def test_aio_errors_map_with_their_metadata() -> None:
    exc = grpc.aio.AioRpcError(
        grpc.StatusCode.FAILED_PRECONDITION,
        grpc.aio.Metadata(),
        grpc.aio.Metadata(*errors.trailing_metadata(NotOwner("x", epoch=8))),
        details="not mine",
        debug_error_string="",
    )
    error = map_rpc_error(exc)
    assert isinstance(error, NotOwner)
    assert (error.message, error.epoch) == ("not mine", 8)
    assert isinstance(map_rpc_error(FakeRpcError(Unavailable("u"))), Unavailable)


# -- batching --------------------------------------------------------------------


def fake_get_many(store: dict[bytes, bytes]) -> Handler:
    def handle(call: Call) -> Message:
        assert isinstance(call.request, node_pb2.GetManyRequest)
        return node_pb2.GetManyResponse(
            entries=[found(store[k]) if k in store else node_pb2.Entry() for k in call.request.keys]
        )

    return handle


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


# -- options, routing, exports ---------------------------------------------------


def test_options_are_validated_with_value_errors() -> None:
    with pytest.raises(ValueError, match="timeout must be > 0"):
        ClientOptions(timeout=0)
    with pytest.raises(ValueError, match="max_retries"):
        ClientOptions(max_retries=-1)
    with pytest.raises(ValueError, match="backoff <= max_backoff"):
        ClientOptions(backoff=2.0, max_backoff=1.0)
    with pytest.raises(ValueError, match="consistency must be one of"):
        Client(ADDRESS, consistency="most")


def test_batch_bytes_fit_a_small_message_limit() -> None:
    settings: dict[str, Any] = {"timeout": 1.0, "max_retries": 0, "backoff": 0.0}
    small = build_options(consistency="all", max_backoff=0.0, max_message_bytes=1 << 20, **settings)
    assert small.batch_bytes == 1 << 19
    assert small.consistency is Consistency.ALL
    assert ("grpc.max_receive_message_length", 1 << 20) in small.channel_options()


def test_static_router_takes_exactly_one_address() -> None:
    assert StaticRouter.from_addresses(["h:1"]).replicas(b"k") == ("h:1",)
    with pytest.raises(ValueError, match="exactly one node"):
        StaticRouter.from_addresses(["h:1", "h:2"])
    with pytest.raises(ValueError, match="address"):
        StaticRouter.from_addresses("")


def test_all_is_complete() -> None:
    public = {
        name
        for name, value in vars(memcluster.client).items()
        if not name.startswith("_") and not isinstance(value, types.ModuleType)
    }
    assert public == set(memcluster.client.__all__)


# -- both faces against a fake node ------------------------------------------------


class FakeNode(node_pb2_grpc.NodeServicer, topology_pb2_grpc.TopologyServiceServicer):
    """An in-memory node: a dict, versions from a counter, scripted failures per key."""

    def __init__(self) -> None:
        self.items: dict[bytes, node_pb2.Entry] = {}
        self.version = 0
        self.failures: dict[bytes, list[MemclusterError]] = {}
        self.attempts: dict[bytes, int] = {}

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
        entries = [self.items.get(k, node_pb2.Entry()) for k in request.keys]
        return node_pb2.GetManyResponse(entries=entries)

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
        return node_pb2.StatsResponse(node_id="fake", tiers=[hot], epoch=1)

    async def GetTopology(self, request: Any, context: Any) -> topology_pb2.Topology:
        node = topology_pb2.NodeInfo(id="fake", address="here", weight=1, state=topology_pb2.UP)
        return topology_pb2.Topology(epoch=1, replication_factor=1, nodes=[node])


@pytest.fixture
async def node() -> AsyncIterator[tuple[str, FakeNode]]:
    server = grpc.aio.server()
    fake = FakeNode()
    node_pb2_grpc.add_NodeServicer_to_server(fake, server)
    topology_pb2_grpc.add_TopologyServiceServicer_to_server(fake, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield f"127.0.0.1:{port}", fake
    finally:
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
