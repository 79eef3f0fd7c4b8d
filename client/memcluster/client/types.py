"""The client's public value types: consistency levels, entries and topology snapshots.

Topology, NodeInfo and NodeState are the cluster's own (``memcluster.common.topology``),
re-exported so that callers need only ``memcluster.client``.
"""

from __future__ import annotations

import enum
import typing
from dataclasses import dataclass
from typing import TYPE_CHECKING, Generic

from memcluster.common.topology import NodeInfo, NodeState, Topology

if TYPE_CHECKING:
    # PEP 696 defaults let `Client("host:port")` infer Client[bytes]; the runtime
    # TypeVar needs no default, so typing_extensions stays a type-checking import.
    from typing_extensions import TypeVar

    V = TypeVar("V", default=bytes)
else:
    V = typing.TypeVar("V")

__all__ = ["Consistency", "Entry", "K", "Key", "NodeInfo", "NodeState", "Topology", "V"]

#: A key as callers pass it: bytes, or str (sent UTF-8 encoded).
Key = bytes | str
K = typing.TypeVar("K", bound=bytes | str)


class Consistency(enum.StrEnum):
    """How many replicas must answer before a request succeeds."""

    ONE = "one"
    QUORUM = "quorum"
    ALL = "all"


@dataclass(frozen=True, slots=True)
class Entry(Generic[V]):
    """An item as a read found it, with its metadata."""

    value: V
    #: The item's version (hybrid logical clock); higher is newer.
    version: int
    #: Absolute expiry in Unix seconds, or None when the item never expires.
    expires_at: float | None
    #: Eviction priority: higher is evicted later.
    priority: int
    #: The tier that served the read: 'hot', 'warm' or 'cold' ('unknown' if unreported).
    tier: str
