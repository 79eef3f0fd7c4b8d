"""The bench's workload plans: every size names real cells and tiers."""

from __future__ import annotations

import pytest

from bench.workloads import CELLS, FULL, IN_HOT_CELLS, QUICK, SizeSpec, WorkloadPlan


@pytest.mark.parametrize("plan", [FULL, QUICK], ids=["full", "quick"])
def test_each_plan_measures_the_target_size_with_both_tiers(plan: WorkloadPlan) -> None:
    sizes = {spec.key: spec for spec in plan.sizes}
    assert "100B" in sizes and sizes["100B"].measured_cells == CELLS
    in_hot = sizes["100B/default tiers"]
    assert [c.key for c in in_hot.measured_cells] == list(IN_HOT_CELLS)
    assert len(sizes) == len(plan.sizes), "sizes have distinct keys"


def test_a_size_naming_an_unknown_cell_or_tiers_is_refused() -> None:
    with pytest.raises(ValueError, match=r"no such cells \['sync/D'\]"):
        SizeSpec("100B", "small", 10, "default", ("sync/C", "sync/D"))
    with pytest.raises(ValueError, match="tiers 'tiny' is not small or default"):
        SizeSpec("100B", "small", 10, "tiny")
