"""The packed byte layout of one item in the cold tier: a 26-byte header, then the payload.

Per-item metadata kept as separate Python objects would cost more than the item
itself, so the cold tier stores this header followed by the compressed payload as
one LMDB value. The RAM tiers pack a header of their own, with the key and the
sizes a log walk needs, into their arena (arena.py).
"""

from __future__ import annotations

import struct

from memcluster.node.tiers.base import Item

# version, origin, expires_ms, last access (Unix seconds), priority, flags, LFU counter
HEADER = struct.Struct("<QHqIhBB")
HEADER_SIZE = HEADER.size
TOMBSTONE = 0x01
PRIORITY_MIN = -(1 << 15)
PRIORITY_MAX = (1 << 15) - 1

_pack = HEADER.pack
_unpack_from = HEADER.unpack_from


def pack(item: Item, payload: bytes, access: int, lfu: int = 0) -> bytes:
    """Header + payload for ``item`` (``payload`` is the value, encoded by the tier)."""
    flags = TOMBSTONE if item.tombstone else 0
    return (
        _pack(item.version, item.origin, item.expires_ms, access, item.priority, flags, lfu)
        + payload
    )


def unpack(record: bytes, value: bytes) -> Item:
    """The Item of a record whose payload the tier has already decoded to ``value``."""
    version, origin, expires_ms, _access, priority, flags, _lfu = _unpack_from(record)
    return Item(value, version, origin, expires_ms, priority, bool(flags & TOMBSTONE))


def meta(record: bytes | memoryview) -> tuple[int, int, int, int, int, int, int]:
    """The raw header fields: version, origin, expires_ms, access, priority, flags, lfu
    (``record`` may be a buffer into LMDB's map: only ints are read from it)."""
    return _unpack_from(record)
