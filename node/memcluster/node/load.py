"""What a node reports about its load: request rate and the keys it is asked for most.

Hot keys are found by sampling one request in SAMPLE_EVERY into a bounded counter that
is halved at every report (so it tracks recent popularity, not all-time).
"""

from __future__ import annotations

import random
from collections import Counter

SAMPLE_EVERY = 16
MAX_TRACKED = 1024


class LoadMeter:
    """Counts operations and samples keys; single-threaded."""

    def __init__(self, rng: random.Random | None = None) -> None:
        self.ops = 0
        self._rng = rng or random.Random()
        self._keys: Counter[bytes] = Counter()
        self._last_ops = 0
        self._last_time: float | None = None

    def observe(self, count: int, key: bytes | None = None) -> None:
        """``count`` operations, one of them on ``key`` when given."""
        self.ops += count
        if key is not None and self._rng.random() < 1 / SAMPLE_EVERY:
            self._keys[key] += 1
            if len(self._keys) > 2 * MAX_TRACKED:
                self._keys = Counter(dict(self._keys.most_common(MAX_TRACKED)))

    def rate(self, now: float) -> float:
        """Operations per second since the previous call (0.0 on the first)."""
        previous, self._last_time = self._last_time, now
        ops, self._last_ops = self.ops - self._last_ops, self.ops
        if previous is None or now <= previous:
            return 0.0
        return ops / (now - previous)

    def hot_keys(self, top: int = 5) -> list[bytes]:
        """The most requested sampled keys, then halve every count (decay)."""
        keys = [k for k, _ in self._keys.most_common(top)]
        self._keys = Counter({k: c // 2 for k, c in self._keys.items() if c > 1})
        return keys
