"""Packed record storage for the RAM tiers: a log of records in mmap segments, a hash index.

One Python object per item (a key ``bytes``, a record ``bytes``, a dict entry) costs
more than a 100-byte value itself, so nothing here is per item: records are packed
into anonymous memory maps of ``SEGMENT`` bytes and the index is a table of 64-bit
integers. A record is a 32-byte header (the item's metadata, access time and LFU
counter, updated in place), the key, then the payload. Payloads over ``BIG_PAYLOAD``
stay separate ``bytes`` objects (their copy would be as large as the object overhead
is small) behind an 8-byte handle in the record.

Why a log and not slab classes: size classes strand memory when the mix of sizes
changes (memcached's calcification) and round every record up to its class. Here a
record is appended at the head segment; a removed one leaves dead bytes, a segment
whose records are all dead is unmapped at once, and when dead bytes pass
``COMPACT_DEAD`` of the log the sparsest segment is evacuated (live records copied to
the head) a few records per write. Dead space therefore stays bounded without any
pause: the tier's ``bytes_held`` counts live records and an index share, and the
maps hold at most about ``1 / (1 - COMPACT_DEAD)`` of the live records plus a couple
of segments. An eviction hand walks segments oldest first (``sweep``) so that
eviction can pick its victims where they empty whole segments.

The index (``index.py``) maps a key's hash to its record's location in 64-bit slots;
a tag match there is only a candidate, checked here against the record's key.

Segments also remember the oldest access time and the earliest expiry of the records
written into them, so that idle demotion and expiry only walk segments that can hold
something due (see ``pop_idle`` and ``pop_expired``).
"""

from __future__ import annotations

import mmap
import struct
from collections.abc import Callable, Sequence

from memcluster.node.tiers.index import (
    HASH_MASK,
    LOC_BITS,
    LOC_MASK,
    Index,
    Shard,
)

SEGMENT_BITS = 20
SEGMENT = 1 << SEGMENT_BITS  # bytes per memory map
BIG_PAYLOAD = 64 * 1024  # larger payloads are kept as separate bytes objects
COMPACT_DEAD = 0.2  # evacuate segments once this fraction of the log is dead
COMPACT_WORK = 4  # bytes copied per byte written while compacting (keeps up at 20% dead)
SPARSE = 0.25  # a segment this empty is evacuated whatever the dead total: copying is cheap
SPARE_SEGMENTS = 2  # emptied maps kept for reuse instead of unmapped
OFFSET_MASK = SEGMENT - 1

# version, origin, expires_ms, access (Unix s), priority, flags, lfu, stored size, key length
HEADER = struct.Struct("<QHqIhBBIH")
HEADER_SIZE = HEADER.size
_ACCESS_AT = 18
_FLAGS_AT = 24
_LFU_AT = 25
_KLEN_AT = 30
_ACCESS = struct.Struct("<I")
_KLEN = struct.Struct("<H")
_RANK = struct.Struct("<18xIhxB")  # access, priority, lfu
_LIVE = struct.Struct("<10xqI2xBxIH")  # expires_ms, access, flags, stored size, key length
_HANDLE = struct.Struct("<Q")
TOMBSTONE = 0x01  # the item's own flag, stored for the tier
_BIG = 0x40
_DEAD = 0x80

Meta = tuple[int, int, int, int, int, int, int, int, int]
Removed = tuple[bytes, Meta, bytes]  # key, header, payload
#: Stands for an unmapped segment number (a private map never written: no memory).
_ABSENT = mmap.mmap(-1, mmap.PAGESIZE, flags=mmap.MAP_PRIVATE)
_unpack_from = HEADER.unpack_from
_pack_into = HEADER.pack_into


class Arena:
    """Records keyed by bytes, packed in memory maps (see the module docstring)."""

    def __init__(self) -> None:
        self._reset()

    def _reset(self) -> None:
        self._index = Index()
        self._count = 0
        # Per segment number (0 is never used, so that no location is 0):
        self._segs: list[mmap.mmap] = [_ABSENT]
        self._used = [0]
        self._live = [0]
        self._min_access = [0]
        self._min_expiry = [0]  # 0: no record with an expiry
        self._born = [0]  # when each segment was opened, in segments opened so far
        self._opened = 0
        self._free_numbers: list[int] = []
        self._spare: list[mmap.mmap] = []
        self._head = 0
        self._head_off = SEGMENT  # full: the first append opens a segment
        self._live_bytes = 0
        self._used_bytes = 0
        self._big: dict[int, bytes] = {}
        self._big_next = 0
        self._big_bytes = 0
        # Evacuation (compaction and idle walk) and expiry walk cursors: (segment, offset).
        self._evac = 0
        self._evac_off = 0
        self._exp_seg = 0
        self._exp_off = 0
        self._sparse: list[int] = []  # segments that fell under SPARSE (checked when taken)
        self._hand = 0  # the eviction hand: a segment walked in order of opening
        self._hand_off = 0
        #: Segments emptied by evacuation (compaction or idle walk) since the start.
        self.evacuated = 0

    # -- size ------------------------------------------------------------------

    def __len__(self) -> int:
        return self._count

    @property
    def record_bytes(self) -> int:
        """Bytes of live records, large payloads kept apart included."""
        return self._live_bytes + self._big_bytes

    @property
    def big_count(self) -> int:
        """Payloads kept as their own bytes objects."""
        return len(self._big)

    @property
    def index_bytes(self) -> int:
        """Bytes of index slots (the index grows, never shrinks)."""
        return self._index.bytes

    @property
    def mapped_bytes(self) -> int:
        """Bytes of the memory maps in use (live and dead records, spare maps excluded)."""
        return sum(SEGMENT for seg in self._segs if seg is not _ABSENT)

    @property
    def dead_bytes(self) -> int:
        """Bytes of removed records not yet reclaimed."""
        return self._used_bytes - self._live_bytes

    # -- lookups ---------------------------------------------------------------

    def find(self, key: bytes) -> int:
        """The location of ``key``'s record, 0 if absent."""
        return self._locate(key)[3]

    def read(self, key: bytes) -> tuple[int, Meta, bytes] | None:
        """``key``'s record as (location, header, payload): ``find``, ``meta`` and
        ``payload`` in one call, for the read path."""
        loc = self._locate(key)[3]
        if not loc:
            return None
        seg = self._segs[loc >> SEGMENT_BITS]
        off = loc & OFFSET_MASK
        meta: Meta = _unpack_from(seg, off)
        start = off + HEADER_SIZE + meta[8]
        if meta[5] & _BIG:
            return loc, meta, self._big[_HANDLE.unpack_from(seg, start)[0]]
        return loc, meta, seg[start : start + meta[7]]

    def read_many(self, keys: Sequence[bytes]) -> list[tuple[int, Meta, bytes] | None]:
        """``read`` of each key, in one loop (a batch read's path: ``_locate``'s probe is
        repeated here because a call per key costs about as much as the probe; a slot
        whose tag matches is nearly always the key's, so its header, wanted then, is
        read before the key is compared)."""
        segs, big, dirs, dir_shift = self._segs, self._big, self._index.dir, self._index.shift
        found: list[tuple[int, Meta, bytes] | None] = []
        append = found.append
        for key in keys:
            tag = (hash(key) & HASH_MASK) >> LOC_BITS
            shard = dirs[tag >> dir_shift]
            slots, mask = shard.slots, shard.mask
            pos = (tag >> shard.shift) & mask
            klen = len(key)
            while slot := slots[pos]:
                if slot >> LOC_BITS == tag:
                    loc = slot & LOC_MASK
                    seg = segs[loc >> SEGMENT_BITS]
                    off = loc & OFFSET_MASK
                    meta: Meta = _unpack_from(seg, off)
                    start = off + HEADER_SIZE + klen
                    if meta[8] == klen and seg[off + HEADER_SIZE : start] == key:
                        if meta[5] & _BIG:
                            append((loc, meta, big[_HANDLE.unpack_from(seg, start)[0]]))
                        else:
                            append((loc, meta, seg[start : start + meta[7]]))
                        break
                pos = (pos + 1) & mask
            else:
                append(None)
        return found

    def read_live(
        self, keys: Sequence[bytes], now_ms: int, stale: int, access: int
    ) -> list[bytes | None]:
        """The payload of each key held live (neither a tombstone nor expired at
        ``now_ms``), else None; a record read whose access time is at most ``stale`` gets
        ``access`` written in place (an LRU read).

        ``read_many`` and the caller's checks in one loop, on only the header fields
        they need: the batch read's first tier, where most of a read's time goes.
        """
        segs, big, dirs, dir_shift = self._segs, self._big, self._index.dir, self._index.shift
        header, note = _LIVE.unpack_from, _ACCESS.pack_into
        found: list[bytes | None] = []
        append = found.append
        for key in keys:
            tag = (hash(key) & HASH_MASK) >> LOC_BITS
            shard = dirs[tag >> dir_shift]
            slots, mask = shard.slots, shard.mask
            pos = (tag >> shard.shift) & mask
            klen = len(key)
            while slot := slots[pos]:
                if slot >> LOC_BITS == tag:
                    loc = slot & LOC_MASK
                    seg = segs[loc >> SEGMENT_BITS]
                    off = loc & OFFSET_MASK
                    expires, seen, flags, size, length = header(seg, off)
                    start = off + HEADER_SIZE + klen
                    if length == klen and seg[off + HEADER_SIZE : start] == key:
                        if flags & TOMBSTONE or 0 < expires <= now_ms:
                            append(None)
                            break
                        if seen <= stale:
                            note(seg, off + _ACCESS_AT, access)
                        if flags & _BIG:
                            append(big[_HANDLE.unpack_from(seg, start)[0]])
                        else:
                            append(seg[start : start + size])
                        break
                pos = (pos + 1) & mask
            else:
                append(None)
        return found

    def meta(self, loc: int) -> Meta:
        """The header of the record at ``loc``: version, origin, expires_ms, access,
        priority, flags, lfu, stored size, key length."""
        return _unpack_from(self._segs[loc >> SEGMENT_BITS], loc & OFFSET_MASK)

    def payload(self, loc: int, meta: Meta) -> bytes:
        """The payload of the record at ``loc`` whose header is ``meta``."""
        seg = self._segs[loc >> SEGMENT_BITS]
        start = (loc & OFFSET_MASK) + HEADER_SIZE + meta[8]
        if meta[5] & _BIG:
            return self._big[_HANDLE.unpack_from(seg, start)[0]]
        return seg[start : start + meta[7]]

    def key_at(self, loc: int) -> bytes:
        """The key of the record at ``loc``."""
        seg = self._segs[loc >> SEGMENT_BITS]
        off = loc & OFFSET_MASK
        klen = _KLEN.unpack_from(seg, off + _KLEN_AT)[0]
        return seg[off + HEADER_SIZE : off + HEADER_SIZE + klen]

    def set_access(self, loc: int, access: int, lfu: int) -> None:
        """Record a read in place: access time (Unix seconds) and LFU counter."""
        seg = self._segs[loc >> SEGMENT_BITS]
        off = loc & OFFSET_MASK
        _ACCESS.pack_into(seg, off + _ACCESS_AT, access)
        seg[off + _LFU_AT] = lfu

    def key_list(self) -> list[bytes]:
        """Every key held."""
        key_at = self.key_at
        return [key_at(loc) for loc in self._index.locations()]

    # -- writes ----------------------------------------------------------------

    def store(  # noqa: PLR0917 (the write path: one call, no tuple to build and unpack)
        self,
        key: bytes,
        version: int,
        origin: int,
        expires: int,
        access: int,
        priority: int,
        flags: int,
        lfu: int,
        payload: bytes,
    ) -> None:
        """Store a record for ``key``, replacing any earlier one.

        A replacement of the same size is written in place: no dead bytes, no compaction.
        """
        shard, pos, tag, loc = self._locate(key)
        klen = len(key)
        replaced = False
        if loc:
            seg_no = loc >> SEGMENT_BITS
            seg = self._segs[seg_no]
            off = loc & OFFSET_MASK
            old = _unpack_from(seg, off)
            size = len(payload)
            if old[7] == size and not old[5] & _BIG:
                _pack_into(
                    seg, off, version, origin, expires, access, priority, flags, lfu, size, klen
                )
                start = off + HEADER_SIZE + klen
                seg[start : start + size] = payload
                self._note(seg_no, access, expires)
                return
            self._kill(loc, old)
            replaced = True
        loc = self._append(key, version, origin, expires, access, priority, flags, lfu, payload)
        if replaced:
            shard.slots[pos] = (tag << LOC_BITS) | loc
        else:
            self._count += 1  # first: the record is held even if the index cannot grow
            self._index.fill(shard, pos, tag, loc)
        # Only now that the new record is indexed may compaction move it.
        if (
            self._evac
            or self._sparse
            or self._used_bytes - self._live_bytes > COMPACT_DEAD * self._used_bytes
        ):
            self.compact(COMPACT_WORK * (HEADER_SIZE + klen + len(payload)))

    def remove(self, key: bytes) -> Removed | None:
        """Remove ``key``'s record."""
        shard, pos, _tag, loc = self._locate(key)
        if not loc:
            return None
        self._index.unslot(shard, pos)
        meta, value = self._take(loc)
        return key, meta, value

    def remove_if(self, key: bytes, version: int, origin: int) -> bool:
        """Remove ``key``'s record if it holds that version and origin; True if removed."""
        shard, pos, _tag, loc = self._locate(key)
        if not loc:
            return False
        meta: Meta = _unpack_from(self._segs[loc >> SEGMENT_BITS], loc & OFFSET_MASK)
        if meta[0] != version or meta[1] != origin:
            return False
        self._index.unslot(shard, pos)
        self._kill(loc, meta)
        self._count -= 1
        return True

    def remove_at(self, loc: int) -> Removed:
        """Remove the record at ``loc`` (from ``sample``, say)."""
        seg = self._segs[loc >> SEGMENT_BITS]
        off = loc & OFFSET_MASK
        klen = _KLEN.unpack_from(seg, off + _KLEN_AT)[0]
        key = seg[off + HEADER_SIZE : off + HEADER_SIZE + klen]
        if not self._index.release((hash(key) & HASH_MASK) >> LOC_BITS, loc):
            raise LookupError(f"no live record at location {loc:#x}")
        meta, value = self._take(loc)
        return key, meta, value

    def clear(self) -> None:
        """Drop every record and unmap every segment."""
        for seg in self._segs + self._spare:
            if seg is not _ABSENT:
                seg.close()
        self._reset()

    # -- sampling and walks --------------------------------------------------------

    def sample(self, count: int, random: Callable[[], float]) -> list[tuple[int, int, int, int]]:
        """About ``count`` records drawn at random (all when there are no more than
        ``count``), as (priority, access, lfu, location): the fields eviction ranks by.

        The draw is a run of index slots from a random position (``Index.run``).
        """
        if count >= self._count:
            found = list(self._index.locations())
        else:
            found = self._index.run(count, random)
        segs = self._segs
        rank = _RANK.unpack_from
        return [
            (priority, access, lfu, loc)
            for loc in found
            for access, priority, lfu in (rank(segs[loc >> SEGMENT_BITS], loc & OFFSET_MASK),)
        ]

    def sweep(self, count: int) -> list[tuple[int, int, int, int]]:
        """The next ``count`` live records under the eviction hand, as ``sample`` gives them.

        The hand walks segments in the order they were opened, oldest first, wrapping
        around: records written long ago and not rewritten since are there. Eviction
        ranks these beside random samples, so that its victims cluster in old segments,
        which then empty out and are unmapped without any copying (victims scattered at
        random would leave holes everywhere for compaction to copy around).
        """
        found: list[tuple[int, int, int, int]] = []
        for _segment in range(3):
            seg_no = self._hand
            if not seg_no:
                seg_no = self._hand = self._next_born(0)
                self._hand_off = 0
                if not seg_no:
                    break
            seg = self._segs[seg_no]
            off = self._hand_off
            used = self._used[seg_no]
            while off < used and len(found) < count:
                meta = _unpack_from(seg, off)
                if not meta[5] & _DEAD:
                    found.append((meta[4], meta[3], meta[6], (seg_no << SEGMENT_BITS) | off))
                off += HEADER_SIZE + meta[8] + meta[7]
            self._hand_off = off
            if len(found) >= count:
                break
            self._hand = self._next_born(self._born[seg_no])
            self._hand_off = 0
        return found

    def pop_idle(self, cutoff: int, limit: int, budget: int) -> list[Removed]:
        """Remove and return up to ``limit`` records last accessed at or before ``cutoff``.

        The segments holding the oldest accesses are evacuated in turn: idle records are
        removed, the others copied to the head (so that a segment is walked at most once
        per residence time). Once no segment's oldest access is at or before ``cutoff``
        nothing is idle, exactly. At most ``budget`` records are examined.
        """
        removed: list[Removed] = []
        while len(removed) < limit and budget > 0:
            if not self._evac:
                seg_no = self._oldest_access_segment()
                if not seg_no or self._min_access[seg_no] > cutoff:
                    break
                self._start_evacuation(seg_no)
            budget -= self._evacuate(budget, cutoff, limit - len(removed), removed)
        return removed

    def pop_expired(self, now_ms: int, limit: int, budget: int) -> list[Removed]:
        """Remove and return up to ``limit`` records whose expiry is at or before ``now_ms``.

        Walks only segments whose earliest expiry is due; a walk relearns its segment's
        earliest expiry. At most ``budget`` records are examined.
        """
        removed: list[Removed] = []
        while len(removed) < limit and budget > 0:
            seg_no = self._exp_seg
            if not seg_no:
                seg_no = self._due_segment(now_ms)
                if not seg_no:
                    break
                self._exp_seg, self._exp_off = seg_no, 0
                self._min_expiry[seg_no] = 0  # relearned as the walk passes
            seg = self._segs[seg_no]
            off = self._exp_off
            used = self._used[seg_no]
            earliest = self._min_expiry[seg_no]  # includes records appended since the start
            due: list[int] = []
            while off < used and len(removed) + len(due) < limit and budget > 0:
                budget -= 1
                meta = _unpack_from(seg, off)
                klen = meta[8]
                expires = meta[2]
                if expires and not meta[5] & _DEAD:
                    if expires <= now_ms:
                        due.append((seg_no << SEGMENT_BITS) | off)
                    elif not earliest or expires < earliest:
                        earliest = expires
                off += HEADER_SIZE + klen + meta[7]
            self._exp_off = off
            self._min_expiry[seg_no] = earliest
            if off >= used:
                self._exp_seg = 0
            # Removed after the walk: the last removal may release the segment.
            removed += [self.remove_at(loc) for loc in due]
        return removed

    def compact(self, budget: int) -> None:
        """Copy about ``budget`` bytes of live records out of nearly empty segments, or
        out of the sparsest ones while dead bytes exceed ``COMPACT_DEAD``."""
        while budget > 0 and (
            self._evac
            or self._sparse
            or self.dead_bytes > max(COMPACT_DEAD * self._used_bytes, 2 * SEGMENT)
        ):
            if not self._evac:
                seg_no = self._next_sparse()
                if not seg_no:
                    if self.dead_bytes <= max(COMPACT_DEAD * self._used_bytes, 2 * SEGMENT):
                        return
                    seg_no = self._sparsest_segment()
                    if not seg_no:
                        return
                self._start_evacuation(seg_no)
            average = self._live_bytes // (self._count or 1) + 1
            budget -= self._evacuate(budget // average + 1, -1, 0, []) * average

    # -- internals: records --------------------------------------------------------

    def _append(  # noqa: PLR0917 (as store)
        self,
        key: bytes,
        version: int,
        origin: int,
        expires: int,
        access: int,
        priority: int,
        flags: int,
        lfu: int,
        payload: bytes,
    ) -> int:
        klen = len(key)
        if len(payload) > BIG_PAYLOAD:
            handle = self._big_next
            self._big_next += 1
            self._big[handle] = payload
            self._big_bytes += len(payload)
            payload = _HANDLE.pack(handle)
            flags |= _BIG
        size = len(payload)
        length = HEADER_SIZE + klen + size
        off = self._head_off
        if off + length > SEGMENT:
            self._open_head()
            off = 0
        seg_no = self._head
        seg = self._segs[seg_no]
        _pack_into(seg, off, version, origin, expires, access, priority, flags, lfu, size, klen)
        start = off + HEADER_SIZE
        seg[start : start + klen] = key
        seg[start + klen : start + klen + size] = payload
        self._head_off = self._used[seg_no] = off + length
        self._live[seg_no] += length
        self._live_bytes += length
        self._used_bytes += length
        self._note(seg_no, access, expires)
        return (seg_no << SEGMENT_BITS) | off

    def _note(self, seg_no: int, access: int, expires: int) -> None:
        """Keep the segment's oldest access and earliest expiry lower bounds."""
        self._min_access[seg_no] = min(self._min_access[seg_no], access)
        if expires and (not self._min_expiry[seg_no] or expires < self._min_expiry[seg_no]):
            self._min_expiry[seg_no] = expires

    def _take(self, loc: int) -> tuple[Meta, bytes]:
        """Header and payload of the record at ``loc``, marked dead (its slot already gone)."""
        seg = self._segs[loc >> SEGMENT_BITS]
        off = loc & OFFSET_MASK
        meta: Meta = _unpack_from(seg, off)
        start = off + HEADER_SIZE + meta[8]
        if meta[5] & _BIG:
            value = self._big[_HANDLE.unpack_from(seg, start)[0]]
        else:
            value = seg[start : start + meta[7]]
        self._kill(loc, meta)
        self._count -= 1
        return meta, value

    def _kill(self, loc: int, meta: Meta) -> None:
        """Mark the record at ``loc``, whose header is ``meta``, dead (its slot is the
        caller's business)."""
        seg_no = loc >> SEGMENT_BITS
        seg = self._segs[seg_no]
        off = loc & OFFSET_MASK
        flags = meta[5]
        seg[off + _FLAGS_AT] = flags | _DEAD
        if flags & _BIG:
            handle = _HANDLE.unpack_from(seg, off + HEADER_SIZE + meta[8])[0]
            self._big_bytes -= len(self._big.pop(handle))
        length = HEADER_SIZE + meta[8] + meta[7]
        live = self._live[seg_no] = self._live[seg_no] - length
        self._live_bytes -= length
        if not live:
            if seg_no not in (self._head, self._evac):
                self._release(seg_no)
        elif live < SPARSE * self._used[seg_no] <= live + length and seg_no != self._head:
            self._sparse.append(seg_no)  # just crossed: cheap to evacuate

    def _open_head(self) -> None:
        seg = self._spare.pop() if self._spare else mmap.mmap(-1, SEGMENT, flags=mmap.MAP_PRIVATE)
        if self._free_numbers:
            seg_no = self._free_numbers.pop()
            self._segs[seg_no] = seg
        else:
            seg_no = len(self._segs)
            if seg_no >= 1 << (LOC_BITS - SEGMENT_BITS):
                raise MemoryError(f"RAM tier log is full ({seg_no} segments of {SEGMENT} B)")
            self._segs.append(seg)
            self._used.append(0)
            self._live.append(0)
            self._min_access.append(0)
            self._min_expiry.append(0)
            self._born.append(0)
        self._used[seg_no] = self._live[seg_no] = self._min_expiry[seg_no] = 0
        self._min_access[seg_no] = 1 << 32
        self._opened += 1
        self._born[seg_no] = self._opened
        old = self._head
        self._head, self._head_off = seg_no, 0
        if old and not self._live[old] and old != self._evac:
            self._release(old)

    def _release(self, seg_no: int) -> None:
        seg = self._segs[seg_no]
        self._used_bytes -= self._used[seg_no]
        self._used[seg_no] = self._live[seg_no] = 0
        self._segs[seg_no] = _ABSENT
        self._free_numbers.append(seg_no)
        if self._exp_seg == seg_no:
            self._exp_seg = 0
        if self._hand == seg_no:
            self._hand = 0
        if len(self._spare) < SPARE_SEGMENTS:
            self._spare.append(seg)
        else:
            seg.close()

    # -- internals: evacuation -------------------------------------------------------

    def _start_evacuation(self, seg_no: int) -> None:
        if seg_no == self._head:
            self._open_head()
        self._evac, self._evac_off = seg_no, 0

    def _evacuate(self, budget: int, cutoff: int, limit: int, removed: list[Removed]) -> int:
        """Advance the evacuation by up to ``budget`` records; returns how many were examined.

        Records accessed at or before ``cutoff`` are removed into ``removed`` (up to
        ``limit`` of them) instead of being copied to the head.
        """
        seg_no = self._evac
        seg = self._segs[seg_no]
        off = self._evac_off
        used = self._used[seg_no]
        examined = 0
        taken = 0
        while off < used and examined < budget and (not limit or taken < limit):
            examined += 1
            meta = _unpack_from(seg, off)
            klen = meta[8]
            length = HEADER_SIZE + klen + meta[7]
            if not meta[5] & _DEAD:
                loc = (seg_no << SEGMENT_BITS) | off
                key = seg[off + HEADER_SIZE : off + HEADER_SIZE + klen]
                if meta[3] <= cutoff:
                    removed.append(self.remove_at(loc))
                    taken += 1
                else:
                    self._move(key, loc, seg[off : off + length], meta)
            off += length
        self._evac_off = off
        if off >= used:
            self._evac = 0
            self.evacuated += 1
            self._release(seg_no)
        return examined

    def _move(self, key: bytes, loc: int, record: bytes, meta: Meta) -> None:
        length = len(record)
        if self._head_off + length > SEGMENT:
            self._open_head()
        seg_no = self._head
        seg = self._segs[seg_no]
        off = self._head_off
        seg[off : off + length] = record
        self._head_off = off + length
        self._used[seg_no] = off + length
        self._live[seg_no] += length
        self._used_bytes += length
        self._note(seg_no, meta[3], meta[2])
        old_seg = loc >> SEGMENT_BITS
        old = self._segs[old_seg]
        flags_at = (loc & OFFSET_MASK) + _FLAGS_AT
        old[flags_at] = old[flags_at] | _DEAD  # the eviction hand may pass here before release
        self._live[old_seg] -= length
        tag = (hash(key) & HASH_MASK) >> LOC_BITS
        if not self._index.relocate(tag, loc, (seg_no << SEGMENT_BITS) | off):
            raise RuntimeError(f"arena: live record of {key[:64]!r} has no index slot")

    def _next_born(self, after: int) -> int:
        """The segment opened first after the one opened ``after`` (wrapping around)."""
        best = first = 0
        for seg_no, seg in enumerate(self._segs):
            if seg is _ABSENT or not self._live[seg_no]:
                continue
            born = self._born[seg_no]
            if born > after and (not best or born < self._born[best]):
                best = seg_no
            if not first or born < self._born[first]:
                first = seg_no
        return best or first

    def _oldest_access_segment(self) -> int:
        best = 0
        for seg_no, seg in enumerate(self._segs):
            if (
                seg is not _ABSENT
                and self._live[seg_no]
                and (not best or self._min_access[seg_no] < self._min_access[best])
            ):
                best = seg_no
        return best

    def _due_segment(self, now_ms: int) -> int:
        for seg_no, seg in enumerate(self._segs):
            earliest = self._min_expiry[seg_no]
            if seg is not _ABSENT and earliest and earliest <= now_ms and self._live[seg_no]:
                return seg_no
        return 0

    def _next_sparse(self) -> int:
        """A segment that fell under ``SPARSE`` of live bytes and still is, if any."""
        while self._sparse:
            seg_no = self._sparse.pop()
            used = self._used[seg_no]
            if (
                self._segs[seg_no] is not _ABSENT
                and seg_no != self._head
                and 0 < self._live[seg_no] < SPARSE * used
            ):
                return seg_no
        return 0

    def _sparsest_segment(self) -> int:
        best = 0
        best_fill = 1.0
        for seg_no, seg in enumerate(self._segs):
            if seg is _ABSENT or seg_no == self._head or not self._used[seg_no]:
                continue
            fill = self._live[seg_no] / self._used[seg_no]
            if fill < best_fill:
                best, best_fill = seg_no, fill
        return best

    # -- internals: index ----------------------------------------------------------

    def _locate(self, key: bytes) -> tuple[Shard, int, int, int]:
        """(shard, slot position, tag, location) of ``key``: the position of its slot, or
        of the empty slot that ends its probe sequence when it is absent (location 0)."""
        tag = (hash(key) & HASH_MASK) >> LOC_BITS  # the key's tag (see index.HASH_MASK)
        index = self._index
        shard = index.dir[tag >> index.shift]
        slots = shard.slots
        mask = shard.mask
        pos = (tag >> shard.shift) & mask
        probe = b""
        end = HEADER_SIZE + len(key)
        while slot := slots[pos]:
            if slot >> LOC_BITS == tag:
                loc = slot & LOC_MASK
                off = loc & OFFSET_MASK
                if not probe:
                    probe = _KLEN.pack(len(key)) + key
                if self._segs[loc >> SEGMENT_BITS][off + _KLEN_AT : off + end] == probe:
                    return shard, pos, tag, loc
            pos = (pos + 1) & mask
        return shard, pos, tag, 0
