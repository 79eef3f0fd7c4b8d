"""Compression of the warm tier (level 3) and of the cold tier's codec (level 5).

Each size class of the JSON dataset (dataset.py) goes through two codecs per level:

- ``plain``: one zstd frame per value, no dictionary (``Codec(level, train=False)``);
- ``dict``: the codec after its trained dictionary kicked in. For the warm tier the
  dictionary is trained the way a node trains it: ``TRAIN_SAMPLES`` small values
  (a mix of the small and medium classes, drawn with another seed than the measured
  ones) are put into a real ``WarmTier``, whose codec then compresses the values.
  The cold tier's codec is built as ``ColdTier`` builds it and trained on the same
  values; its puts are not timed here, since LMDB's synced commits would dominate
  (see cold.py for them). Values over ``SMALL_VALUE`` (the large class) never use
  the dictionary: their two figures differ only by noise.

Ratio: raw value bytes / stored payload bytes (the codec's output, with its one-byte
prefix, which is what a record holds after its header). Speeds: raw bytes / seconds
over the whole class, best of ``REPEATS`` passes. The ``all`` row sums the classes'
bytes and best times (so the larger classes weigh more).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from bench import dataset
from memcluster.node.tiers.base import Item
from memcluster.node.tiers.codec import SMALL_VALUE, TRAIN_SAMPLES, Codec
from memcluster.node.tiers.memory import WarmTier

REPEATS = 3
TIME_BUDGET = 30.0  # seconds of repeats per measurement (at least one pass always runs)
MEASURED_SEED = 1
TRAINING_SEED = 2
#: The tiers measured, with the levels their configuration uses by default.
LEVELS = (("warm", 3), ("cold", 5))


def measure_compression(counts: dict[str, int]) -> dict[str, Any]:
    """Ratio and speeds per tier level, size class and codec mode; ``counts`` per class."""
    classes = {size: dataset.values(size, n, MEASURED_SEED) for size, n in counts.items()}
    training = _training_values()
    levels = []
    for tier, level in LEVELS:
        codecs = {"plain": Codec(level, train=False), "dict": _trained(tier, level, training)}
        rows = []
        for size, values in classes.items():
            raw = sum(map(len, values))
            row: dict[str, Any] = {
                "size": size,
                "values": len(values),
                "avg_bytes": raw / len(values),
            }
            for mode, codec in codecs.items():
                row[mode] = _measure(codec, values)
            rows.append(row)
        rows.append(_total(rows))
        levels.append({"tier": tier, "level": level, "classes": rows})
    return {"training_values": len(training), "small_value_limit": SMALL_VALUE, "levels": levels}


def _training_values() -> list[bytes]:
    """Half small, half medium values, interleaved, from their own seed."""
    half = TRAIN_SAMPLES // 2
    small = dataset.values("small", half, TRAINING_SEED)
    medium = dataset.values("medium", TRAIN_SAMPLES - half, TRAINING_SEED)
    return [v for pair in zip(small, medium, strict=True) for v in pair]


def _trained(tier: str, level: int, training: list[bytes]) -> Codec:
    """The codec of ``tier`` after the training values went through it."""
    if tier == "warm":
        warm = WarmTier(1 << 62, compression_level=level)
        now = time.time()
        for i, value in enumerate(training):
            warm.put(b"train:%d" % i, Item(value, 1), now)
        codec = warm.codec
    else:
        codec = Codec(level)
        for value in training:
            codec.compress(value)
    if not codec.dictionaries:
        raise RuntimeError(f"the {tier} codec trained no dictionary on {len(training)} values")
    return codec


def _measure(codec: Codec, values: list[bytes]) -> dict[str, float]:
    raw = sum(map(len, values))
    payloads = [codec.compress(v) for v in values]
    if [codec.decompress(p) for p in payloads] != values:
        raise RuntimeError("a value did not survive compression")
    compress = _best_of(lambda: [codec.compress(v) for v in values])
    decompress = _best_of(lambda: [codec.decompress(p) for p in payloads])
    return _figures(raw, sum(map(len, payloads)), compress, decompress)


def _figures(raw: int, stored: int, compress_s: float, decompress_s: float) -> dict[str, float]:
    return {
        "raw_bytes": raw,
        "stored_bytes": stored,
        "compress_s": compress_s,
        "decompress_s": decompress_s,
        "ratio": raw / stored,
        "compress_mb_s": raw / compress_s / 1e6,
        "decompress_mb_s": raw / decompress_s / 1e6,
    }


def _total(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The row of every class together: sums of bytes and of best times."""
    total: dict[str, Any] = {"size": "all", "values": sum(row["values"] for row in rows)}
    raw = sum(row["plain"]["raw_bytes"] for row in rows)
    total["avg_bytes"] = raw / total["values"]
    for mode in ("plain", "dict"):
        sums = [
            sum(row[mode][field] for row in rows)
            for field in ("raw_bytes", "stored_bytes", "compress_s", "decompress_s")
        ]
        total[mode] = _figures(*sums)
    return total


def _best_of(run: Callable[[], object]) -> float:
    """The fastest of ``REPEATS`` timings of ``run`` (fewer past TIME_BUDGET), in seconds."""
    best = float("inf")
    deadline = time.monotonic() + TIME_BUDGET
    for _ in range(REPEATS):
        start = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - start)
        if time.monotonic() > deadline:
            break
    return best
