"""Stores for the unit tests of the store and of what it is built from: a small
tiered store, documents to fill it, where a key lives, and scripted random draws."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

from memcluster.common.clock import ManualClock
from memcluster.common.config import NodeConfig
from memcluster.node.store import TieredStore


def make_store(tmp_path: Path, clock: ManualClock, **memory: Any) -> TieredStore:
    """A small store; it promotes on every read below hot (the tests of promotion's
    mechanics), unless ``promote_after`` says otherwise (the tests of admission)."""
    memory.setdefault("promote_after", 1)
    tiers = {
        "hot": {"capacity": "20KB", "ttl": "1h", "eviction": "lru"},
        "warm": {"capacity": "20KB", "ttl": "1d"},
        "cold": {"capacity": "1MB", "path": str(tmp_path / "cold")},
    }
    for name, overrides in memory.pop("tiers", {}).items():
        tiers[name].update(overrides)
    config = NodeConfig.from_mapping({"memory": {"tiers": tiers, **memory}})
    return TieredStore(config.memory, config.limits, origin=1, clock=clock)


def doc(i: int) -> bytes:
    return json.dumps({"id": i, "name": f"user-{i}", "bio": "lorem ipsum " * 10}).encode()


def where(store: TieredStore, key: bytes) -> list[str]:
    return [t.name for t in store.tiers if key in t]


class Draws(random.Random):
    """Hands out the given draws in turn."""

    def __init__(self, draws: list[float]) -> None:
        super().__init__()
        self.draws = draws

    def random(self) -> float:
        return self.draws.pop(0)
