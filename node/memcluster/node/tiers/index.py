"""The arena's hash index: key hash -> record location, in 64-bit slots and nothing else.

Extendible hashing over small open-addressing shards (linear probing, backward-shift
deletion). A slot holds the top ``TAG_BITS`` of the key's 64-bit hash (the *tag*) beside
the record's location in its low ``LOC_BITS``, so a shard grows (doubling, then splitting
in two by one more hash bit) from the slots alone, without reading a key, and no resize
touches more than one shard of at most ``2 ** MAX_SHARD_BITS`` slots: a few milliseconds
at most. A slot of 0 is empty (no location is 0).

The index never compares keys: a tag match is only a candidate, which the arena checks
against the record's key. The arena's batch reads walk a shard's slots themselves (a call
per key costs as much as the probe), which is why ``Shard`` and ``Index`` keep their
fields public.
"""

from __future__ import annotations

from array import array
from collections.abc import Callable, Iterator

TAG_BITS = 28
LOC_BITS = 64 - TAG_BITS  # the arena's segment number and offset: 2 ** 16 segments (64 GiB)
LOC_MASK = (1 << LOC_BITS) - 1
MIN_SHARD_BITS = 6
MAX_SHARD_BITS = 12
MAX_LOAD = 0.75
#: A key's tag is ``(hash(key) & HASH_MASK) >> LOC_BITS``: the top ``TAG_BITS`` of its
#: hash taken as unsigned 64-bit (Python's ``hash``: random per process, so that nothing
#: here outlives the process). The arena computes it inline, a call per key costing
#: about as much as the probe.
HASH_MASK = (1 << 64) - 1


class Shard:
    """One open-addressing table covering the tags whose top ``depth`` bits are ``prefix``."""

    __slots__ = ("bits", "count", "depth", "limit", "mask", "prefix", "shift", "slots")

    def __init__(self, bits: int, depth: int, prefix: int) -> None:
        self.bits = bits
        self.depth = depth
        self.prefix = prefix
        #: tag >> shift & mask is a tag's home position in this shard.
        self.shift = TAG_BITS - depth - bits
        self.mask = (1 << bits) - 1
        self.limit = int((1 << bits) * MAX_LOAD)
        self.count = 0
        self.slots = array("Q", bytes(8 << bits))


class Index:
    """The directory of shards: ``dir[tag >> shift]`` is the shard a tag belongs to."""

    __slots__ = ("bytes", "dir", "shift")

    def __init__(self) -> None:
        self.dir: list[Shard] = [Shard(MIN_SHARD_BITS, 0, 0)]
        self.shift = TAG_BITS  # tag >> shift = directory position (global depth 0)
        #: Bytes of slots (the index grows, never shrinks).
        self.bytes = 8 << MIN_SHARD_BITS

    def fill(self, shard: Shard, pos: int, tag: int, loc: int) -> None:
        """Index ``loc`` in the empty slot ``pos`` of ``shard`` that ended a probe for
        ``tag``; the shard grows once past its load limit."""
        shard.slots[pos] = (tag << LOC_BITS) | loc
        shard.count += 1
        if shard.count > shard.limit:
            self._grow(shard)

    def position(self, tag: int, loc: int) -> tuple[Shard, int] | None:
        """The shard and slot position indexing ``loc`` under ``tag``, None if none does."""
        shard = self.dir[tag >> self.shift]
        slots = shard.slots
        mask = shard.mask
        pos = (tag >> shard.shift) & mask
        wanted = (tag << LOC_BITS) | loc
        while (slot := slots[pos]) != wanted:
            if not slot:
                return None
            pos = (pos + 1) & mask
        return shard, pos

    def release(self, tag: int, loc: int) -> bool:
        """Unindex ``loc`` under ``tag``; False if it is not indexed."""
        found = self.position(tag, loc)
        if found is None:
            return False
        self.unslot(*found)
        return True

    def relocate(self, tag: int, old: int, new: int) -> bool:
        """Index ``new`` in the slot that indexed ``old`` under ``tag``; False if none did."""
        found = self.position(tag, old)
        if found is None:
            return False
        found[0].slots[found[1]] = (tag << LOC_BITS) | new
        return True

    def unslot(self, shard: Shard, pos: int) -> None:
        """Empty slot ``pos``, shifting back the entries whose probe ran through it."""
        slots = shard.slots
        mask = shard.mask
        shift = shard.shift
        hole = pos
        nxt = pos
        while True:
            nxt = (nxt + 1) & mask
            slot = slots[nxt]
            if not slot:
                break
            home = (slot >> (LOC_BITS + shift)) & mask
            # The entry may move into the hole unless its home lies cyclically in (hole, nxt].
            if (nxt - home) & mask >= (nxt - hole) & mask:
                slots[hole] = slot
                hole = nxt
        slots[hole] = 0
        shard.count -= 1

    def locations(self) -> Iterator[int]:
        """Every indexed location, shard by shard."""
        seen: set[int] = set()
        for shard in self.dir:
            if id(shard) in seen:
                continue
            seen.add(id(shard))
            yield from (slot & LOC_MASK for slot in shard.slots if slot)

    def run(self, count: int, random: Callable[[], float]) -> list[int]:
        """About ``count`` locations from the occupied slots that follow a random slot
        (wrapping from shard to shard), given at least ``count`` are indexed.

        Slots hold records in hash order, which is independent of anything a caller
        ranks records by, so a run of slots is as good a sample as separate draws, and
        far cheaper to collect.
        """
        directory = self.dir
        index = int(random() * len(directory))
        shard = directory[index]
        pos = int(random() * (shard.mask + 1))
        found: list[int] = []
        while len(found) < count:
            # At the index's load (37-75%), twice the shortfall in slots is about enough.
            end = pos + 2 * (count - len(found)) + 8
            found += [slot & LOC_MASK for slot in shard.slots[pos:end] if slot]
            pos = end
            if pos > shard.mask:
                while directory[index] is shard:  # the next shard, not another alias
                    index = (index + 1) % len(directory)
                    if not index and len(directory) == 1:
                        break
                shard = directory[index]
                pos = 0
        return found

    def _grow(self, shard: Shard) -> None:
        """Double a small shard, or split a full-sized one in two by one more hash bit."""
        if not shard.shift:
            raise MemoryError("RAM tier index is full")
        if shard.bits < MAX_SHARD_BITS:
            new = [Shard(shard.bits + 1, shard.depth, shard.prefix)]
        else:
            depth = shard.depth + 1
            new = [Shard(shard.bits, depth, shard.prefix << 1 | half) for half in (0, 1)]
            global_depth = TAG_BITS - self.shift
            if depth > global_depth:
                self.dir = [s for s in self.dir for _ in (0, 1)]
                self.shift -= 1
        split_shift = TAG_BITS - new[0].depth
        for slot in shard.slots:
            if slot:
                tag = slot >> LOC_BITS
                target = new[(tag >> split_shift) & 1] if len(new) == 2 else new[0]
                slots = target.slots
                mask = target.mask
                pos = (tag >> target.shift) & mask
                while slots[pos]:
                    pos = (pos + 1) & mask
                slots[pos] = slot
                target.count += 1
        global_depth = TAG_BITS - self.shift
        for target in new:
            span = 1 << (global_depth - target.depth)
            first = target.prefix * span
            self.dir[first : first + span] = [target] * span
        self.bytes += sum(8 << t.bits for t in new) - (8 << shard.bits)
