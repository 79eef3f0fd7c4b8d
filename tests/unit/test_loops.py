"""The time slice that bounds background work on the event loop, and the run-queue probe."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest

from memcluster.node.loops import RunQueueWait, TimeSlice


def test_a_slice_is_over_once_its_budget_has_run() -> None:
    now = [10.0]
    turn = TimeSlice(0.5, clock=lambda: now[0])
    assert not turn.over()
    now[0] += 0.25
    assert not turn.over()
    now[0] += 0.25
    assert turn.over()


async def test_next_lets_in_what_arrived_during_the_slice_before_the_next_one() -> None:
    loop = asyncio.get_running_loop()
    now = [0.0]
    turn = TimeSlice(0.001, clock=lambda: now[0])
    ran: list[str] = []

    def ready() -> None:  # queued before the slice yields: runs on the first turn
        ran.append("ready")
        # What the first turn's poll brings in lands behind the task's wake-up.
        loop.call_soon(lambda: ran.append("arrived"))

    loop.call_soon(ready)
    now[0] = 0.002
    assert turn.over()
    await turn.next()
    ran.append("next slice")
    assert ran == ["ready", "arrived", "next slice"]
    assert not turn.over()  # a new slice began when the task came back


def test_run_queue_wait_is_the_share_of_time_spent_waiting(tmp_path: Path) -> None:
    stat = tmp_path / "schedstat"
    now = [100.0]
    probe = RunQueueWait(str(stat), clock=lambda: now[0])
    stat.write_text("5000000000 1000000000 42\n")  # ran 5 s, waited 1 s so far
    assert probe.sample() == 0.0  # nothing to compare with yet
    stat.write_text("5200000000 1050000000 57\n")
    now[0] += 0.5
    assert probe.sample() == pytest.approx(0.1)  # 50 ms of 500
    now[0] += 0.5
    assert probe.sample() == 0.0  # no wait since


def test_run_queue_wait_reads_zero_where_the_kernel_keeps_no_count(tmp_path: Path) -> None:
    assert RunQueueWait(str(tmp_path / "absent")).sample() == 0.0
    (tmp_path / "garbled").write_text("nonsense\n")
    assert RunQueueWait(str(tmp_path / "garbled")).sample() == 0.0


def test_run_queue_wait_reads_this_threads_count_from_the_kernel() -> None:
    assert sys.platform == "linux"  # where nodes run (and CI)
    probe = RunQueueWait()
    probe.sample()
    assert probe._last is not None, f"{RunQueueWait.PATH} was not read"
    sum(range(200_000))  # some time on a CPU
    assert 0.0 <= probe.sample() <= 1.0
