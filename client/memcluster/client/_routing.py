"""Where each key goes: the router seam of the client core, and its one-node router.

The core asks a router for a key's replicas (primary first), reports stale-routing
errors to it, and when the router asks for it, fetches a topology and hands it over.
Routers do no I/O themselves, so they stay testable by hand and the sync and asyncio
faces share them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from memcluster.common.errors import MemclusterError

from .types import Topology


class Router(Protocol):
    """Decides which node addresses serve a key."""

    @property
    def epoch(self) -> int:
        """The topology epoch the routing is based on (0: none), sent with every request."""
        ...

    def replicas(self, key: bytes) -> Sequence[str]:
        """The addresses holding ``key``, primary first (never empty)."""
        ...

    def any_address(self) -> str:
        """An address for calls about a node or the cluster rather than a key."""
        ...

    def refresh(self, error: MemclusterError) -> bool:
        """Told that routing is stale (``error.refresh_routing``); True asks for a topology."""
        ...

    def update(self, topology: Topology) -> None:
        """Take a topology fetched because ``refresh`` asked for one."""
        ...


class StaticRouter:
    """Sends every key to one fixed address; there is no topology to refresh."""

    def __init__(self, address: str) -> None:
        if not address:
            raise ValueError("a node address (host:port) is required")
        self._address = address

    @classmethod
    def from_addresses(cls, address: str | Sequence[str]) -> StaticRouter:
        """The router for a client given ``address`` (one host:port, or a list of one)."""
        if isinstance(address, str):
            return cls(address)
        addresses = list(address)
        if len(addresses) != 1:
            raise ValueError(
                f"this client talks to exactly one node; got {len(addresses)} addresses"
            )
        return cls(addresses[0])

    @property
    def epoch(self) -> int:
        """Always 0: the static routing was not derived from any topology."""
        return 0

    def replicas(self, key: bytes) -> Sequence[str]:
        """The one address."""
        return (self._address,)

    def any_address(self) -> str:
        """The one address."""
        return self._address

    def refresh(self, error: MemclusterError) -> bool:
        """Nothing to refresh: a fixed address cannot be rerouted."""
        return False

    def update(self, topology: Topology) -> None:
        """Ignored: the address stays fixed."""
