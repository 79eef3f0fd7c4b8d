"""Retry decisions: which failures to retry, and how long to back off."""

from __future__ import annotations

import random as _random
from collections.abc import Callable
from dataclasses import dataclass

from memcluster.common.errors import MemclusterError


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Which failures to retry, and how long to back off before each retry."""

    max_retries: int
    backoff: float
    max_backoff: float
    #: Uniform in [0, 1); injected so tests can pin the jitter.
    random: Callable[[], float] = _random.random

    def should_retry(self, error: MemclusterError, retries_done: int) -> bool:
        """True when ``error`` may pass if retried and retries remain."""
        return error.retriable and retries_done < self.max_retries

    def delay(self, retries_done: int) -> float:
        """Exponential backoff with jitter, within [cap/2, cap] (cap grows to max_backoff)."""
        cap = min(self.max_backoff, self.backoff * 2.0 ** min(retries_done, 32))
        return cap / 2 + self.random() * cap / 2
