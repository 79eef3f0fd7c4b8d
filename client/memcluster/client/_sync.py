"""The blocking client: performs the core's effects with grpc channels and time.sleep."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from types import TracebackType
from typing import Any, Generic, Literal, Self, TypeAlias, TypeVar, cast

import grpc

from memcluster.common.errors import InvalidRequest
from memcluster.wire import node_pb2, node_pb2_grpc, topology_pb2_grpc

from ._core import Call, Core, Op, Parallel, Sleep
from ._frames import ConnectFailed, Directory, SyncExchange, SyncFrames, carried
from ._options import DEFAULT_MAX_MESSAGE_BYTES, build_options
from ._routing import Routing, make_router
from .codecs import BYTES, Codec
from .types import Consistency, Entry, K, Key, Topology, V

T = TypeVar("T")
#: ``auto``: data calls on a node's frame transport where it offers one; ``grpc``: gRPC only.
Transport: TypeAlias = Literal["auto", "grpc"]


class Client(Generic[V]):
    """A blocking memcluster client; thread-safe, meant to be shared and closed once.

    ``address`` is one or more nodes to bootstrap from (host:port, a list of them, or
    one string separated by commas): the client fetches the cluster topology from the
    first that answers and then routes each key to its replicas. ``routing="static"``
    sends everything to the one node given instead. Reads default to
    ``read_consistency`` (the primary, failing over to replicas), writes to
    ``write_consistency``. Values go through ``codec`` (bytes by default).
    ``timeout`` bounds each attempt, in seconds; retriable failures are retried up
    to ``max_retries`` times with jittered exponential backoff from ``backoff`` up
    to ``max_backoff`` seconds. Data calls travel on the nodes' frame transport
    (``transport="auto"``; memcluster.common.frames), several times faster than unary
    gRPC calls, wherever a node offers it; ``transport="grpc"`` uses gRPC alone.
    Failures raise ``memcluster.common.errors`` classes;
    arguments the client can judge wrong raise InvalidRequest before any I/O.
    """

    def __init__(
        self,
        address: str | Sequence[str],
        *,
        timeout: float = 5.0,
        read_consistency: str | Consistency = "one",
        write_consistency: str | Consistency = "quorum",
        # mypy cannot match a default against V's own default (bytes).
        codec: Codec[V] = BYTES,  # type: ignore[assignment]
        max_retries: int = 3,
        backoff: float = 0.05,
        max_backoff: float = 1.0,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        routing: Routing = "cluster",
        transport: Transport = "auto",
    ) -> None:
        options = build_options(
            timeout=timeout,
            read_consistency=read_consistency,
            write_consistency=write_consistency,
            max_retries=max_retries,
            backoff=backoff,
            max_backoff=max_backoff,
            max_message_bytes=max_message_bytes,
        )
        self._core = Core(make_router(address, routing), codec, options)
        self._channels: dict[str, tuple[grpc.Channel, dict[str, object]]] = {}
        self._lock = threading.Lock()
        self._closed = False
        self._frames = SyncFrames(max_message_bytes) if use_frames(transport) else None
        self._directory = Directory()

    def put(
        self,
        key: Key,
        value: V,
        *,
        ttl: float | None = None,
        priority: int = 0,
        consistency: str | Consistency | None = None,
    ) -> int:
        """Store ``value`` under ``key`` (expiring after ``ttl`` seconds); returns its version."""
        op = self._core.put(key, value, ttl=ttl, priority=priority, consistency=consistency)
        return self._run(op)

    def get(self, key: Key, *, consistency: str | Consistency | None = None) -> V | None:
        """The value under ``key``, or None."""
        return self._run(self._core.get(key, consistency=consistency))

    def get_entry(
        self, key: Key, *, consistency: str | Consistency | None = None
    ) -> Entry[V] | None:
        """The value under ``key`` with its version, expiry, priority and tier, or None."""
        return self._run(self._core.get_entry(key, consistency=consistency))

    def delete(self, key: Key, *, consistency: str | Consistency | None = None) -> bool:
        """Delete ``key``; True when it existed."""
        return self._run(self._core.delete(key, consistency=consistency))

    def touch(self, key: Key, *, ttl: float | None, priority: int | None = None) -> bool:
        """Set ``key``'s expiry to ``ttl`` seconds from now (None: never); True if it exists."""
        return self._run(self._core.touch(key, ttl=ttl, priority=priority))

    def get_many(
        self, keys: Iterable[K], *, consistency: str | Consistency | None = None
    ) -> dict[K, V]:
        """The values of ``keys`` that exist, keyed by the caller's key objects."""
        return self._run(self._core.get_many(keys, consistency=consistency))

    def put_many(
        self,
        items: Mapping[K, V] | Iterable[tuple[K, V]],
        *,
        ttl: float | None = None,
        priority: int = 0,
        consistency: str | Consistency | None = None,
    ) -> None:
        """Store many items, in as many requests as their count and size need."""
        op = self._core.put_many(items, ttl=ttl, priority=priority, consistency=consistency)
        self._run(op)

    def delete_many(
        self, keys: Iterable[Key], *, consistency: str | Consistency | None = None
    ) -> int:
        """Delete ``keys``; returns how many of them existed."""
        return self._run(self._core.delete_many(keys, consistency=consistency))

    def stats(self, address: str | None = None) -> dict[str, Any]:
        """Statistics of the node at ``address`` (None: any node).

        They hold node_id, epoch, tiers (by name) and counters.
        """
        return self._run(self._core.stats(address))

    def topology(self, *, refresh: bool = False) -> Topology:
        """The topology the client routes by: cached, or fetched when missing or stale.

        ``refresh=True`` fetches it afresh first.
        """
        return self._run(self._core.topology(refresh=refresh))

    def close(self) -> None:
        """Close every connection; the client cannot be used afterwards."""
        with self._lock:
            self._closed = True
            channels, self._channels = self._channels, {}
        if self._frames is not None:
            self._frames.close()
        for channel, _ in channels.values():
            channel.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _run(self, op: Op[T]) -> T:
        reply: Any = None
        failure: grpc.RpcError | None = None
        try:
            while True:
                try:
                    effect = op.send(reply) if failure is None else op.throw(failure)
                except StopIteration as done:
                    return cast(T, done.value)
                reply, failure = None, None
                if isinstance(effect, Sleep):
                    time.sleep(effect.seconds)
                elif isinstance(effect, Parallel):
                    reply = self._parallel(effect.calls)
                else:
                    try:
                        reply = self._call(effect)
                    except grpc.RpcError as exc:
                        failure = exc
        finally:
            op.close()

    def _parallel(self, calls: Sequence[Call]) -> list[Any]:
        """Send every call (frames first, then gRPC futures); collect each answer or error."""
        pending: list[Any] = []
        try:
            for call in calls:
                try:
                    pending.append(self._start(call))
                except grpc.RpcError as exc:
                    pending.append(_Failed(exc))
            outcomes: list[Any] = []
            for started in pending:
                try:
                    outcomes.append(started.result())
                except grpc.RpcError as exc:
                    outcomes.append(exc)
        except BaseException:
            for started in pending:
                started.abandon()
            raise
        return outcomes

    def _call(self, call: Call) -> Any:
        exchange = self._exchange(call)
        if exchange is None:
            return self._method(call)(call.request, timeout=call.timeout)
        try:
            return exchange.result()
        except BaseException:
            exchange.abandon()
            raise

    def _start(self, call: Call) -> Any:
        exchange = self._exchange(call)
        if exchange is not None:
            return exchange
        return _Future(self._method(call).future(call.request, timeout=call.timeout))

    def _exchange(self, call: Call) -> SyncExchange | None:
        """The call sent on the node's frame transport, or None to use gRPC."""
        if self._frames is None or call.service != "Node" or not carried(call.method):
            return None
        frames = self._frames_address(call.address, call.timeout)
        if frames is None:
            return None
        try:
            return SyncExchange(self._frames, frames, call.method, call.request, call.timeout)
        except ConnectFailed:
            # The node may have restarted on another frame port: ask it again, and
            # use gRPC for a while if the port it names does not answer either.
            self._directory.forget(call.address)
            again = self._frames_address(call.address, call.timeout)
            if again is not None and again != frames:
                try:
                    return SyncExchange(
                        self._frames, again, call.method, call.request, call.timeout
                    )
                except ConnectFailed:
                    pass
            self._directory.set(call.address, None)
            return None

    def _frames_address(self, address: str, timeout: float) -> str | None:
        known, frames = self._directory.lookup(address)
        if known:
            return frames
        stub: Any = self._stubs(address)["Node"]
        try:
            response = stub.Transports(node_pb2.TransportsRequest(), timeout=timeout)
        except grpc.RpcError as exc:
            if exc.code() != grpc.StatusCode.UNIMPLEMENTED:
                raise
            response = None
        return self._directory.learn(address, response)

    def _method(self, call: Call) -> Any:
        return getattr(self._stubs(call.address)[call.service], call.method)

    def _stubs(self, address: str) -> dict[str, object]:
        with self._lock:
            if self._closed:
                raise RuntimeError("this memcluster client is closed")
            if address not in self._channels:
                options = self._core.options.channel_options()
                channel = grpc.insecure_channel(address, options=options)
                stubs: dict[str, object] = {
                    "Node": node_pb2_grpc.NodeStub(channel),
                    "TopologyService": topology_pb2_grpc.TopologyServiceStub(channel),
                }
                self._channels[address] = (channel, stubs)
            return self._channels[address][1]


def use_frames(transport: Transport) -> bool:
    """Whether a client with this ``transport`` setting tries the frame transport."""
    if transport not in ("auto", "grpc"):
        raise InvalidRequest(f"transport must be 'auto' or 'grpc', not {transport!r}")
    return transport == "auto"


class _Future:
    """A gRPC future with the interface of a SyncExchange."""

    def __init__(self, future: Any) -> None:
        self._future = future

    def result(self) -> Any:
        return self._future.result()

    def abandon(self) -> None:
        self._future.cancel()


class _Failed:
    """A call that failed before it was sent."""

    def __init__(self, error: grpc.RpcError) -> None:
        self._error = error

    def result(self) -> Any:
        raise self._error

    def abandon(self) -> None:
        pass
