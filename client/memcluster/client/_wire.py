"""Pure translation between the client's arguments and the wire messages.

Validation happens here, before any I/O, and raises InvalidRequest with a message
that says what to change. Limits the server owns (key and value sizes) are left to
the server, which stays authoritative.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar, cast

from memcluster.common.errors import InternalError, InvalidRequest
from memcluster.wire import items_pb2, node_pb2

from .codecs import Codec
from .types import Consistency, Entry, V

T = TypeVar("T")

PRIORITY_MIN, PRIORITY_MAX = -32768, 32767

_CONSISTENCY = {
    Consistency.ONE: items_pb2.ONE,
    Consistency.QUORUM: items_pb2.QUORUM,
    Consistency.ALL: items_pb2.ALL,
}
_TIERS = {items_pb2.HOT: "hot", items_pb2.WARM: "warm", items_pb2.COLD: "cold"}


def parse_consistency(value: str | Consistency) -> Consistency:
    """``value`` as a Consistency ('one', 'quorum', 'all', any case)."""
    try:
        return Consistency(value.lower() if isinstance(value, str) else value)
    except (ValueError, AttributeError) as exc:
        choices = ", ".join(repr(c.value) for c in Consistency)
        raise InvalidRequest(f"consistency must be one of {choices}, got {value!r}") from exc


def consistency_to_wire(value: Consistency) -> items_pb2.Consistency.ValueType:
    """The wire enum for ``value``."""
    return _CONSISTENCY[value]


def encode_key(key: object) -> bytes:
    """The wire form of a caller's key (bytes as is, str as UTF-8)."""
    if type(key) is bytes and key:
        return key
    if isinstance(key, str):
        key = key.encode("utf-8")
    elif not isinstance(key, bytes):
        raise InvalidRequest(f"keys must be bytes or str, got {type(key).__name__}")
    if not key:
        raise InvalidRequest("keys must not be empty")
    return key


def encode_keys(keys: Sequence[object]) -> list[bytes]:
    """``encode_key`` of each key (taken as they are when all are non-empty bytes)."""
    if set(map(type, keys)) <= {bytes} and all(keys):  # checked in C, not per key
        return list(cast(Sequence[bytes], keys))
    return [encode_key(key) for key in keys]


def encode_value(codec: Codec[V], value: V) -> bytes:
    """``value`` through ``codec``; a value the codec refuses is an InvalidRequest."""
    try:
        data = codec.encode(value)
    except (TypeError, ValueError) as exc:
        raise InvalidRequest(f"cannot encode value with {codec!r}: {exc}") from exc
    if not isinstance(data, bytes):
        raise InvalidRequest(f"codec {codec!r} returned {type(data).__name__}, not bytes")
    return data


def check_ttl(ttl: object) -> float | None:
    """A valid time to live in seconds (None: no expiry)."""
    if ttl is None:
        return None
    if isinstance(ttl, bool) or not isinstance(ttl, int | float):
        raise InvalidRequest(f"ttl must be a number of seconds or None, got {type(ttl).__name__}")
    if not math.isfinite(ttl) or ttl <= 0:
        raise InvalidRequest(f"ttl must be a finite number of seconds > 0 (or None), got {ttl}")
    return float(ttl)


def check_priority(priority: object) -> int:
    """A valid priority (an int16)."""
    if isinstance(priority, bool) or not isinstance(priority, int):
        raise InvalidRequest(f"priority must be an int, got {type(priority).__name__}")
    if not PRIORITY_MIN <= priority <= PRIORITY_MAX:
        raise InvalidRequest(
            f"priority must be within [{PRIORITY_MIN}, {PRIORITY_MAX}], got {priority}"
        )
    return priority


def put_item(key: bytes, value: bytes, ttl: float | None, priority: int) -> node_pb2.PutItem:
    """One item to write (arguments already validated)."""
    item = node_pb2.PutItem(key=key, value=value, priority=priority)
    if ttl is not None:
        item.ttl_seconds = ttl
    return item


def decode_entry(entry: node_pb2.Entry, codec: Codec[V]) -> Entry[V] | None:
    """The Entry a read found, or None when it found nothing."""
    if not entry.found:
        return None
    return Entry(
        value=codec.decode(entry.value),
        version=entry.version,
        expires_at=entry.expires_at_ms / 1000 if entry.expires_at_ms else None,
        priority=entry.priority,
        tier=_TIERS.get(entry.tier, "unknown"),
    )


def expect_count(what: str, got: int, sent: int) -> None:
    """Fail loudly when a node answers a batch with the wrong number of results."""
    if got != sent:
        raise InternalError(f"the node answered {got} {what} for a batch of {sent}")


def decode_stats(response: node_pb2.StatsResponse) -> dict[str, Any]:
    """Stats as plain data: node_id, epoch, tiers (by name) and counters."""
    tiers = {
        _TIERS.get(t.tier, "unknown"): {
            "enabled": t.enabled,
            "items": t.items,
            "bytes": t.bytes,
            "capacity": t.capacity,
            "hits": t.hits,
            "misses": t.misses,
            "promotions": t.promotions,
            "demotions": t.demotions,
            "evictions": t.evictions,
            "expirations": t.expirations,
        }
        for t in response.tiers
    }
    return {
        "node_id": response.node_id,
        "epoch": response.epoch,
        "tiers": tiers,
        "counters": dict(response.counters),
    }


KEY_OVERHEAD = 8  # bytes a key costs in a batch request besides itself (field tags, lengths)


def same_key(key: bytes) -> bytes:
    """The key of an item that is a key itself."""
    return key


def key_size(key: bytes) -> int:
    """What a key costs in a batch request (``chunks`` totals keys without calling it)."""
    return len(key) + KEY_OVERHEAD


def chunks(
    items: Sequence[T], size: Callable[[T], int], max_items: int, max_bytes: int
) -> Iterator[Sequence[T]]:
    """``items`` in order, cut into runs of at most ``max_items`` and about ``max_bytes``.

    An item bigger than ``max_bytes`` travels alone; the server judges whether it fits.
    """
    if 0 < len(items) <= max_items:
        if size is key_size:  # keys: totalled in C, without a call per key
            total = sum(map(len, cast(Sequence[bytes], items))) + KEY_OVERHEAD * len(items)
        else:
            total = sum(map(size, items))
        if total <= max_bytes:
            yield items  # the common case, without a Python step per item
            return
    start, total = 0, 0
    for i, item in enumerate(items):
        n = size(item)
        if i > start and (i - start >= max_items or total + n > max_bytes):
            yield items[start:i]
            start, total = i, 0
        total += n
    if start < len(items):
        yield items[start:]
