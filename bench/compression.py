"""Compression of the warm tier (level 3) and of the cold tier's codec (level 5).

Each size class of the JSON dataset (dataset.py) goes through two codecs per level:

- ``plain``: one zstd frame per value, no dictionary (``Codec(level, train=False)``);
- ``dict``: the codec after its trained dictionaries kicked in. For the warm tier
  they are trained the way a node trains them: training values drawn with another
  seed than the measured ones (``TRAIN_SAMPLES`` small and medium values for the
  dictionary of values up to ``SMALL_VALUE``, then 4 KB and 64 KB values, alternating,
  until the large dictionary's ``LARGE_TRAIN_BYTES`` of value heads are sampled) are
  put into a real ``WarmTier``, whose codec then compresses the values. The cold
  tier's codec is built as ``ColdTier`` builds it and trained on the same values;
  its puts are not timed here, since LMDB's synced commits would dominate (see
  cold.py for them).

Ratio: raw value bytes / stored payload bytes (the codec's output, with its one-byte
prefix, which is what a record holds after its header). Speeds: raw bytes / seconds
over the whole class, best of ``REPEATS`` passes. The ``all`` row sums the classes'
bytes and best times (so the larger classes weigh more).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from bench import dataset
from memcluster.node.tiers.base import Item
from memcluster.node.tiers.codec import (
    FIRST_LARGE_DICT,
    LARGE_SAMPLE_HEAD,
    LARGE_TRAIN_BYTES,
    SMALL_VALUE,
    TRAIN_SAMPLES,
    Codec,
)
from memcluster.node.tiers.memory import WarmTier

REPEATS = 3
TIME_BUDGET = 30.0  # seconds of repeats per measurement (at least one pass always runs)
MEASURED_SEED = 1
TRAINING_SEED = 2
#: The tiers measured, with the levels their configuration uses by default.
LEVELS = (("warm", 3), ("cold", 5))
#: Values measured per size class (~100 B, ~1 KB, ~4 KB, ~64 KB), full and ``--quick``.
FULL_COUNTS = {"small": 20_000, "medium": 5_000, "large": 1_500, "xlarge": 200}
QUICK_COUNTS = {"small": 1_000, "medium": 300, "large": 100, "xlarge": 10}


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
    return {
        "training_values": len(training),
        "small_value_limit": SMALL_VALUE,
        "note": (
            f"values up to {SMALL_VALUE:,} B and larger ones each have their own dictionary, "
            f"the large one trained on the first {LARGE_SAMPLE_HEAD // 1024} KiB of each value"
        ),
        "levels": levels,
    }


def _training_values() -> list[bytes]:
    """Small and medium values interleaved, then large and xlarge ones, from their own seed.

    As many of the large and xlarge classes as the large dictionary samples before it
    trains (``LARGE_TRAIN_BYTES`` of value heads), and a few more.
    """
    half = TRAIN_SAMPLES // 2
    small = dataset.values("small", half, TRAINING_SEED)
    medium = dataset.values("medium", TRAIN_SAMPLES - half, TRAINING_SEED)
    pairs = LARGE_TRAIN_BYTES // (4096 + LARGE_SAMPLE_HEAD) * 5 // 4
    large = dataset.values("large", pairs, TRAINING_SEED)
    xlarge = dataset.values("xlarge", pairs, TRAINING_SEED)
    return [
        v
        for group in (zip(small, medium, strict=True), zip(large, xlarge, strict=True))
        for pair in group
        for v in pair
    ]


def _trained(tier: str, level: int, training: list[bytes]) -> Codec:
    """The codec of ``tier`` after the training values went through it."""
    if tier == "warm":
        warm = WarmTier(1 << 62, compression_level=level)
        now = time.time()
        for i, value in enumerate(training):
            warm.put(b"train:%d" % i, Item(value, 1), now)
        codec = warm.codec
        codec.settle()  # the tiers train on a worker thread: let those trainings land
    else:
        codec = Codec(level)
        for value in training:
            codec.compress(value)
    trained = set(codec.dictionaries)
    if not (min(trained, default=FIRST_LARGE_DICT) < FIRST_LARGE_DICT <= max(trained, default=0)):
        raise RuntimeError(
            f"the {tier} codec trained dictionaries {sorted(trained)} on {len(training)} values:"
            " it needs one for small and one for large values"
        )
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


def table(comp: dict[str, Any]) -> Table:
    """The results of ``measure_compression`` as one table."""
    out = Table(title="2. Compression (ratio = raw / stored payload; MB/s of raw bytes, best of 3)")
    out.add_column("tier (level)")
    out.add_column("values")
    for column in ("avg B", "ratio", "ratio dict", "comp MB/s", "comp dict", "dec MB/s",
                   "dec dict"):  # fmt: skip
        out.add_column(column, justify="right")
    for level in comp["levels"]:
        for row in level["classes"]:
            plain, trained = row["plain"], row["dict"]
            out.add_row(
                f"{level['tier']} ({level['level']})",
                f"{row['size']} x{row['values']:,}",
                f"{row['avg_bytes']:,.0f}",
                f"{plain['ratio']:.2f}",
                f"{trained['ratio']:.2f}",
                f"{plain['compress_mb_s']:.0f}",
                f"{trained['compress_mb_s']:.0f}",
                f"{plain['decompress_mb_s']:.0f}",
                f"{trained['decompress_mb_s']:.0f}",
            )
    out.caption = f"dict: after {comp['training_values']:,} training values; {comp['note']}"
    return out


def main(argv: list[str] | None = None) -> int:
    """``python -m bench.compression [--quick] [--out FILE]``: this section alone."""
    parser = argparse.ArgumentParser(prog="python -m bench.compression", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a smoke run with few values")
    parser.add_argument("--out", type=Path, help="also write the figures to this JSON file")
    args = parser.parse_args(argv)
    results = measure_compression(QUICK_COUNTS if args.quick else FULL_COUNTS)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=1) + "\n")
    Console(width=None if sys.stdout.isatty() else 120).print(table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
