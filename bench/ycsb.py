"""YCSB-style key choosers and operation plans, seeded and generated before timing.

``Zipfian`` is YCSB's ZipfianGenerator (Gray et al., "Quickly generating
billion-record synthetic databases", SIGMOD 1994) with YCSB's default constant
theta = 0.99: rank 0 is the most popular, rank r is drawn with probability
proportional to 1 / (r + 1) ** theta. Like YCSB's ScrambledZipfianGenerator,
``scrambled`` spreads the popular ranks over the key space with a 64-bit FNV-1a
hash (so that the hot keys are not the first keys loaded). ``Uniform`` draws every
key with the same probability.

A workload is a read proportion (YCSB core workloads: A 50/50 read/update, B 95/5,
C read-only); ``plan`` turns one into a list of operations, drawn before any
timing so that generating keys costs the measured systems nothing.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Protocol

THETA = 0.99  # YCSB's ZipfianGenerator.ZIPFIAN_CONSTANT

_FNV_OFFSET = 0xCBF29CE484222325
_FNV_PRIME = 0x100000001B3
_MASK64 = (1 << 64) - 1


@dataclass(frozen=True)
class Workload:
    """A YCSB core workload: the share of operations that are reads (the rest update)."""

    name: str
    read_proportion: float
    description: str


WORKLOADS = {
    "A": Workload("A", 0.50, "update heavy: 50% reads, 50% updates"),
    "B": Workload("B", 0.95, "read mostly: 95% reads, 5% updates"),
    "C": Workload("C", 1.00, "read only"),
}


class Chooser(Protocol):
    """Draws key indices in ``[0, items)``."""

    items: int

    def next(self, rng: random.Random) -> int:
        """One key index."""
        ...


def fnv1a64(value: int) -> int:
    """64-bit FNV-1a over the 8 little-endian bytes of ``value`` (YCSB's fnvhash64)."""
    h = _FNV_OFFSET
    for _ in range(8):
        h ^= value & 0xFF
        h = (h * _FNV_PRIME) & _MASK64
        value >>= 8
    return h


def zeta(n: int, theta: float) -> float:
    """The generalised harmonic number sum(1 / i**theta for i in 1..n)."""
    return math.fsum(float(i) ** -theta for i in range(1, n + 1))


class Zipfian:
    """YCSB's zipfian key chooser over ``items`` keys (optionally scrambled)."""

    def __init__(self, items: int, theta: float = THETA, *, scrambled: bool = True) -> None:
        if items < 2:
            raise ValueError(f"a zipfian chooser needs at least 2 items, got {items}")
        self.items = items
        self.theta = theta
        self.scrambled = scrambled
        self._alpha = 1.0 / (1.0 - theta)
        self._zetan = zeta(items, theta)
        zeta2 = zeta(2, theta)
        self._eta = (1 - (2.0 / items) ** (1 - theta)) / (1 - zeta2 / self._zetan)
        self._half_pow_theta = 1.0 + 0.5**theta

    def rank(self, rng: random.Random) -> int:
        """A popularity rank: 0 is the most popular key."""
        u = rng.random()
        uz = u * self._zetan
        if uz < 1.0:
            return 0
        if uz < self._half_pow_theta:
            return 1
        return min(int(self.items * (self._eta * u - self._eta + 1) ** self._alpha), self.items - 1)

    def next(self, rng: random.Random) -> int:
        """A key index: the rank itself, or (scrambled) its FNV hash modulo ``items``."""
        rank = self.rank(rng)
        return fnv1a64(rank) % self.items if self.scrambled else rank


class Uniform:
    """Every key index in ``[0, items)`` equally likely."""

    def __init__(self, items: int) -> None:
        self.items = items

    def next(self, rng: random.Random) -> int:
        """A key index."""
        return rng.randrange(self.items)


def chooser(distribution: str, items: int) -> Chooser:
    """``"zipfian"`` (scrambled, theta 0.99) or ``"uniform"`` over ``items`` keys."""
    if distribution == "zipfian":
        return Zipfian(items)
    if distribution == "uniform":
        return Uniform(items)
    raise ValueError(f"unknown key distribution {distribution!r}")


def plan(workload: Workload, keys: Chooser, count: int, seed: str) -> list[tuple[int, bool]]:
    """``count`` operations as (key index, is_update), from a ``random.Random(seed)``."""
    rng = random.Random(seed)
    reads = workload.read_proportion
    return [(keys.next(rng), rng.random() >= reads) for _ in range(count)]


def batches(keys: Chooser, count: int, size: int, seed: str) -> list[list[int]]:
    """``count`` batches of ``size`` distinct key indices each (for multi-key calls)."""
    rng = random.Random(seed)
    out: list[list[int]] = []
    for _ in range(count):
        batch: dict[int, None] = {}
        # Popular keys repeat under zipfian draws: draw until the batch is full (bounded).
        for _ in range(size * 20):
            batch[keys.next(rng)] = None
            if len(batch) == size:
                break
        out.append(list(batch))
    return out
