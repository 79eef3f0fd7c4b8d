"""Memory per key: a HotTier in a fresh process versus a private redis-server.

Every item is a 12-byte key (``key:%08d``) and a 100-byte value, so 112 B of data;
whatever a store needs beyond that is its overhead per key.

The HotTier is filled in a child process (``python -m bench.memory``) so that the
figures do not depend on what the benchmark process allocated before. The child
runs twice: once measuring RSS growth (psutil) and the tier's own accounting
(``bytes_held``), once under tracemalloc (which slows allocation and costs memory
of its own, hence a run of its own) for the bytes Python actually asked for.
tracemalloc sees only Python's allocator: the tier's records live in anonymous
memory maps, which it does not trace, so RSS growth is the figure to compare.
"""

from __future__ import annotations

import argparse
import gc
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

DATA_BYTES = 112  # 12-byte key + 100-byte value
PIPELINE = 1000  # SETs per redis-py pipeline round trip
CHILD_TIMEOUT = 600.0  # seconds a child fill may take before it is killed
_REPO = Path(__file__).resolve().parents[1]
_CHECK_EVERY = 4096  # items between deadline checks


def key(i: int) -> bytes:
    """The i-th benchmark key: 12 bytes."""
    return b"key:%08d" % i


def value(i: int) -> bytes:
    """The i-th benchmark value: 100 bytes, distinct per item."""
    return b"%010d" % i * 10


def per_key(total_bytes: float, items: int) -> dict[str, float]:
    """Bytes per key and overhead per key (beyond the 112 B of key + value)."""
    bytes_per_key = total_bytes / items
    return {"bytes_per_key": bytes_per_key, "overhead_per_key": bytes_per_key - DATA_BYTES}


def measure_hot_tier(items: int, time_budget: float) -> dict[str, Any]:
    """Fill a HotTier with ``items`` items in fresh processes; RSS, accounting, tracemalloc."""
    rss = _child(items, "rss", time_budget)
    traced = _child(items, "traced", time_budget)
    return {
        "items": rss["items"],
        "fill_seconds": rss["seconds"],
        "rss": per_key(rss["rss_delta"], rss["items"]),
        "bytes_held": per_key(rss["bytes_held"], rss["items"]),
        "traced": per_key(traced["traced"], traced["items"]),
    }


def measure_redis(server: Any, items: int, time_budget: float) -> dict[str, Any]:
    """Load the same items into ``server`` (emptied first); used_memory and RSS deltas."""
    client = server.client()
    try:
        client.flushall()
        before = client.info("memory")
        deadline = time.monotonic() + time_budget
        start = time.perf_counter()
        loaded = 0
        while loaded < items and time.monotonic() < deadline:
            pipe = client.pipeline(transaction=False)
            for i in range(loaded, min(loaded + PIPELINE, items)):
                pipe.set(key(i), value(i))
            loaded += len(pipe.execute())
        seconds = time.perf_counter() - start
        after = client.info("memory")
        client.flushall()
    finally:
        client.close()
    return {
        "items": loaded,
        "fill_seconds": seconds,
        "used_memory": per_key(after["used_memory"] - before["used_memory"], loaded),
        "rss": per_key(after["used_memory_rss"] - before["used_memory_rss"], loaded),
    }


def _child(items: int, mode: str, time_budget: float) -> dict[str, Any]:
    command = [sys.executable, "-m", "bench.memory", "--items", str(items), "--mode", mode]
    command += ["--time-budget", str(time_budget)]
    done = subprocess.run(
        command, cwd=_REPO, capture_output=True, text=True, timeout=CHILD_TIMEOUT, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed ({done.returncode}):\n{done.stderr}")
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def _fill(items: int, mode: str, time_budget: float) -> dict[str, Any]:
    """The child's work: fill a HotTier, measuring RSS or traced allocations around it."""
    import tracemalloc

    import psutil

    from memcluster.node.tiers.base import Item
    from memcluster.node.tiers.memory import HotTier

    tier = HotTier(capacity=1 << 62)  # never evicts
    process = psutil.Process()
    now = time.time()
    gc.collect()
    if mode == "traced":
        tracemalloc.start()
    rss_before = process.memory_info().rss
    deadline = time.monotonic() + time_budget
    start = time.perf_counter()
    filled = 0
    while filled < items and time.monotonic() < deadline:
        for i in range(filled, min(filled + _CHECK_EVERY, items)):
            tier.put(key(i), Item(value(i), i + 1), now)
        filled = len(tier)
    seconds = time.perf_counter() - start
    gc.collect()
    result: dict[str, Any] = {"items": filled, "seconds": seconds, "bytes_held": tier.bytes_held}
    if mode == "traced":
        result["traced"] = tracemalloc.get_traced_memory()[0]
    else:
        result["rss_delta"] = process.memory_info().rss - rss_before
    return result


def main() -> None:
    """Child entry point: fill, then print one JSON object."""
    parser = argparse.ArgumentParser(description=_fill.__doc__)
    parser.add_argument("--items", type=int, required=True)
    parser.add_argument("--mode", choices=["rss", "traced"], required=True)
    parser.add_argument("--time-budget", type=float, required=True)
    args = parser.parse_args()
    print(json.dumps(_fill(args.items, args.mode, args.time_budget)))


if __name__ == "__main__":
    main()
