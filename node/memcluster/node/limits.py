"""What a request may carry: keys, values, ttls and priorities within the node's limits.

Every check raises ``InvalidRequest`` with a message that names the field (``keys[3]``,
``items[0]``), the limit to respect and the setting behind it, if any. The store checks
every request before it changes anything; the replication and service layers check
what they handle before the store sees it.
"""

from __future__ import annotations

from collections.abc import Sequence

from memcluster.common.config import LimitsConfig
from memcluster.common.errors import InvalidRequest
from memcluster.node.tiers.record import PRIORITY_MAX, PRIORITY_MIN


class RequestLimits:
    """The checks of one node's ``limits`` configuration."""

    def __init__(self, limits: LimitsConfig) -> None:
        self._limits = limits

    def keys(self, keys: Sequence[bytes]) -> None:
        """Raise InvalidRequest naming the first bad key of a batch, if any."""
        if keys and min(map(len, keys)) > 0 and max(map(len, keys)) <= self._limits.max_key_bytes:
            return  # the common case, checked without a Python step per key
        for index, key in enumerate(keys):
            self.key(key, where=f"keys[{index}]")

    def key(self, key: bytes, where: str = "key") -> None:
        """Raise InvalidRequest unless ``key`` is 1..max_key_bytes bytes."""
        if not key:
            raise InvalidRequest(f"{where}: key must not be empty")
        if len(key) > self._limits.max_key_bytes:
            raise InvalidRequest(
                f"{where}: key is {len(key)} bytes; the limit is "
                f"{self._limits.max_key_bytes} (limits.max_key_bytes)"
            )

    def put(
        self,
        key: bytes,
        value: bytes,
        ttl: float | None = None,
        priority: int = 0,
        where: str = "item",
    ) -> None:
        """Raise InvalidRequest unless a put of these arguments would be accepted."""
        self.key(key, where)
        if len(value) > self._limits.max_value_bytes:
            raise InvalidRequest(
                f"{where}: value is {len(value)} bytes; the limit is "
                f"{self._limits.max_value_bytes} (limits.max_value_bytes)"
            )
        if ttl is not None and not (0 < ttl < 10**10):
            raise InvalidRequest(f"{where}: ttl must be a positive number of seconds, got {ttl}")
        self.priority(priority, where)

    @staticmethod
    def priority(priority: int, where: str = "priority") -> None:
        """Raise InvalidRequest unless ``priority`` fits the record's 16 bits."""
        if not PRIORITY_MIN <= priority <= PRIORITY_MAX:
            raise InvalidRequest(
                f"{where}: priority {priority} is outside {PRIORITY_MIN}..{PRIORITY_MAX}"
            )
