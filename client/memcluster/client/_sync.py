"""The blocking client: performs the core's effects with grpc channels and time.sleep."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from types import TracebackType
from typing import Any, Generic, Self, TypeVar, cast

import grpc

from memcluster.wire import node_pb2_grpc, topology_pb2_grpc

from ._core import Call, Core, Op, Parallel, Sleep
from ._options import DEFAULT_MAX_MESSAGE_BYTES, build_options
from ._pipeline import PIPELINED, PipelineStream, Watchdog
from ._routing import Routing, make_router
from .codecs import BYTES, Codec
from .types import Consistency, Entry, K, Key, Topology, V

T = TypeVar("T")


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
    to ``max_backoff`` seconds. Single-key calls travel on one long-lived stream per
    node (``pipeline=True``), which roughly doubles their rate over unary calls.
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
        pipeline: bool = True,
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
        self._pipelines: dict[str, PipelineStream] | None = {} if pipeline else None
        self._watchdog: Watchdog | None = None
        self._unpipelined: set[str] = set()

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
            watchdog, self._watchdog = self._watchdog, None
            pipelines = list((self._pipelines or {}).values())
        if watchdog is not None:
            watchdog.close()
        for pipeline in pipelines:
            pipeline.close()
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
        """Start every call as a grpc future, then collect each response or RpcError."""
        started = [(self._method(call), call) for call in calls]
        futures = [method.future(call.request, timeout=call.timeout) for method, call in started]
        outcomes: list[Any] = []
        try:
            for future in futures:
                try:
                    outcomes.append(future.result())
                except grpc.RpcError as exc:
                    outcomes.append(exc)
        except BaseException:
            for future in futures:
                future.cancel()
            raise
        return outcomes

    def _call(self, call: Call) -> Any:
        if (
            self._pipelines is not None
            and call.service == "Node"
            and call.method in PIPELINED
            and call.address not in self._unpipelined
        ):
            try:
                return self._pipeline(call.address).call(call.method, call.request, call.timeout)
            except grpc.RpcError as exc:
                if exc.code() != grpc.StatusCode.UNIMPLEMENTED:
                    raise
                # A node without Node.Pipeline: plain calls from now on.
                self._unpipelined.add(call.address)
        return self._method(call)(call.request, timeout=call.timeout)

    def _pipeline(self, address: str) -> PipelineStream:
        assert self._pipelines is not None
        stream = self._pipelines.get(address)
        if stream is None:
            stub = self._stubs(address)["Node"]
            with self._lock:
                stream = self._pipelines.setdefault(address, PipelineStream(stub, address))
                if self._watchdog is None:
                    self._watchdog = Watchdog(self._pipelines)
        return stream

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
