"""The node's event loop and its background work: which loop runs the node (uvloop or
asyncio's own), background loops with an owner (start(), close(), and a done-callback
that reports a crash), the event-loop lag probe that paces background work, and the
time slice that bounds how long a piece of background work holds the loop."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

from memcluster.common.config import ConfigError

log = logging.getLogger(__name__)
T = TypeVar("T")


def event_loop_factory(choice: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """The loop factory for ``server.event_loop`` (None: asyncio's default loop)."""
    if choice == "asyncio":
        return None
    try:
        import uvloop  # here: not built for every platform, and only the node needs it
    except ImportError as exc:
        if choice == "uvloop":
            raise ConfigError(
                "server.event_loop: uvloop is not installed here (pip install uvloop); "
                "or set it to 'auto' or 'asyncio'"
            ) from exc
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


def run_on(choice: str, main: Coroutine[Any, Any, T]) -> T:
    """Run ``main`` to completion on the event loop ``choice`` names."""
    try:
        factory = event_loop_factory(choice)
    except BaseException:
        main.close()
        raise
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(main)


def event_loop_name() -> str:
    """``uvloop`` or ``asyncio``: which loop runs the caller."""
    module = type(asyncio.get_running_loop()).__module__
    return "uvloop" if module.startswith("uvloop") else "asyncio"


class PeriodicTask:
    """Run ``step`` every ``interval`` seconds until closed.

    A step that raises is logged and the loop goes on (a transient fault must not
    stop expiry or pressure control for good); if the task itself dies, the
    done-callback logs it and ``error`` keeps the exception for health reporting.
    """

    def __init__(self, name: str, interval: float, step: Callable[[], Awaitable[None]]) -> None:
        self.name = name
        self.interval = interval
        self._step = step
        self._task: asyncio.Task[None] | None = None
        self.error: BaseException | None = None

    def start(self) -> None:
        """Schedule the loop on the running event loop."""
        if self._task is not None:
            raise RuntimeError(f"{self.name} already started")
        self._task = asyncio.get_running_loop().create_task(self._run(), name=self.name)
        self._task.add_done_callback(self._done)

    async def close(self) -> None:
        """Stop the loop and wait for it to finish."""
        task, self._task = self._task, None
        if task is None:
            return
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self._step()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("background step %s failed; retrying next period", self.name)

    def _done(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            self.error = task.exception()
            log.error("background loop %s died: %r", self.name, self.error)


#: How long background work (a migration's scan, reads, applies and drops) may hold the
#: event loop before it lets requests in: a request that arrives meanwhile waits about
#: that long at most (and the unit of work under way), on top of its own ~0.1 ms.
SLICE = 0.00025


def _keep_cpu() -> None:
    """Where the system has no ``sched_yield``: the slice gives up only the loop."""


#: Gives the calling thread's CPU to a thread waiting for it. CPython releases the GIL
#: around the call; a thread of this process that then holds the GIL long (none of the
#: node's does: its workers spend their time in C) could keep the loop waiting for it
#: up to the interpreter's switch interval.
YIELD_CPU: Callable[[], None] = getattr(os, "sched_yield", _keep_cpu)


class TimeSlice:
    """Background work in slices of ``budget`` seconds of the event loop.

    Between units of work, ``if slice.over(): await slice.next()``: the check costs a
    clock read, and the loop is given up only once the slice has run its time, so cheap
    units are not charged a trip through the loop each while costly ones (a cold read,
    a demotion into LMDB) cannot run on for milliseconds. A fixed count per yield
    gets one of the two wrong.

    Between slices the thread also gives up its CPU (``sched_yield``), to any thread
    waiting for that CPU: background work does not sleep within a burst, so without it
    the kernel lets it run on for its own time slice (up to a few milliseconds) while
    a request's thread, here or in another process on the machine (a neighbouring
    node, a client), waits behind it. The call costs a microsecond when nothing waits;
    when something does, the time this thread then waits counts in its CPU-wait
    reading (``RunQueueWait``), which is what a migration's pace heeds.
    """

    __slots__ = ("_began", "_clock", "_yield_cpu", "budget")

    def __init__(
        self,
        budget: float = SLICE,
        clock: Callable[[], float] = time.perf_counter,
        yield_cpu: Callable[[], None] = YIELD_CPU,
    ):
        self.budget = budget
        self._clock = clock
        self._yield_cpu = yield_cpu
        self._began = clock()

    def over(self) -> bool:
        """Whether this slice has used its time."""
        return self._clock() - self._began >= self.budget

    async def next(self) -> None:
        """Give up the CPU to a thread waiting for it, let whatever is ready on the loop
        run, and what arrived meanwhile, then start a new slice.

        Two turns of the loop: the first polls for I/O after this task's wake-up was
        queued, so a request that came in during the slice would otherwise wait for the
        next slice as well; the second wake-up is queued behind it.
        """
        self._yield_cpu()
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        self._began = self._clock()


class TaskSet:
    """Tasks that outlive the request that started them (replication past W acks,
    read repair): tracked, their failures logged and counted, cancelled on close()."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._tasks: set[asyncio.Task[object]] = set()
        self.failures = 0

    def __len__(self) -> int:
        return len(self._tasks)

    def add(self, task: asyncio.Task[object]) -> asyncio.Task[object]:
        """Track ``task`` until it finishes."""
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return task

    async def close(self) -> None:
        """Cancel what is left and wait for it."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _done(self, task: asyncio.Task[object]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            self.failures += 1
            log.warning("%s task failed: %r", self.name, task.exception())


class RunQueueWait:
    """The share of time the calling thread spent ready to run but waiting for a CPU.

    Linux accounts it per thread (``/proc/thread-self/schedstat``, second field: ns on
    a run queue). Each ``sample`` returns the share since the previous one. A node's
    event-loop thread that waits for a CPU answers requests late by as much, whatever
    makes the machine busy: its own background work, its neighbours' or a client's.
    Where the kernel does not keep it (other systems, schedstat off) it reads 0.0.
    """

    PATH = "/proc/thread-self/schedstat"

    def __init__(self, path: str = PATH, clock: Callable[[], float] = time.monotonic) -> None:
        self._path = path
        self._clock = clock
        self._last: tuple[float, float] | None = None

    def sample(self) -> float:
        """The share of the time since the last sample spent waiting (0.0 at first)."""
        try:
            with open(self._path, "rb") as f:
                waited = int(f.read().split()[1]) / 1e9
        except (OSError, ValueError, IndexError):
            return 0.0
        now, last = self._clock(), self._last
        self._last = (now, waited)
        if last is None or now <= last[0]:
            return 0.0
        return max(waited - last[1], 0.0) / (now - last[0])


class LagMonitor:
    """How late the event loop runs what is ready: the wait a request arriving now sees.

    While in use, a task sleeps ``interval`` again and again and notes how much later
    than asked it woke up; ``lag`` is a moving average of that delay (seconds). Every
    callback that hogs the loop (a long apply step, a scan) and every moment the process
    waits for a CPU shows up in it. ``touch`` keeps the probe running; it stops by itself
    after ``idle_after`` seconds without a touch, so an idle node pays nothing for it.
    """

    def __init__(
        self,
        interval: float = 0.005,
        smoothing: float = 0.2,
        idle_after: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.interval = interval
        self._sleep = sleep
        self.smoothing = smoothing
        self.idle_after = idle_after
        self.lag = 0.0
        self._clock = clock
        self._touched = 0.0
        self._task: asyncio.Task[None] | None = None

    @property
    def running(self) -> bool:
        """Whether the probe runs."""
        return self._task is not None and not self._task.done()

    def touch(self) -> None:
        """Keep measuring (start the probe on the running loop if it is not running)."""
        self._touched = self._clock()
        if not self.running:
            self.lag = 0.0
            self._task = asyncio.get_running_loop().create_task(self._run(), name="loop-lag")
            self._task.add_done_callback(self._done)

    def observe(self, late: float) -> None:
        """Fold one probe's delay (seconds) into ``lag``."""
        self.lag += self.smoothing * (max(late, 0.0) - self.lag)

    async def close(self) -> None:
        """Stop the probe."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def _run(self) -> None:
        clock = self._clock
        while clock() - self._touched < self.idle_after:
            asked = clock() + self.interval
            await self._sleep(self.interval)
            self.observe(clock() - asked)

    def _done(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            log.error("event-loop lag probe died: %r", task.exception())
