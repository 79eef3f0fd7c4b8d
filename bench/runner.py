"""Timed runs of one operation over a pre-built list of arguments, bounded in count and time.

Three ways to drive a system: one blocking client with one call at a time
(``run_sync``); asyncio tasks sharing one client with ``concurrency`` calls in flight
(``run_async``); and threads with one blocking client each (``run_threads``, for
clients without asyncio support). Every run stops after the last argument or once
``budget`` seconds have passed, whichever comes first, and records each call's
latency in nanoseconds (``time.perf_counter_ns``).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from bench import timing

T = TypeVar("T")

JOIN_GRACE = 60.0  # seconds past the budget a thread may take to finish its last call
#: The quantiles kept for plots of latency distributions.
QUANTILES = (0.01, 0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99, 0.995, 0.999)


@dataclass
class Run:
    """Latencies (ns) of the calls one run made, and its wall-clock duration (s)."""

    samples: list[int]
    seconds: float

    def summary(self, batch: int = 1) -> dict[str, float]:
        """ops/s (and keys/s for batches of ``batch`` keys) with the latency summary."""
        figures = timing.summary(self.samples)
        figures["seconds"] = self.seconds
        figures["ops_s"] = len(self.samples) / self.seconds
        if batch > 1:
            figures["keys_s"] = figures["ops_s"] * batch
        return figures


def quantiles(samples: list[int]) -> dict[str, float]:
    """Latency (µs) at each of ``QUANTILES`` (nearest rank)."""
    ordered = sorted(samples)
    return {f"{q:g}": timing.percentile(ordered, q) for q in QUANTILES}


def run_sync(call: Callable[[T], object], items: Sequence[T], budget: float) -> Run:
    """``call(item)`` for each item in turn, one at a time."""
    start = time.perf_counter()
    samples = timing.sample(call, items, budget)
    return Run(samples, time.perf_counter() - start)


async def run_async(
    call: Callable[[T], Awaitable[object]], items: Sequence[T], concurrency: int, budget: float
) -> Run:
    """``await call(item)`` over the items with ``concurrency`` tasks, each taking the next."""
    clock = time.perf_counter_ns
    remaining = iter(items)
    samples: list[int] = []
    deadline = clock() + int(budget * 1e9)

    async def worker() -> None:
        for item in remaining:  # one shared iterator: every item is taken once
            began = clock()
            await call(item)
            ended = clock()
            samples.append(ended - began)
            if ended > deadline:
                return

    start = clock()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return Run(samples, (clock() - start) / 1e9)


def run_threads(calls: Sequence[Callable[[T], object]], items: Sequence[T], budget: float) -> Run:
    """One thread per entry of ``calls`` (each with a client of its own) over the items."""
    clock = time.perf_counter_ns
    remaining = iter(items)
    lock = threading.Lock()
    per_thread: list[list[int]] = [[] for _ in calls]
    failures: list[BaseException] = []
    deadline = clock() + int(budget * 1e9)

    def worker(call: Callable[[T], object], samples: list[int]) -> None:
        try:
            while True:
                with lock:
                    item = next(remaining, None)
                if item is None:
                    return
                began = clock()
                call(item)
                ended = clock()
                samples.append(ended - began)
                if ended > deadline:
                    return
        except Exception as exc:
            failures.append(exc)

    threads = [
        threading.Thread(target=worker, args=pair, daemon=True)
        for pair in zip(calls, per_thread, strict=True)
    ]
    start = clock()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(budget + JOIN_GRACE)
    seconds = (clock() - start) / 1e9
    if any(thread.is_alive() for thread in threads):
        raise TimeoutError(f"worker threads still running {JOIN_GRACE:.0f}s past the budget")
    if failures:
        raise failures[0]
    return Run([s for samples in per_thread for s in samples], seconds)


def mixed(
    get: Callable[[bytes], Any], put: Callable[[bytes, bytes], Any]
) -> Callable[[tuple[bytes, bytes | None]], Any]:
    """A call for (key, value) operations: a read when value is None, else an update."""

    def call(op: tuple[bytes, bytes | None]) -> Any:
        key, value = op
        return get(key) if value is None else put(key, value)

    return call
