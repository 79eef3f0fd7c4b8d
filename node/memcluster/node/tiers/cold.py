"""The cold tier: compressed items in LMDB on local disk, served again after kill -9.

One LMDB environment holds four named databases, each keyed by an item's *stored key*
(see "Long keys" below):

- ``items``: stored key -> record (record.py's header, then the codec's payload)
- ``order``: 8-byte big-endian sequence -> stored key, oldest first: the LRU list
- ``seq``: stored key -> its sequence, so that a touch or a removal finds its ``order``
  entry.
  A database of its own rather than a prefix of the record, so that a touch rewrites
  a 16-byte entry instead of a record that may weigh a megabyte.
- ``meta``: ``counters`` (bytes held, item count, next sequence) and ``dict:<n>``, the
  codec's trained zstd dictionaries, each committed before any record uses it.

Every change commits in one write transaction together with the counters it implies,
so opening reads the counters back instead of scanning, and whatever ``put`` returned
survives kill -9: a committed transaction is in the operating system's hands even
when it is not yet on disk. With ``sync_each_commit`` every commit is also fsynced
(power loss loses nothing, at the price of an fsync per write: about 0.5 ms here);
without it the owner calls ``flush`` periodically, and a power loss can lose the
commits since the last flush (LMDB keeps its integrity where the file system keeps
write order).

Reads do not write: ``get`` notes the access in memory, and the next write
transaction (or every ``TOUCH_BATCH`` accesses) moves the touched keys to the end of
``order``. A synced write per read would cost an fsync per get; an unsynced one
(``sync=False``) could leave a torn file after a power loss. Accesses not yet applied
when the process dies are lost, which only blurs the LRU order.

Long keys: LMDB refuses keys over ``env.max_key_size()`` (511 bytes), but the node
accepts keys up to ``limits.max_key_bytes`` (up to 65535) and demotes them here. A key
is stored as itself unless it is longer than ``RAW_KEY_MAX`` (480) bytes, or is exactly
``DIGEST_KEY_LEN`` (33) bytes starting with ``DIGEST_MARKER`` (0xff); those are stored
under ``DIGEST_MARKER + blake2b-256(key)``, which is 33 bytes starting with 0xff. So a
stored key has the digest form if and only if it is 33 bytes starting with 0xff: a raw
key never takes that form (the length rule digests the only raw keys that could), and
two digested keys meet only on a blake2b collision. The record of a digested key has
``LONG_KEY`` (0x02) set in its header's flags byte, and its payload starts with the
original key (``<I`` length, then the bytes) before the codec's payload, so that scan,
eviction and expiry hand back the original key; decoding checks that the embedded key
digests to the stored key. ``scan`` therefore yields in stored-key order, in which a
digested key sorts by its digest. (A store written before this scheme that holds a raw
33-byte key starting with 0xff keeps it, but reaches it only through scan and eviction.)
"""

from __future__ import annotations

import hashlib
import logging
import os
import struct
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import lmdb
import zstandard

from memcluster.common.clock import Clock, SystemClock
from memcluster.common.errors import CapacityExceeded, InternalError, InvalidRequest
from memcluster.node.tiers import record
from memcluster.node.tiers.base import Item
from memcluster.node.tiers.codec import Codec

_log = logging.getLogger(__name__)
_T = TypeVar("_T")

#: Bytes each item costs beyond its record and its stored key: three LMDB leaf nodes
#: (``items``, ``order``, ``seq``), each an 8-byte node header plus a 2-byte slot in
#: its page's index, and the 8-byte sequence stored twice. The stored key is stored
#: three times (``item_cost`` counts that); a long key's own bytes are in its record.
#: Not counted: B-tree page slack (pages run half to fully used), which depends on the
#: insertion pattern, not on the item.
ITEM_OVERHEAD = 3 * (8 + 2) + 8 + 8
EVICTION_WINDOW = 16  # the oldest entries compared by priority for each eviction
TOUCH_BATCH = 256  # accesses noted in memory before a write transaction applies them
SCAN_CHUNK = 256  # entries, and ...
SCAN_CHUNK_BYTES = 4 << 20  # ... bytes, copied out of one read transaction by scan()
MIN_MAP_SIZE = 64 << 20
_MAP_GROWTHS = 4  # times a full map doubles before a write gives up
_NODE_HEADER = 8
_PAGE_HEADER = 16
_COUNTERS_KEY = b"counters"
_COUNTERS = struct.Struct("<QQQ")  # bytes held, item count, next sequence
_SEQ = struct.Struct(">Q")  # big-endian, so that LMDB's byte order is numeric order
_DICT_PREFIX = b"dict:"
#: Keys up to this many bytes are stored as themselves (LMDB's limit is 511).
RAW_KEY_MAX = 480
DIGEST_MARKER = 0xFF
DIGEST_KEY_LEN = 33  # the marker byte, then a 32-byte blake2b digest
#: Record flag (beside record.TOMBSTONE): the payload starts with the original key.
LONG_KEY = 0x02
_KEY_LEN = struct.Struct("<I")
_FLAGS = 5  # the flags field's index in record.meta()


def digested(key: bytes) -> bool:
    """Whether ``key`` is stored in the digest form rather than as itself."""
    return len(key) > RAW_KEY_MAX or (len(key) == DIGEST_KEY_LEN and key[0] == DIGEST_MARKER)


def stored_key(key: bytes) -> bytes:
    """The LMDB key of ``key``: itself, or the digest form for the keys it cannot be."""
    if digested(key):
        return bytes((DIGEST_MARKER,)) + hashlib.blake2b(key, digest_size=32).digest()
    return key


def _name(key: bytes | memoryview) -> str:
    """``key`` for an error message, shortened: long keys run to 64 KiB."""
    key = bytes(key)
    return repr(key) if len(key) <= 64 else f"{key[:48]!r}... ({len(key)} bytes)"


@dataclass(slots=True)
class _Write:
    """One write transaction and the counters it will commit with."""

    txn: Any
    held: int
    count: int
    seq: int


class ColdTier:
    """The last tier: evicted items are dropped for good, so eviction here loses data.

    Single-threaded, like the node's other data structures, with one exception:
    ``flush`` may be called from another thread, so that the owner can take the fsync,
    which runs for milliseconds under write load, off its event loop. That is safe
    because ``flush`` touches none of the tier's Python state, only LMDB's
    ``mdb_env_sync``: without ``writemap`` an fdatasync of the data file, which py-lmdb
    runs with the GIL released and which needs no transaction, so the owner's
    transactions go on beside it. A lock keeps ``close`` from closing the environment
    under it (``close`` waits for a flush under way, and a flush after ``close`` does
    nothing) and keeps two flushes from running at once. Everything else runs on the
    owner's thread. (py-lmdb 3 also makes ``set_mapsize`` wait for a sync under way, so
    a write that grows the map may wait for a flush.)

    One process per path: the counters are read once at open and then kept in memory.
    """

    name = "cold"

    def __init__(
        self,
        path: str,
        capacity: int,
        compression_level: int = 5,
        *,
        clock: Clock | None = None,
        map_size: int | None = None,
        sync_each_commit: bool = True,
    ) -> None:
        self.path = path
        self.capacity = capacity
        #: Kept for constructor symmetry with the other tiers: every call takes ``now``.
        self.clock = clock or SystemClock()
        os.makedirs(path, exist_ok=True)
        # The map is reserved address space, not disk: be generous, since puts may
        # exceed capacity until the store calls evict_overflow.
        size = map_size or max(capacity * 2 + MIN_MAP_SIZE, MIN_MAP_SIZE)
        self._env = lmdb.open(
            path,
            map_size=size,
            subdir=True,
            sync=sync_each_commit,
            metasync=sync_each_commit,
            max_dbs=4,
            lock=True,
            readahead=False,
        )
        self._items = self._env.open_db(b"items")
        self._order = self._env.open_db(b"order")
        self._seq = self._env.open_db(b"seq")
        self._meta = self._env.open_db(b"meta")
        if (limit := self._env.max_key_size()) < RAW_KEY_MAX:  # a build with a smaller one
            self._env.close()
            raise InternalError(f"LMDB takes keys of {limit} bytes at most; need {RAW_KEY_MAX}")
        self._psize = self._env.stat()["psize"]
        # LMDB moves a value to overflow pages of its own when its node outgrows this.
        self._node_max = (((self._psize - _PAGE_HEADER) // 2) & ~1) - 2
        self._touched: dict[bytes, None] = {}  # an ordered set, oldest access first
        self._expiry_next = b""  # where pop_expired resumes
        self._closed = False
        #: Held by ``flush`` (on any thread) and ``close`` around the environment's sync.
        self._sync_lock = threading.Lock()
        self._codec = Codec(compression_level, on_trained=self._save_dictionary, background=True)
        with self._env.begin() as txn:
            counters = txn.get(_COUNTERS_KEY, db=self._meta)
            held, count, seq = _COUNTERS.unpack(counters) if counters else (0, 0, 0)
            self._held: int = held
            self._count: int = count
            self._next_seq: int = seq
            cursor = txn.cursor(db=self._meta)
            found = cursor.set_range(_DICT_PREFIX)
            while found and cursor.key().startswith(_DICT_PREFIX):
                number = int(cursor.key()[len(_DICT_PREFIX) :])
                self._codec.add_dictionary(number, cursor.value())
                found = cursor.next()

    @property
    def bytes_held(self) -> int:
        """Stored keys + records + ``ITEM_OVERHEAD`` per item, as last committed."""
        return self._held

    def __len__(self) -> int:
        return self._count

    def __contains__(self, key: bytes) -> bool:
        if not key:
            return False
        with self._env.begin(buffers=True) as txn:
            return txn.get(stored_key(key), db=self._seq) is not None

    def holding(self, keys: list[bytes]) -> list[bytes]:
        """The ``keys`` held here, looked up in one read transaction."""
        with self._env.begin(buffers=True) as txn:
            return [k for k in keys if k and txn.get(stored_key(k), db=self._seq) is not None]

    def item_cost(self, key_len: int, record_len: int) -> int:
        """What one item adds to ``bytes_held``: large records occupy whole pages.

        ``key_len`` is the stored key's length and ``record_len`` the stored record's
        (which holds a long key's own bytes).
        """
        stored = record_len
        if _NODE_HEADER + key_len + record_len > self._node_max:
            pages = -(-(_PAGE_HEADER + record_len) // self._psize)
            stored = 8 + pages * self._psize  # the node keeps the first page's number
        return ITEM_OVERHEAD + 3 * key_len + stored

    def get(self, key: bytes, now: float) -> Item | None:
        """The item, noting the access; it reaches ``order`` with the next write."""
        if not key:
            return None
        stored = stored_key(key)
        item = self._peek(stored)
        if item is not None:
            self._touched.pop(stored, None)
            self._touched[stored] = None
            if len(self._touched) >= TOUCH_BATCH:
                self._write(lambda w: None)
        return item

    def get_many(self, keys: Sequence[bytes], now: float) -> list[Item | None]:
        """``get`` of each key."""
        return [self.get(key, now) for key in keys]

    def remove_if(self, key: bytes, item: Item) -> bool:
        """Remove ``key`` if held at ``item``'s version (see ``Tier.remove_if``): the
        record's header is compared in the write transaction, its payload not decoded."""
        if not key:
            return False
        stored = stored_key(key)

        def remove(w: _Write) -> bool:
            found = w.txn.get(stored, db=self._items)
            if found is None:
                return False
            version, origin = self._header(stored, found)[:2]
            if version != item.version or origin != item.origin:
                return False
            return self._remove(w, stored) is not None

        return self._write(remove)

    def live_values(self, keys: Sequence[bytes], now: float) -> list[bytes | None]:
        """The value of each key held here live (see ``Tier.live_values``), else None."""
        now_ms = int(now * 1000)
        return [
            None if i is None or i.tombstone or i.expired(now_ms) else i.value
            for i in self.get_many(keys, now)
        ]

    def peek(self, key: bytes) -> Item | None:
        """The item without counting an access: the store's own look-ups use it."""
        return self._peek(stored_key(key)) if key else None

    def put(self, key: bytes, item: Item, now: float) -> None:
        """Store ``item`` durably (one synced transaction); may exceed capacity."""
        self.put_many([(key, item)], now)

    def put_many(self, items: list[tuple[bytes, Item]], now: float) -> None:
        """Store a batch in one synced transaction: demotions and shutdown flushes."""
        if any(not key for key, _ in items):
            raise InvalidRequest("cold tier keys must not be empty")
        # Compress before the transaction opens: training a dictionary commits it
        # in a transaction of its own, before the first record that uses it.
        access = int(now)
        records = [(stored_key(key), self._pack(key, item, access)) for key, item in items]

        def insert(w: _Write) -> None:
            for stored, data in records:
                self._insert(w, stored, data)

        self._write(insert)

    def pop(self, key: bytes) -> Item | None:
        """Remove and return the item; a corrupt record stays, and the error names it."""
        popped = self.pop_many([key])
        return popped[0][1] if popped else None

    def pop_many(self, keys: list[bytes]) -> list[tuple[bytes, Item]]:
        """Remove the held ones among ``keys`` in one transaction (absent keys skipped)."""
        valid = [stored_key(key) for key in keys if key]

        def remove(w: _Write) -> list[tuple[bytes, Item]]:
            removed = [(stored, self._remove(w, stored)) for stored in valid]
            return [self._decode(stored, data) for stored, data in removed if data is not None]

        return self._write(remove) if valid else []

    def evict_overflow(self, now: float) -> list[tuple[bytes, Item]]:
        """Drop the lowest-priority of the ``EVICTION_WINDOW`` oldest until within capacity.

        A record too corrupt to decode is dropped and logged, not returned: raising
        would wedge eviction on it forever.
        """
        if self._held <= self.capacity:
            return []

        def evict(w: _Write) -> list[tuple[bytes, Item]]:
            evicted: list[tuple[bytes, Item]] = []
            while w.held > self.capacity and w.count:
                stored = self._victim(w.txn)
                evicted += self._dropped(stored, self._remove(w, stored))
            return evicted

        return self._write(evict)

    def pop_idle(self, now: float, limit: int) -> list[tuple[bytes, Item]]:
        """Nothing: the cold tier is the last one, with no residence ttl to demote on."""
        return []

    def pop_expired(self, now: float, limit: int) -> list[tuple[bytes, Item]]:
        """Remove up to ``limit`` expired items, examining at most max(4 * limit, 256).

        Each call resumes where the last one stopped and wraps around, so repeated
        calls (cleanup_interval) sweep the whole tier in bounded steps.
        """
        now_ms = int(now * 1000)
        budget = min(max(4 * limit, 256), self._count)
        expired: list[bytes] = []
        with self._env.begin(buffers=True) as txn:
            cursor = txn.cursor(db=self._items)
            found = cursor.set_range(self._expiry_next)
            for _ in range(budget):
                if len(expired) >= limit:
                    break
                if not found and not cursor.first():
                    break
                key = cursor.key()
                expires_ms = self._header(key, cursor.value())[2]
                if 0 < expires_ms <= now_ms:
                    expired.append(bytes(key))
                found = cursor.next()
            self._expiry_next = bytes(cursor.key()) if found else b""
        if not expired:
            return []

        def remove(w: _Write) -> list[tuple[bytes, Item]]:
            return [pair for st in expired for pair in self._dropped(st, self._remove(w, st))]

        return self._write(remove)

    def scan(self) -> Iterator[tuple[bytes, Item]]:
        """Every item in stored-key order, copied out in chunks, without counting accesses.

        Short keys come in byte order; a digested (long) key sorts by its digest form.

        No transaction stays open between chunks, so callers may change the tier
        while iterating: an item held throughout is yielded exactly once; one added
        or removed meanwhile may or may not be.
        """
        after: bytes | None = None
        while True:
            chunk = self._read_chunk(after)
            if not chunk:
                return
            for stored, data in chunk:
                yield self._decode(stored, data)
            after = chunk[-1][0]

    def keys(self) -> Iterator[bytes]:
        """Every key held now: a read transaction (a snapshot) opens at the call, not at
        the first ``next``, so that the store can snapshot all its tiers at one instant.
        Values are not read, long keys excepted."""
        txn = self._env.begin()
        return self._keys_of(txn)

    def _keys_of(self, txn: Any) -> Iterator[bytes]:
        try:
            cursor = txn.cursor(db=self._items)
            for stored in cursor.iternext(keys=True, values=False):
                if len(stored) == DIGEST_KEY_LEN and stored[0] == DIGEST_MARKER:
                    try:
                        yield self._original_key(stored, cursor.value())[0]
                    except (ValueError, struct.error, InternalError):
                        _log.warning("cold record %s has an unreadable key", _name(stored))
                else:
                    yield stored
        finally:
            txn.abort()

    def flush(self) -> None:
        """fsync what has been committed (for a tier opened without sync_each_commit).

        The one method that may run on another thread (see the class docstring); once
        the tier is closed it does nothing.
        """
        with self._sync_lock:
            if not self._closed:
                self._env.sync(True)

    def close(self) -> None:
        """Apply pending accesses, fsync and close; closing twice is harmless.

        Waits for a ``flush`` under way on another thread: the environment must not
        close under its sync.
        """
        if self._closed:
            return
        with self._sync_lock:
            self._closed = True
            try:
                if self._touched:
                    self._write(lambda w: None)
                self._env.sync(True)
            finally:
                self._env.close()

    def _peek(self, stored: bytes) -> Item | None:
        with self._env.begin() as txn:
            data = txn.get(stored, db=self._items)
        return None if data is None else self._decode(stored, data)[1]

    def _pack(self, key: bytes, item: Item, access: int) -> bytes:
        """The stored record: a long key's goes first in the payload, flagged LONG_KEY."""
        payload = self._codec.compress(item.value)
        if not digested(key):
            return record.pack(item, payload, access)
        fields = list(record.meta(record.pack(item, b"", access)))
        fields[_FLAGS] |= LONG_KEY
        return record.HEADER.pack(*fields) + _KEY_LEN.pack(len(key)) + key + payload

    def _write(self, change: Callable[[_Write], _T]) -> _T:
        """Run ``change`` in one write transaction with pending touches and counters."""
        growths = 0
        while True:
            w = _Write(None, self._held, self._count, self._next_seq)
            try:
                with self._env.begin(write=True, buffers=True) as txn:
                    w.txn = txn
                    for key in self._touched:
                        self._move_to_end(w, key)
                    result = change(w)
                    txn.put(_COUNTERS_KEY, _COUNTERS.pack(w.held, w.count, w.seq), db=self._meta)
            except lmdb.MapFullError as exc:
                if growths == _MAP_GROWTHS:
                    raise CapacityExceeded(f"cold tier {self.path}: LMDB map is full") from exc
                growths += 1
                self._env.set_mapsize(self._env.info()["map_size"] * 2)
                continue
            self._held, self._count, self._next_seq = w.held, w.count, w.seq
            self._touched.clear()
            return result

    def _insert(self, w: _Write, key: bytes, data: bytes) -> None:
        self._remove(w, key)
        seq = _SEQ.pack(w.seq)
        w.seq += 1
        w.txn.put(key, data, db=self._items)
        w.txn.put(key, seq, db=self._seq)
        w.txn.put(seq, key, db=self._order, append=True)
        w.held += self.item_cost(len(key), len(data))
        w.count += 1

    def _remove(self, w: _Write, key: bytes) -> bytes | None:
        # Copy every buffer before the next write: LMDB may move or reuse its page.
        found = w.txn.get(key, db=self._items)
        if found is None:
            return None
        data = bytes(found)
        seq = bytes(w.txn.get(key, db=self._seq))
        w.txn.delete(seq, db=self._order)
        w.txn.delete(key, db=self._seq)
        w.txn.delete(key, db=self._items)
        w.held -= self.item_cost(len(key), len(data))
        w.count -= 1
        return data

    def _move_to_end(self, w: _Write, key: bytes) -> None:
        old = w.txn.get(key, db=self._seq)
        if old is None:  # removed since it was read
            return
        w.txn.delete(bytes(old), db=self._order)
        seq = _SEQ.pack(w.seq)
        w.seq += 1
        w.txn.put(key, seq, db=self._seq)
        w.txn.put(seq, key, db=self._order, append=True)

    def _victim(self, txn: Any) -> bytes:
        best, best_priority = b"", 0
        for i, (_, key) in enumerate(txn.cursor(db=self._order)):
            if i == EVICTION_WINDOW:
                break
            priority = self._header(key, txn.get(key, db=self._items))[4]
            if not best or priority < best_priority:  # strict: ties keep the oldest
                best, best_priority = bytes(key), priority
        return best

    def _read_chunk(self, after: bytes | None) -> list[tuple[bytes, bytes]]:
        chunk: list[tuple[bytes, bytes]] = []
        size = 0
        with self._env.begin() as txn:
            cursor = txn.cursor(db=self._items)
            found = cursor.first() if after is None else cursor.set_range(after)
            if found and cursor.key() == after:
                found = cursor.next()
            while found and len(chunk) < SCAN_CHUNK and size < SCAN_CHUNK_BYTES:
                chunk.append(cursor.item())
                size += len(chunk[-1][1])
                found = cursor.next()
        return chunk

    def _save_dictionary(self, number: int, data: bytes) -> None:
        self._write(lambda w: w.txn.put(_DICT_PREFIX + b"%d" % number, data, db=self._meta))

    def _header(
        self, key: bytes | memoryview, data: Any
    ) -> tuple[int, int, int, int, int, int, int]:
        if data is None or len(data) < record.HEADER_SIZE:
            raise InternalError(f"cold tier {self.path}: record of key {_name(key)} is truncated")
        return record.meta(data)

    def _original_key(self, stored: bytes, data: bytes) -> tuple[bytes, int]:
        """The key a record was stored for, and where its payload starts."""
        payload_at = record.HEADER_SIZE
        if not self._header(stored, data)[_FLAGS] & LONG_KEY:
            return stored, payload_at
        (length,) = _KEY_LEN.unpack_from(data, payload_at)
        payload_at += _KEY_LEN.size + length
        if payload_at > len(data):
            raise ValueError("its embedded key is truncated")
        embedded = bytes(data[payload_at - length : payload_at])
        if stored_key(embedded) != stored:
            raise ValueError("its embedded key does not match its LMDB key")
        return embedded, payload_at

    def _decode(self, stored: bytes, data: bytes) -> tuple[bytes, Item]:
        """The original key and the item of the record stored under ``stored``."""
        key = stored
        try:
            key, payload_at = self._original_key(stored, data)
            item = record.unpack(data, self._codec.decompress(data[payload_at:]))
        except (ValueError, IndexError, struct.error, zstandard.ZstdError) as exc:
            raise InternalError(
                f"cold tier {self.path}: record of key {_name(key)} is unreadable: {exc}"
            ) from exc
        return key, item

    def _dropped(self, stored: bytes, data: bytes | None) -> list[tuple[bytes, Item]]:
        """The removed pair, or nothing (logged) for a record that cannot be decoded."""
        if data is None:
            return []
        try:
            return [self._decode(stored, data)]
        except InternalError:
            _log.exception("dropped an unreadable cold record")
            return []
