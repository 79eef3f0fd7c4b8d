"""The time slice that bounds background work on the event loop."""

from __future__ import annotations

import asyncio

from memcluster.node.loops import TimeSlice


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
