"""The asyncio client: performs the core's effects with grpc.aio channels and asyncio.sleep."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping, Sequence
from types import TracebackType
from typing import Any, Generic, Self, TypeVar, cast

import grpc
import grpc.aio

from memcluster.wire import node_pb2, node_pb2_grpc, topology_pb2_grpc

from ._core import Call, Core, Op, Parallel, Sleep
from ._frames import AsyncFrames, ask_transports, carried
from ._options import DEFAULT_MAX_MESSAGE_BYTES, build_options
from ._routing import Routing, make_router
from ._sync import Transport, use_frames
from .codecs import BYTES, Codec
from .types import Consistency, Entry, K, Key, Topology, V

T = TypeVar("T")


class AsyncClient(Generic[V]):
    """An asyncio memcluster client: Client's API with awaitable methods.

    Use it from one event loop; share it between tasks and close it once.
    ``address`` is one or more nodes to bootstrap from (host:port, a list of them, or
    one string separated by commas): the client fetches the cluster topology from the
    first that answers and then routes each key to its replicas. ``routing="static"``
    sends everything to the one node given instead. Reads default to
    ``read_consistency`` (the primary, failing over to replicas), writes to
    ``write_consistency``. Values go through ``codec`` (bytes by default).
    ``timeout`` bounds each attempt, in seconds; retriable failures are retried up
    to ``max_retries`` times with jittered exponential backoff from ``backoff`` up
    to ``max_backoff`` seconds. Data calls travel on one multiplexed frame-transport
    connection per node where the node offers it (``transport="auto"``), else on gRPC.
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
        self._channels: dict[str, tuple[grpc.aio.Channel, dict[str, object]]] = {}
        self._closed = False
        self._frames = (
            AsyncFrames(max_message_bytes, self._ask_transports) if use_frames(transport) else None
        )

    async def put(
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
        return await self._run(op)

    async def get(self, key: Key, *, consistency: str | Consistency | None = None) -> V | None:
        """The value under ``key``, or None."""
        return await self._run(self._core.get(key, consistency=consistency))

    async def get_entry(
        self, key: Key, *, consistency: str | Consistency | None = None
    ) -> Entry[V] | None:
        """The value under ``key`` with its version, expiry, priority and tier, or None."""
        return await self._run(self._core.get_entry(key, consistency=consistency))

    async def delete(self, key: Key, *, consistency: str | Consistency | None = None) -> bool:
        """Delete ``key``; True when it existed."""
        return await self._run(self._core.delete(key, consistency=consistency))

    async def touch(self, key: Key, *, ttl: float | None, priority: int | None = None) -> bool:
        """Set ``key``'s expiry to ``ttl`` seconds from now (None: never); True if it exists."""
        return await self._run(self._core.touch(key, ttl=ttl, priority=priority))

    async def get_many(
        self, keys: Iterable[K], *, consistency: str | Consistency | None = None
    ) -> dict[K, V]:
        """The values of ``keys`` that exist, keyed by the caller's key objects."""
        return await self._run(self._core.get_many(keys, consistency=consistency))

    async def put_many(
        self,
        items: Mapping[K, V] | Iterable[tuple[K, V]],
        *,
        ttl: float | None = None,
        priority: int = 0,
        consistency: str | Consistency | None = None,
    ) -> None:
        """Store many items, in as many requests as their count and size need."""
        op = self._core.put_many(items, ttl=ttl, priority=priority, consistency=consistency)
        await self._run(op)

    async def delete_many(
        self, keys: Iterable[Key], *, consistency: str | Consistency | None = None
    ) -> int:
        """Delete ``keys``; returns how many of them existed."""
        return await self._run(self._core.delete_many(keys, consistency=consistency))

    async def stats(self, address: str | None = None) -> dict[str, Any]:
        """Statistics of the node at ``address`` (None: any node).

        They hold node_id, epoch, tiers (by name) and counters.
        """
        return await self._run(self._core.stats(address))

    async def topology(self, *, refresh: bool = False) -> Topology:
        """The topology the client routes by: cached, or fetched when missing or stale.

        ``refresh=True`` fetches it afresh first.
        """
        return await self._run(self._core.topology(refresh=refresh))

    async def close(self) -> None:
        """Close every connection; the client cannot be used afterwards."""
        self._closed = True
        channels, self._channels = self._channels, {}
        if self._frames is not None:
            self._frames.close()
        for channel, _ in channels.values():
            await channel.close(grace=None)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def _run(self, op: Op[T]) -> T:
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
                    await asyncio.sleep(effect.seconds)
                elif isinstance(effect, Parallel):
                    reply = await self._parallel(effect.calls)
                else:
                    try:
                        reply = await self._invoke(effect)
                    except grpc.RpcError as exc:
                        failure = exc
        finally:
            op.close()

    async def _parallel(self, calls: Sequence[Call]) -> list[Any]:
        """Every call at once; each one's response or RpcError, in order."""

        async def outcome(call: Call) -> Any:
            try:
                return await self._invoke(call)
            except grpc.RpcError as exc:
                return exc

        if self._closed:
            raise RuntimeError("this memcluster client is closed")
        tasks = [asyncio.ensure_future(outcome(call)) for call in calls]
        try:
            return await asyncio.gather(*tasks)
        except BaseException:
            # gather leaves the other calls running when one fails unexpectedly.
            for task in tasks:
                task.cancel()
            raise

    async def _invoke(self, call: Call) -> Any:
        """One call, on the node's frame transport when it has one, else on gRPC."""
        if self._frames is not None and call.service == "Node" and carried(call.method):
            connection = await self._frames.connection(call.address, call.timeout)
            if connection is not None:
                return await connection.call(call.method, call.request, call.timeout)
        return await self._method(call)(call.request, timeout=call.timeout)

    async def _ask_transports(
        self, address: str, seconds: float
    ) -> node_pb2.TransportsResponse | None:
        return await ask_transports(self._stubs(address)["Node"], seconds)

    def _method(self, call: Call) -> Any:
        return getattr(self._stubs(call.address)[call.service], call.method)

    def _stubs(self, address: str) -> dict[str, object]:
        if self._closed:
            raise RuntimeError("this memcluster client is closed")
        if address not in self._channels:
            # Created on first use, inside the running loop that grpc.aio binds it to.
            options = self._core.options.channel_options()
            channel = grpc.aio.insecure_channel(address, options=options)
            stubs: dict[str, object] = {
                "Node": node_pb2_grpc.NodeStub(channel),
                "TopologyService": topology_pb2_grpc.TopologyServiceStub(channel),
            }
            self._channels[address] = (channel, stubs)
        return self._channels[address][1]
