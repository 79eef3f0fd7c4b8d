"""The benchmarks' code paths, run for a moment each (``python -m bench all --quick``).

Figures from a quick run are no measurements and nothing here judges speed: the test
checks that every section ran against every system and recorded what the tables and
the targets read, so that the bench keeps working as the product changes.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bench.workloads import IN_HOT_CELLS

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
PEERS_MISSING = [name for name in ("redis-server", "memcached") if shutil.which(name) is None]


def test_every_section_runs_against_every_system(tmp_path: Path) -> None:
    if PEERS_MISSING:
        pytest.fail(
            f"{', '.join(PEERS_MISSING)} missing: run scripts/bench_env.sh (make test does)"
        )
    out = tmp_path / "quick.json"
    result = subprocess.run(
        [sys.executable, "-m", "bench", "all", "--quick", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
        cwd=REPO,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    results = json.loads(out.read_text())
    for section in ("tiers", "workloads", "rebalance"):
        assert "error" not in results[section], results[section]
    for name, part in results["tiers"].items():  # its sub-sections fail on their own
        assert not (isinstance(part, dict) and "error" in part), (name, part)
    for size in results["workloads"]["sizes"].values():
        systems = set(size["cells"])
        assert {"memcluster", "redis", "memcached"} <= systems, systems
        assert size["cells"]["memcluster"].keys() == size["cells"]["redis"].keys()
        # A noise probe before each round and one at the end.
        assert len(size["noise"]["probes"]) == results["workloads"]["plan"]["rounds"] + 1
    sizes = results["workloads"]["sizes"]
    in_hot = sizes["100B/default tiers"]  # the same 100B dataset in the shipped tiers
    assert set(in_hot["cells"]["memcluster"]) == set(IN_HOT_CELLS)
    assert in_hot["cluster"]["tiers"]["hot"] != sizes["100B"]["cluster"]["tiers"]["hot"]
    assert in_hot["tiers"] == "default" and sizes["100B"]["tiers"] == "small"
    assert len(results["rebalance"]["noise"]["probes"]) == 2  # around the background load
    targets = {t["target"]: t["value"] for t in results["targets"]}
    assert len(targets) == 6 and None not in targets.values(), targets
    moved = results["rebalance"]["join"]["moved"]
    assert moved["copies_moved"] > 0 and moved["under_replicated_keys"] == 0
    assert results["rebalance"]["failure"]["rf_verified"]
