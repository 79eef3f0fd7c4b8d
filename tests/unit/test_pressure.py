"""Adaptive hot-tier sizing, driven by fake memory readings."""

from __future__ import annotations

from memcluster.common.config import PressureConfig
from memcluster.node.pressure import PressureController


def test_shrinks_under_pressure_counts_near_misses_and_recovers() -> None:
    readings = iter([0.50, 0.92, 0.92, 0.97, 0.98, 0.93, 0.80, 0.80] + [0.5] * 100)
    config = PressureConfig(high_watermark=0.90, critical_watermark=0.95, min_hot_fraction=0.10)
    ctl = PressureController(config, 1000, read_used=lambda: next(readings))
    assert ctl.check() is None  # 50%: nothing to do
    assert ctl.check() == 900  # high: one step down
    assert ctl.check() == 810
    assert ctl.check() == 405  # critical: halve, count a near miss
    assert ctl.check() == 202  # still critical, same excursion
    assert ctl.oom_near_misses == 1
    assert ctl.check() == 181  # back to high only
    grown = [ctl.check() for _ in range(40)]
    assert ctl.capacity == 1000 and grown[-1] is None
    assert ctl.oom_near_misses == 1


def test_never_below_the_floor() -> None:
    config = PressureConfig(min_hot_fraction=0.25)
    ctl = PressureController(config, 1000, read_used=lambda: 0.99)
    for _ in range(20):
        ctl.check()
    assert ctl.capacity == 250


def test_cgroup_v2_limit_is_what_counts(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from memcluster.node.pressure import cgroup_memory, system_memory_used

    (tmp_path / "memory.max").write_text("1000000\n")
    (tmp_path / "memory.current").write_text("900000\n")
    (tmp_path / "memory.stat").write_text("anon 1\ninactive_file 100000\nactive_file 5\n")
    assert cgroup_memory(tmp_path) == (800000, 1000000)
    assert system_memory_used(tmp_path) == 0.8


def test_cgroup_v1_and_no_limit(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from memcluster.node.pressure import cgroup_memory

    v1 = tmp_path / "memory"
    v1.mkdir()
    (v1 / "memory.limit_in_bytes").write_text("2000")
    (v1 / "memory.usage_in_bytes").write_text("1500")
    (v1 / "memory.stat").write_text("total_inactive_file 500\n")
    assert cgroup_memory(tmp_path) == (1000, 2000)
    unlimited = tmp_path / "v2"
    unlimited.mkdir()
    (unlimited / "memory.max").write_text("max\n")
    (unlimited / "memory.current").write_text("5")
    assert cgroup_memory(unlimited) is None
    assert cgroup_memory(tmp_path / "absent") is None
