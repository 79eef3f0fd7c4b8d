"""The sans-IO client core: every decision, no I/O.

Each operation is a generator that yields *effects* (``_effects``: ``Call``,
``Parallel``, ``Sleep``) and receives what they produced. Validation, request
building and response decoding live here; routing, fan-out, retries, failover and
topology refresh live in ``_dispatch``. The sync face (``_sync.Client``) and the
asyncio face (``_aio.AsyncClient``) only perform effects. Tests drive the generators
by hand: no network, no sleeping.
"""

from __future__ import annotations

import operator
import random as _random
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from itertools import compress
from typing import Any, Generic, cast

from google.protobuf.message import Message

from memcluster.common.errors import InvalidRequest
from memcluster.wire import items_pb2, node_pb2, topology_pb2

from . import _wire as wire
from ._dispatch import Dispatcher
from ._effects import Call, Effect, Op, Parallel, Sleep
from ._options import ClientOptions
from ._routing import Router
from .codecs import BYTES, Codec
from .types import Consistency, Entry, K, Topology, V

_MISSING: Any = object()  # a key of get_many's result that no node has found (yet)

__all__ = ["Call", "Core", "Effect", "Op", "Parallel", "Sleep"]


def _item_key(item: node_pb2.PutItem) -> bytes:
    return item.key


def _item_size(item: node_pb2.PutItem) -> int:
    return len(item.key) + len(item.value) + 32


class Core(Generic[V]):
    """Builds, validates and decodes every client operation (see module doc)."""

    def __init__(
        self,
        router: Router,
        codec: Codec[V],
        options: ClientOptions,
        *,
        random: Callable[[], float] = _random.random,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.router = router
        self.codec = codec
        self.options = options
        self.dispatch = Dispatcher(router, options, random=random, clock=clock)

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
        level = self._write_level(consistency)
        response: node_pb2.PutResponse = yield from self._one(
            "Put", k, lambda epoch: node_pb2.PutRequest(item=item, consistency=level, epoch=epoch)
        )
        return response.version

    def get_entry(self, key: object, *, consistency: object) -> Op[Entry[V] | None]:
        """Read one item with its metadata."""
        response = yield from self._get(key, consistency)
        return wire.decode_entry(response.entry, self.codec)

    def get(self, key: object, *, consistency: object) -> Op[V | None]:
        """Read one value."""
        response = yield from self._get(key, consistency)
        entry = response.entry
        return self.codec.decode(entry.value) if entry.found else None

    def _get(self, key: object, consistency: object) -> Op[node_pb2.GetResponse]:
        k = wire.encode_key(key)
        level = self._read_level(consistency)
        response: node_pb2.GetResponse = yield from self._one(
            "Get",
            k,
            lambda epoch: node_pb2.GetRequest(key=k, consistency=level, epoch=epoch),
            read=True,
        )
        return response

    def delete(self, key: object, *, consistency: object) -> Op[bool]:
        """Delete one item; True when it existed."""
        k = wire.encode_key(key)
        level = self._write_level(consistency)
        response: node_pb2.DeleteResponse = yield from self._one(
            "Delete",
            k,
            lambda epoch: node_pb2.DeleteRequest(key=k, consistency=level, epoch=epoch),
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
        response: node_pb2.TouchResponse = yield from self._one(
            "Touch", k, lambda epoch: node_pb2.TouchRequest(epoch=epoch, **fields)
        )
        return response.found

    # -- batches (fanned out by node, merged in request order) --------------

    def get_many(self, keys: Iterable[K], *, consistency: object) -> Op[dict[K, V]]:
        """Read many values; missing keys are absent from the result."""
        spellings = list(keys)
        encoded = wire.encode_keys(spellings)
        level = self._read_level(consistency)

        def build(batch: Sequence[bytes], epoch: int) -> Message:
            return node_pb2.GetManyRequest(
                keys=batch,
                consistency=level,
                epoch=epoch,
                values_only=True,
                found_only_on_miss=True,
            )

        unique = list(dict.fromkeys(encoded))
        answers = yield from self.dispatch.keyed(
            "GetMany", unique, wire.same_key, build, read=True, size=wire.key_size
        )
        # Only values are wanted here: no Entry objects on this per-key path. The result
        # is laid out in request order first and filled in C; a step per key is taken
        # only for the misses (taken out) and for keys that are not bytes.
        decode = self.codec.decode
        values: dict[bytes, Any] = dict.fromkeys(unique, _MISSING)
        for batch, response in answers:
            wire.expect_count("values", len(response.values), len(batch))
            found = response.found  # empty: every key was found (found_only_on_miss)
            hits: Iterator[tuple[bytes, bytes]] = zip(batch, response.values, strict=True)
            if found:
                wire.expect_count("found flags", len(found), len(batch))
                hits = compress(hits, found)
            if self.codec is BYTES:  # values as they are: no call per key
                values.update(hits)
            else:
                values.update((k, decode(value)) for k, value in hits)
            if found and not all(found):
                for key in compress(batch, map(operator.not_, found)):
                    del values[key]
        if encoded == spellings:  # the caller's keys were bytes: they are the keys
            return cast(dict[K, V], values)
        # Under the caller's spelling of each key.
        return {
            spelling: values[k]
            for spelling, k in zip(spellings, encoded, strict=True)
            if k in values
        }

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
        level = self._write_level(consistency)

        def build(batch: Sequence[node_pb2.PutItem], epoch: int) -> Message:
            return node_pb2.PutManyRequest(items=batch, consistency=level, epoch=epoch)

        answers = yield from self.dispatch.keyed(
            "PutMany", list(staged.values()), _item_key, build, read=False, size=_item_size
        )
        for batch, response in answers:
            wire.expect_count("versions", len(response.versions), len(batch))

    def delete_many(self, keys: Iterable[object], *, consistency: object) -> Op[int]:
        """Delete many items; returns how many existed."""
        unique = list(dict.fromkeys(wire.encode_key(key) for key in keys))
        level = self._write_level(consistency)

        def build(batch: Sequence[bytes], epoch: int) -> Message:
            return node_pb2.DeleteManyRequest(keys=batch, consistency=level, epoch=epoch)

        answers = yield from self.dispatch.keyed(
            "DeleteMany", unique, wire.same_key, build, read=False, size=wire.key_size
        )
        existed = 0
        for batch, response in answers:
            wire.expect_count("results", len(response.existed), len(batch))
            existed += sum(response.existed)
        return existed

    # -- node and cluster ---------------------------------------------------

    def stats(self, address: object = None) -> Op[dict[str, Any]]:
        """Statistics of the node at ``address`` (None: any node)."""
        if address is not None and not (isinstance(address, str) and address):
            raise InvalidRequest(f"address must be a node's host:port or None, got {address!r}")
        response: node_pb2.StatsResponse = yield from self.dispatch.on_node(
            "Node", "Stats", node_pb2.StatsRequest(), address
        )
        return wire.decode_stats(response)

    def topology(self, *, refresh: bool = False) -> Op[Topology]:
        """The topology keys are routed by (fetched first if none, stale, or ``refresh``)."""
        if refresh:
            self.dispatch.stale()
        yield from self.dispatch.ready()
        if (topology := self.router.topology) is not None:
            return topology
        # A static router routes by no topology: report the one its node serves.
        request = topology_pb2.GetTopologyRequest()
        response = yield from self.dispatch.on_node("TopologyService", "GetTopology", request, None)
        return Topology.from_wire(response)

    # -- machinery ----------------------------------------------------------

    def _one(
        self, method: str, key: bytes, build: Callable[[int], Message], *, read: bool = False
    ) -> Op[Any]:
        """One keyed request; ``build(epoch)`` makes it afresh for every attempt."""
        return (yield from self.dispatch.single(method, key, build, read=read))

    def _read_level(self, consistency: object) -> items_pb2.Consistency.ValueType:
        return _level(consistency, self.options.read_consistency)

    def _write_level(self, consistency: object) -> items_pb2.Consistency.ValueType:
        return _level(consistency, self.options.write_consistency)


def _level(consistency: object, default: Consistency) -> items_pb2.Consistency.ValueType:
    if consistency is None:
        return wire.consistency_to_wire(default)
    if not isinstance(consistency, str):
        raise InvalidRequest(f"consistency must be a str or Consistency, got {consistency!r}")
    return wire.consistency_to_wire(wire.parse_consistency(consistency))


def _pairs(items: Mapping[K, V] | Iterable[tuple[K, V]]) -> Iterator[tuple[K, V]]:
    if isinstance(items, Mapping):
        yield from items.items()
        return
    for pair in items:
        if not (isinstance(pair, tuple) and len(pair) == 2):
            raise InvalidRequest(f"put_many takes a mapping or (key, value) pairs, got {pair!r}")
        yield pair
