"""The sans-IO client core: every decision, no I/O.

Each operation is a generator that yields *effects* — ``Call`` (make this RPC) and
``Sleep`` (back off this long) — and receives each call's response, or has the
call's ``grpc.RpcError`` thrown into it. Validation, request building, response
decoding, routing, batching and retries all live here, once; the sync face
(``_sync.Client``) and the asyncio face (``_aio.AsyncClient``) only perform effects.
Tests drive the generators by hand: no network, no sleeping.
"""

from __future__ import annotations

import random as _random
from collections.abc import Callable, Generator, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, Generic, Literal, TypeAlias, TypeVar

import grpc
from google.protobuf.message import Message

from memcluster.common.errors import InvalidRequest
from memcluster.wire import items_pb2, node_pb2, topology_pb2

from . import _wire as wire
from ._options import ClientOptions
from ._retry import RetryPolicy, map_rpc_error
from ._routing import Router
from .codecs import Codec
from .types import Entry, K, Topology, V

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Call:
    """Effect: make one unary RPC and send back its response (or throw its RpcError)."""

    address: str
    service: Literal["Node", "TopologyService"]
    method: str
    request: Message
    timeout: float


@dataclass(frozen=True, slots=True)
class Sleep:
    """Effect: wait ``seconds`` (a retry's backoff), then resume with None."""

    seconds: float


Effect: TypeAlias = Call | Sleep
#: An operation in progress; its return value is the operation's result.
Op: TypeAlias = Generator[Effect, Any, T]


def _fixed(address: str) -> Callable[[int], str]:
    return lambda _attempt: address


def _same(key: bytes) -> bytes:
    return key


def _key_size(key: bytes) -> int:
    return len(key) + 8


def _item_key(item: node_pb2.PutItem) -> bytes:
    return item.key


def _item_size(item: node_pb2.PutItem) -> int:
    return len(item.key) + len(item.value) + 32


def _stats_request(epoch: int) -> Message:
    return node_pb2.StatsRequest()


def _topology_request(epoch: int) -> Message:
    return topology_pb2.GetTopologyRequest(known_epoch=epoch)


class Core(Generic[V]):
    """Builds, routes, retries and decodes every client operation (see module doc)."""

    def __init__(
        self,
        router: Router,
        codec: Codec[V],
        options: ClientOptions,
        *,
        random: Callable[[], float] = _random.random,
    ) -> None:
        self.router = router
        self.codec = codec
        self.options = options
        self.retry = RetryPolicy(options.max_retries, options.backoff, options.max_backoff, random)

    # -- single keys --------------------------------------------------------

    def put(
        self, key: object, value: V, *, ttl: object, priority: object, consistency: object
    ) -> Op[int]:
        """Write one item; returns its version."""
        k = wire.encode_key(key)
        item = wire.put_item(
            k,
            wire.encode_value(self.codec, value),
            wire.check_ttl(ttl),
            wire.check_priority(priority),
        )
        build = partial(node_pb2.PutRequest, item=item, consistency=self._level(consistency))
        response: node_pb2.PutResponse = yield from self._call(
            "Node", "Put", self._primary(k), build
        )
        return response.version

    def get_entry(self, key: object, *, consistency: object) -> Op[Entry[V] | None]:
        """Read one item with its metadata."""
        k = wire.encode_key(key)
        build = partial(node_pb2.GetRequest, key=k, consistency=self._level(consistency))
        response: node_pb2.GetResponse = yield from self._call(
            "Node", "Get", self._reader(k), build
        )
        return wire.decode_entry(response.entry, self.codec)

    def get(self, key: object, *, consistency: object) -> Op[V | None]:
        """Read one value."""
        entry = yield from self.get_entry(key, consistency=consistency)
        return None if entry is None else entry.value

    def delete(self, key: object, *, consistency: object) -> Op[bool]:
        """Delete one item; True when it existed."""
        k = wire.encode_key(key)
        build = partial(node_pb2.DeleteRequest, key=k, consistency=self._level(consistency))
        response: node_pb2.DeleteResponse = yield from self._call(
            "Node", "Delete", self._primary(k), build
        )
        return response.existed

    def touch(self, key: object, *, ttl: object, priority: object) -> Op[bool]:
        """Set (or with ttl None, clear) an item's expiry; True when the item exists."""
        k = wire.encode_key(key)
        fields: dict[str, Any] = {"key": k}
        if (seconds := wire.check_ttl(ttl)) is not None:
            fields["ttl_seconds"] = seconds
        if priority is not None:
            fields["priority"] = wire.check_priority(priority)
        build = partial(node_pb2.TouchRequest, **fields)
        response: node_pb2.TouchResponse = yield from self._call(
            "Node", "Touch", self._primary(k), build
        )
        return response.found

    # -- batches ------------------------------------------------------------

    def get_many(self, keys: Iterable[K], *, consistency: object) -> Op[dict[K, V]]:
        """Read many values; missing keys are absent from the result."""
        wanted: dict[bytes, list[K]] = {}
        for key in keys:
            wanted.setdefault(wire.encode_key(key), []).append(key)
        level = self._level(consistency)
        found: dict[K, V] = {}
        for address, batch in self._batches(list(wanted), _key_size, _same):
            build = partial(node_pb2.GetManyRequest, keys=batch, consistency=level)
            response: node_pb2.GetManyResponse = yield from self._call(
                "Node", "GetMany", _fixed(address), build
            )
            wire.expect_count("entries", len(response.entries), len(batch))
            for k, pb in zip(batch, response.entries, strict=True):
                if (entry := wire.decode_entry(pb, self.codec)) is not None:
                    found.update(dict.fromkeys(wanted[k], entry.value))
        return found

    def put_many(
        self,
        items: Mapping[K, V] | Iterable[tuple[K, V]],
        *,
        ttl: object,
        priority: object,
        consistency: object,
    ) -> Op[None]:
        """Write many items (the last value wins for a repeated key)."""
        seconds, prio = wire.check_ttl(ttl), wire.check_priority(priority)
        staged: dict[bytes, node_pb2.PutItem] = {}
        for key, value in _pairs(items):
            k = wire.encode_key(key)
            staged[k] = wire.put_item(k, wire.encode_value(self.codec, value), seconds, prio)
        level = self._level(consistency)
        for address, batch in self._batches(list(staged.values()), _item_size, _item_key):
            build = partial(node_pb2.PutManyRequest, items=batch, consistency=level)
            response: node_pb2.PutManyResponse = yield from self._call(
                "Node", "PutMany", _fixed(address), build
            )
            wire.expect_count("versions", len(response.versions), len(batch))

    def delete_many(self, keys: Iterable[object], *, consistency: object) -> Op[int]:
        """Delete many items; returns how many existed."""
        unique = list(dict.fromkeys(wire.encode_key(key) for key in keys))
        level = self._level(consistency)
        existed = 0
        for address, batch in self._batches(unique, _key_size, _same):
            build = partial(node_pb2.DeleteManyRequest, keys=batch, consistency=level)
            response: node_pb2.DeleteManyResponse = yield from self._call(
                "Node", "DeleteMany", _fixed(address), build
            )
            wire.expect_count("results", len(response.existed), len(batch))
            existed += sum(response.existed)
        return existed

    # -- node and cluster ---------------------------------------------------

    def stats(self) -> Op[dict[str, Any]]:
        """The answering node's statistics."""
        response: node_pb2.StatsResponse = yield from self._call(
            "Node", "Stats", _fixed(self.router.any_address()), _stats_request
        )
        return wire.decode_stats(response)

    def topology(self, *, may_refresh: bool = True) -> Op[Topology]:
        """The cluster topology as a node serves it."""
        response: topology_pb2.Topology = yield from self._call(
            "TopologyService",
            "GetTopology",
            _fixed(self.router.any_address()),
            _topology_request,
            may_refresh,
        )
        return wire.decode_topology(response)

    # -- machinery ----------------------------------------------------------

    def _call(
        self,
        service: Literal["Node", "TopologyService"],
        method: str,
        target: Callable[[int], str],
        build: Callable[..., Message],
        may_refresh: bool = True,
    ) -> Op[Any]:
        """One RPC with retries; ``target(attempt)`` and the request are fresh per attempt."""
        attempt = 0
        while True:
            request = build(epoch=self.router.epoch)
            call = Call(target(attempt), service, method, request, self.options.timeout)
            try:
                return (yield call)
            except grpc.RpcError as exc:
                error = map_rpc_error(exc)
                if not self.retry.should_retry(error, attempt):
                    raise error from exc
            if error.refresh_routing and may_refresh and self.router.refresh(error):
                self.router.update((yield from self.topology(may_refresh=False)))
            yield Sleep(self.retry.delay(attempt))
            attempt += 1

    def _batches(
        self,
        items: Sequence[T],
        size: Callable[[T], int],
        key: Callable[[T], bytes],
    ) -> Iterator[tuple[str, Sequence[T]]]:
        """``items`` grouped by primary address, then cut into RPC-sized chunks."""
        groups: dict[str, list[T]] = {}
        for item in items:
            groups.setdefault(self.router.replicas(key(item))[0], []).append(item)
        opts = self.options
        for address, group in groups.items():
            for chunk in wire.chunks(group, size, opts.batch_items, opts.batch_bytes):
                yield address, chunk

    def _level(self, consistency: object) -> items_pb2.Consistency.ValueType:
        if consistency is None:
            return wire.consistency_to_wire(self.options.consistency)
        if not isinstance(consistency, str):
            raise InvalidRequest(f"consistency must be a str or Consistency, got {consistency!r}")
        return wire.consistency_to_wire(wire.parse_consistency(consistency))

    def _primary(self, key: bytes) -> Callable[[int], str]:
        return lambda _attempt: self.router.replicas(key)[0]

    def _reader(self, key: bytes) -> Callable[[int], str]:
        def pick(attempt: int) -> str:
            replicas = self.router.replicas(key)
            return replicas[attempt % len(replicas)]

        return pick


def _pairs(items: Mapping[K, V] | Iterable[tuple[K, V]]) -> Iterator[tuple[K, V]]:
    if isinstance(items, Mapping):
        yield from items.items()
        return
    for pair in items:
        if not (isinstance(pair, tuple) and len(pair) == 2):
            raise InvalidRequest(f"put_many takes a mapping or (key, value) pairs, got {pair!r}")
        yield pair
