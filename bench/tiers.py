"""Benchmarks of one node's tiers, side by side with Redis where Redis has a peer.

    python -m bench.tiers [--items N] [--quick] [--out bench/results/tiers.json]

Run from the repository root. Measures, in one run (see bench/README.md for what
each figure means):

1. hot-tier memory per key (fresh process, RSS and accounting) vs redis-server;
2. warm-tier and cold-codec compression of a realistic JSON dataset;
3. cold-tier get/peek latency and put_many throughput, and TieredStore reads that
   promote from cold;
4. end-to-end unary put/get through a real node process vs redis-py.

Writes every figure to a JSON file and prints tables. The redis-server is a private
one (127.0.0.1, random port, no persistence) started and always stopped here; when
redis-server or redis-py is missing, the Redis columns are left out.
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import sys
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import psutil
from rich.console import Console
from rich.table import Table

from bench import compression, e2e, memory, redis_server
from bench.cold import measure_cold

DEFAULT_OUT = Path("bench/results/tiers.json")


@dataclass(frozen=True)
class Plan:
    """How much each section does; every phase also stops after ``time_budget`` seconds."""

    items: int  # hot tier / Redis keys
    compression_counts: dict[str, int]  # values per size class
    cold_items: int
    cold_gets: int  # gets, peeks and store reads (each)
    e2e_ops: int  # calls per system and operation
    e2e_rounds: int
    time_budget: float


FULL = Plan(
    items=1_000_000,
    compression_counts=compression.FULL_COUNTS,
    cold_items=100_000,
    cold_gets=20_000,
    e2e_ops=5_000,
    e2e_rounds=10,
    time_budget=300.0,
)
QUICK = Plan(
    items=50_000,
    compression_counts=compression.QUICK_COUNTS,
    cold_items=5_000,
    cold_gets=2_000,
    e2e_ops=500,
    e2e_rounds=2,
    time_budget=10.0,
)


def run(plan: Plan, progress: Console) -> dict[str, Any]:
    """Every section, with one private redis-server for the Redis comparisons.

    A section that fails is recorded as ``{"error": ...}`` and the others still run.
    """
    results: dict[str, Any] = {"meta": _meta(plan)}
    skip_redis = redis_server.unavailable_reason()
    with ExitStack() as stack:
        server = None
        if skip_redis is None:
            server = stack.enter_context(redis_server.RedisServer())
            results["meta"]["redis_version"] = server.version
        else:
            results["meta"]["redis_skipped"] = skip_redis
            progress.print(f"[yellow]no Redis comparison: {skip_redis}")
        sections: list[tuple[str, str, Callable[[], dict[str, Any]]]] = [
            (
                "memory",
                f"memory per key: {plan.items:,} items in a HotTier and in Redis",
                lambda: _memory(plan, server),
            ),
            (
                "compression",
                "compression: warm tier (level 3) and cold codec (level 5)",
                lambda: compression.measure_compression(plan.compression_counts),
            ),
            (
                "cold",
                f"cold tier: {plan.cold_items:,} items, {plan.cold_gets:,} reads",
                lambda: measure_cold(
                    plan.cold_items, plan.cold_gets, plan.cold_gets, plan.time_budget
                ),
            ),
            (
                "e2e",
                f"end to end: {plan.e2e_ops:,} puts and gets per system",
                lambda: e2e.measure_e2e(server, plan.e2e_ops, plan.e2e_rounds, plan.time_budget),
            ),
        ]
        for number, (name, label, measure) in enumerate(sections, 1):
            progress.print(f"[{number}/{len(sections)}] {label}")
            try:
                results[name] = measure()
            except Exception as exc:
                progress.print_exception()
                results[name] = {"error": f"{type(exc).__name__}: {exc}"}
    return results


def _memory(plan: Plan, server: redis_server.RedisServer | None) -> dict[str, Any]:
    hot = memory.measure_hot_tier(plan.items, plan.time_budget)
    if server is None:
        return {"hot_tier": hot}
    red = memory.measure_redis(server, plan.items, plan.time_budget)
    ratio = {
        "total_rss": hot["rss"]["bytes_per_key"] / red["rss"]["bytes_per_key"],
        "overhead_rss": hot["rss"]["overhead_per_key"] / red["rss"]["overhead_per_key"],
        "total_accounted": hot["bytes_held"]["bytes_per_key"] / red["used_memory"]["bytes_per_key"],
    }
    return {"hot_tier": hot, "redis": red, "ratio": ratio}


def _meta(plan: Plan) -> dict[str, Any]:
    import lmdb
    import zstandard

    return {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": {
            "cpus": psutil.cpu_count(),
            "cpu_model": _cpu_model(),
            "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
            "platform": platform.platform(),
        },
        "python": platform.python_version(),
        "zstandard": zstandard.__version__,
        "lmdb": lmdb.__version__,
        "plan": asdict(plan),
    }


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


# -- report --------------------------------------------------------------------


def render(results: dict[str, Any], console: Console) -> None:
    """The results as tables."""
    meta = results["meta"]
    machine = meta["machine"]
    console.print(
        f"memcluster tier benchmarks, {meta['date']}, {machine['cpus']} CPUs "
        f"({machine['cpu_model']}), Python {meta['python']}, "
        f"Redis {meta.get('redis_version', '- (' + meta.get('redis_skipped', '') + ')')}"
    )
    for name, table in (
        ("memory", _memory_table),
        ("compression", compression.table),
        ("cold", _cold_table),
        ("e2e", _e2e_table),
    ):
        section = results[name]
        if "error" in section:
            console.print(f"[red]{name}: failed: {section['error']}")
        else:
            console.print(table(section))


def _memory_table(mem: dict[str, Any]) -> Table:
    hot = mem["hot_tier"]
    table = Table(title=f"1. Memory per key ({hot['items']:,} keys of 12 B, values of 100 B)")
    for column in ("store", "measure", "bytes/key", "overhead/key", "fill keys/s"):
        table.add_column(column, justify="left" if column in ("store", "measure") else "right")
    rows = [
        ("HotTier", "RSS growth (fresh process)", hot["rss"], hot),
        ("HotTier", "bytes_held (its accounting)", hot["bytes_held"], None),
        ("HotTier", "tracemalloc (bytes requested)", hot["traced"], None),
    ]
    if "redis" in mem:
        red = mem["redis"]
        rows += [
            ("Redis", "used_memory", red["used_memory"], red),
            ("Redis", "RSS growth", red["rss"], None),
        ]
    for store, measure, figures, fill in rows:
        speed = f"{fill['items'] / fill['fill_seconds']:,.0f}" if fill else ""
        table.add_row(
            store,
            measure,
            f"{figures['bytes_per_key']:.1f}",
            f"{figures['overhead_per_key']:.1f}",
            speed,
        )
    if "ratio" in mem:
        ratio = mem["ratio"]
        table.caption = (
            f"memcluster/Redis: total {ratio['total_rss']:.2f}x, overhead "
            f"{ratio['overhead_rss']:.2f}x (RSS vs RSS); bytes_held/used_memory "
            f"{ratio['total_accounted']:.2f}x"
        )
    return table


def _cold_table(cold: dict[str, Any]) -> Table:
    put = cold["put_many"]
    table = Table(
        title=f"3. Cold tier ({cold['items']:,} JSON values of ~{cold['value_bytes_avg']:,.0f} B)"
    )
    table.add_column("operation")
    for column in ("calls", "p50 µs", "p99 µs", "p99.9 µs", "mean µs"):
        table.add_column(column, justify="right")
    for label, name in (
        ("ColdTier.get (uniform keys)", "get"),
        ("ColdTier.peek", "peek"),
        ("TieredStore.get, cold hit + promote", "store_get_cold_promote"),
        ("TieredStore.get, hot hit (same keys)", "store_get_hot"),
    ):
        s = cold[name]
        table.add_row(
            label,
            f"{s['count']:,}",
            f"{s['p50_us']:,.1f}",
            f"{s['p99_us']:,.1f}",
            f"{s['p999_us']:,.1f}",
            f"{s['mean_us']:,.1f}",
        )
    table.caption = (
        f"put_many (batches of {put['batch']:,}, one synced commit each): "
        f"{put['items_per_s']:,.0f} items/s, {put['mb_per_s']:.1f} MB/s, "
        f"{put['batch_ms']:.1f} ms per batch; per item: bytes_held "
        f"{cold['bytes_held_per_item']:,.0f} B, data.mdb {cold['file_bytes_per_item']:,.0f} B; "
        f"get applies touches every {cold['touch_batch']} gets"
    )
    return table


def _e2e_table(e2e_results: dict[str, Any]) -> Table:
    table = Table(title="4. End to end, one client, one call at a time, 100 B values")
    table.add_column("system / call")
    for column in ("calls", "p50 µs", "p99 µs", "mean µs", "calls/s"):
        table.add_column(column, justify="right")
    names = {"memcluster": ("Client.put", "Client.get"), "redis": ("redis-py SET", "redis-py GET")}
    for system, labels in names.items():
        if system not in e2e_results:
            continue
        for op, label in zip(("put", "get"), labels, strict=True):
            s = e2e_results[system][op]
            table.add_row(
                f"{system} {label}",
                f"{s['count']:,}",
                f"{s['p50_us']:,.0f}",
                f"{s['p99_us']:,.0f}",
                f"{s['mean_us']:,.0f}",
                f"{1e6 / s['mean_us']:,.0f}",
            )
    if "ratio_p50" in e2e_results:
        ratio = e2e_results["ratio_p50"]
        table.caption = f"memcluster/Redis p50: put {ratio['put']:.2f}x, get {ratio['get']:.2f}x"
    return table


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, run every section, write the JSON and print the tables."""
    parser = argparse.ArgumentParser(
        prog="python -m bench.tiers", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--items", type=int, help="hot-tier/Redis keys (default 1,000,000)")
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke run")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON results file")
    args = parser.parse_args(argv)
    plan = QUICK if args.quick else FULL
    if args.items is not None:
        if args.items < 1:
            parser.error("--items must be at least 1")
        plan = Plan(**{**asdict(plan), "items": args.items})
    progress = Console(stderr=True)
    start = time.monotonic()
    results = run(plan, progress)
    results["meta"]["seconds"] = round(time.monotonic() - start, 1)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    render(results, Console(width=None if sys.stdout.isatty() else 120))
    progress.print(f"wrote {args.out} in {results['meta']['seconds']}s")
    return 1 if any("error" in section for section in results.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
