"""The node's event loop choice, the time slice that bounds background work on it, and the
run-queue probe."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import pytest

from memcluster.common.config import ConfigError, NodeConfig
from memcluster.node import loops
from memcluster.node.loops import (
    YIELD_CPU,
    RunQueueWait,
    TimeSlice,
    event_loop_factory,
    event_loop_name,
    run_on,
)


async def _loop_name() -> str:
    return event_loop_name()


def test_auto_runs_on_uvloop_where_it_is_installed_and_asyncio_on_request() -> None:
    pytest.importorskip("uvloop", reason="uvloop has no build for this platform")
    assert run_on("auto", _loop_name()) == "uvloop"
    assert run_on("uvloop", _loop_name()) == "uvloop"
    assert run_on("asyncio", _loop_name()) == "asyncio"
    assert event_loop_factory("asyncio") is None


def test_without_uvloop_auto_falls_back_and_uvloop_is_a_clear_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "uvloop", None)  # import uvloop raises ImportError
    assert event_loop_factory("auto") is None
    assert run_on("auto", _loop_name()) == "asyncio"
    main = _loop_name()
    with pytest.raises(ConfigError, match=r"server.event_loop: uvloop is not installed"):
        run_on("uvloop", main)
    assert main.cr_frame is None  # closed, not left to warn that it was never awaited


def test_an_unknown_event_loop_is_refused_by_the_config() -> None:
    with pytest.raises(ConfigError, match=r"server.event_loop: 'tokio' is not one of"):
        NodeConfig.from_mapping({"server": {"event_loop": "tokio"}})


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


async def test_next_gives_up_the_cpu_before_it_lets_the_loop_run() -> None:
    happened: list[str] = []
    turn = TimeSlice(0.001, clock=lambda: 0.0, yield_cpu=lambda: happened.append("cpu"))
    asyncio.get_running_loop().call_soon(lambda: happened.append("loop"))
    await turn.next()
    assert happened == ["cpu", "loop"]
    await turn.next()
    assert happened == ["cpu", "loop", "cpu"]


def test_a_slice_gives_up_the_cpu_with_sched_yield_where_the_system_has_it() -> None:
    expected = getattr(os, "sched_yield", loops._keep_cpu)
    assert TimeSlice()._yield_cpu is YIELD_CPU is expected


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
