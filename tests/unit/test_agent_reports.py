"""What a node publishes to etcd about its migration and load, and when.

A migration's counts go out at most once a PROGRESS_EVERY; its milestones (start of an
epoch, end, failures) at once; the load on its own cadence.
"""

from __future__ import annotations

import asyncio
import time
import types
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any, cast

import pytest

from memcluster.common.config import NodeClusterConfig
from memcluster.node.agent import ClusterAgent
from memcluster.node.migration import Progress
from memcluster.node.reports import PROGRESS_EVERY, ReportSchedule
from memcluster.wire import coordinator_pb2

LOAD_EVERY = 2.0

# -- ReportSchedule: the decision, on a clock the test moves -----------------------


def started(epoch: int = 3) -> Progress:
    return Progress(epoch=epoch, done=False)


def test_a_burst_of_counts_is_published_once_a_second_not_once_per_change() -> None:
    schedule = ReportSchedule(LOAD_EVERY)
    progress = started()
    assert schedule.progress_due(progress, 0.0)
    schedule.progress_sent(progress, 0.0)
    published = []
    for step in range(1, 301):  # a batch sent every 10 ms for 3 s
        now = step / 100
        progress.items_sent += 200
        progress.bytes_sent += 20_000
        if schedule.progress_due(progress, now):
            schedule.progress_sent(progress, now)
            published.append(now)
    assert published == [1.0, 2.0, 3.0]
    assert PROGRESS_EVERY == 1.0  # what the default schedule above used


def test_the_end_of_a_migration_is_due_at_once_right_after_a_throttled_count() -> None:
    schedule = ReportSchedule(LOAD_EVERY)
    progress = started()
    schedule.progress_sent(progress, 0.0)
    progress.items_sent = 10
    assert not schedule.progress_due(progress, 0.1)
    progress.done = True
    assert schedule.progress_due(progress, 0.1)
    assert schedule.wait(progress, 0.1) == 0.0


def test_a_migration_for_a_new_epoch_is_due_at_once() -> None:
    schedule = ReportSchedule(LOAD_EVERY)
    schedule.progress_sent(started(epoch=3), 0.0)
    assert not schedule.progress_due(Progress(epoch=3, done=False, items_scanned=5), 0.1)
    assert schedule.progress_due(started(epoch=4), 0.1)


def test_another_failure_is_due_at_once() -> None:
    schedule = ReportSchedule(LOAD_EVERY)
    progress = started()
    schedule.progress_sent(progress, 0.0)
    progress.items_sent = 10
    assert not schedule.progress_due(progress, 0.1)
    progress.failures += 1
    assert schedule.progress_due(progress, 0.1)


def test_a_throttled_count_falls_due_when_its_second_is_up_with_no_other_change() -> None:
    schedule = ReportSchedule(LOAD_EVERY)
    progress = started()
    schedule.progress_sent(progress, 0.0)
    schedule.load_sent(0.0)
    assert schedule.wait(progress, 0.3) == pytest.approx(LOAD_EVERY - 0.3)  # nothing pending
    progress.items_sent = 10
    assert not schedule.progress_due(progress, 0.3)
    assert schedule.wait(progress, 0.3) == pytest.approx(0.7)
    assert schedule.progress_due(progress, 1.0)
    schedule.progress_sent(progress, 1.0)
    assert schedule.wait(progress, 1.0) == pytest.approx(LOAD_EVERY - 1.0)  # no busy loop


def test_the_load_keeps_its_own_cadence() -> None:
    schedule = ReportSchedule(LOAD_EVERY)
    assert schedule.load_due(0.0)  # a new registration
    schedule.load_sent(0.0)
    assert not schedule.load_due(LOAD_EVERY - 0.1)
    assert schedule.load_due(LOAD_EVERY)


# -- The reports loop, with a recording etcd ---------------------------------------


class RecordingEtcd:
    """Etcd's put, recorded with the time it came; ``until`` waits for a condition."""

    def __init__(self) -> None:
        self.puts: list[tuple[str, bytes, int | None, float]] = []
        self._changed = asyncio.Event()

    async def put(self, key: str, value: bytes, *, lease: int | None = None) -> None:
        self.puts.append((key, value, lease, time.monotonic()))
        self._changed.set()

    def progress(self) -> list[tuple[coordinator_pb2.MigrationProgress, float]]:
        found = []
        for key, value, _, at in self.puts:
            if "/migrations/" in key:
                msg = coordinator_pb2.MigrationProgress()
                msg.ParseFromString(value)
                found.append((msg, at))
        return found

    def loads(self) -> int:
        return sum("/load/" in key for key, *_ in self.puts)

    async def until(self, condition: Callable[[], bool], within: float = 5.0) -> None:
        async with asyncio.timeout(within):
            while not condition():
                self._changed.clear()
                await self._changed.wait()


class FakeMigrator:
    def __init__(self) -> None:
        self.progress = Progress()
        self.on_progress: Callable[[Progress], None] = lambda progress: None

    def report(self) -> None:
        self.on_progress(self.progress)


@dataclass
class Reporting:
    agent: ClusterAgent
    etcd: RecordingEtcd
    migrator: FakeMigrator


async def reporting(progress_every: float) -> AsyncIterator[Reporting]:
    migrator = FakeMigrator()
    node = types.SimpleNamespace(
        node_id="n1",
        address="127.0.0.1:1",
        migrator=migrator,
        store=types.SimpleNamespace(stats=lambda: []),
        load=types.SimpleNamespace(rate=lambda now: 0.0, hot_keys=lambda: []),
        pressure=types.SimpleNamespace(last_used=0.0),
    )
    config = NodeClusterConfig(etcd="127.0.0.1:2379", load_interval=60.0)
    agent = ClusterAgent(
        cast(Any, node), config, on_leave=lambda: None, progress_every=progress_every
    )
    etcd = RecordingEtcd()
    agent.etcd = cast(Any, etcd)
    agent.session = cast(Any, types.SimpleNamespace(lease_id=7))
    agent.registered.set()
    task = asyncio.get_running_loop().create_task(agent._reports())
    try:
        # Registered: the progress there is and the load, each once.
        await etcd.until(lambda: len(etcd.progress()) == 1 and etcd.loads() == 1)
        yield Reporting(agent=agent, etcd=etcd, migrator=migrator)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


@pytest.fixture
async def slow_counts() -> AsyncIterator[Reporting]:
    """Counts throttled for a minute: only milestones can come through in a test."""
    async for reports in reporting(progress_every=60.0):
        yield reports


@pytest.fixture
async def fast_counts() -> AsyncIterator[Reporting]:
    async for reports in reporting(progress_every=0.2):
        yield reports


async def migration_started(reports: Reporting) -> tuple[RecordingEtcd, FakeMigrator]:
    """Epoch 5's migration starts and its start is put: (etcd, migrator)."""
    etcd, migrator = reports.etcd, reports.migrator
    migrator.progress = started(epoch=5)
    migrator.report()
    await etcd.until(lambda: etcd.progress()[-1][0].epoch == 5)
    return etcd, migrator


async def test_the_loop_puts_the_start_and_end_at_once_and_a_burst_of_counts_not_at_all(
    slow_counts: Reporting,
) -> None:
    etcd, migrator = await migration_started(slow_counts)
    for _ in range(100):
        migrator.progress.items_sent += 200
        migrator.report()
        for _ in range(5):  # let the loop wake up and decide
            await asyncio.sleep(0)
    migrator.progress.done = True
    migrator.report()
    await etcd.until(lambda: etcd.progress()[-1][0].done)
    sent = [(msg.epoch, msg.done, msg.items_sent) for msg, _ in etcd.progress()]
    assert sent == [(0, True, 0), (5, False, 0), (5, True, 20_000)]
    assert etcd.loads() == 1  # not again on every wake-up


async def test_the_loop_publishes_the_last_throttled_count_without_another_change(
    fast_counts: Reporting,
) -> None:
    etcd, migrator = await migration_started(fast_counts)
    migrator.progress.items_sent = 10
    migrator.report()
    await etcd.until(lambda: etcd.progress()[-1][0].items_sent == 10)
    (_, start), (_, counts) = etcd.progress()[-2:]
    assert counts - start >= 0.2 * 0.9  # held back, then sent once its time came
