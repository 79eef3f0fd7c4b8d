"""Where each key goes: the router seam of the client core, its routers, and their choice.

The core asks a router for a key's replicas (primary first) and for addresses to ask
about the cluster; it fetches topologies itself and hands them over. Routers do no
I/O, so they stay testable by hand and the sync and asyncio faces share them.

- ``RingRouter`` (``routing="cluster"``, the default) routes by the cluster's topology,
  bootstrapped from any node; a standalone node serves a topology of one.
- ``StaticRouter`` (``routing="static"``) sends everything to one node as given, like
  ``redis-cli`` without ``-c``: to inspect that very node, whatever the topology says.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, Protocol

from memcluster.common.errors import MemclusterError

from ._ring import RingRouter, parse_addresses
from .types import Topology

Routing = Literal["cluster", "static"]


class Router(Protocol):
    """Decides which node addresses serve a key."""

    @property
    def epoch(self) -> int:
        """The topology epoch the routing is based on (0: none), sent with every request."""
        ...

    @property
    def topology(self) -> Topology | None:
        """The topology the routing is based on (None before the first, or never for some)."""
        ...

    def replicas(self, key: bytes) -> Sequence[str]:
        """The addresses holding ``key`` (never empty), in the order requests try them."""
        ...

    def replicas_many(self, keys: Sequence[bytes]) -> list[Sequence[str]]:
        """``replicas`` of each key (batches)."""
        ...

    def any_address(self) -> str:
        """An address for calls about a node or the cluster rather than a key."""
        ...

    def sources(self) -> Sequence[str]:
        """Addresses to ask for a topology, in turn; empty when the router takes none."""
        ...

    def refresh(self, error: MemclusterError) -> bool:
        """Told that routing is stale (``error.refresh_routing``); True asks for a topology."""
        ...

    def update(self, topology: Topology) -> bool:
        """Take a fetched topology; True when the routing now rests on it."""
        ...


class StaticRouter:
    """Sends every key to one fixed address; there is no topology to refresh."""

    def __init__(self, address: str) -> None:
        if not address:
            raise ValueError("a node address (host:port) is required")
        self._address = address

    @property
    def epoch(self) -> int:
        """Always 0: the static routing was not derived from any topology."""
        return 0

    @property
    def topology(self) -> Topology | None:
        """Always None: the node is addressed as given."""
        return None

    def replicas(self, key: bytes) -> Sequence[str]:
        """The one address."""
        return (self._address,)

    def replicas_many(self, keys: Sequence[bytes]) -> list[Sequence[str]]:
        """The one address for each key."""
        return [(self._address,)] * len(keys)

    def any_address(self) -> str:
        """The one address."""
        return self._address

    def sources(self) -> Sequence[str]:
        """None: this router takes no topology."""
        return ()

    def refresh(self, error: MemclusterError) -> bool:
        """Nothing to refresh: a fixed address cannot be rerouted."""
        return False

    def update(self, topology: Topology) -> bool:
        """Ignored: the address stays fixed."""
        return False


def make_router(address: str | Sequence[str], routing: str) -> Router:
    """The router a client constructed with ``address`` and ``routing`` uses (ValueError)."""
    addresses = parse_addresses(address)
    if routing == "cluster":
        return RingRouter(addresses)
    if routing == "static":
        if len(addresses) != 1:
            raise ValueError(
                f"routing='static' talks to exactly one node; got {len(addresses)} addresses"
            )
        return StaticRouter(addresses[0])
    raise ValueError(f"routing must be 'cluster' or 'static', got {routing!r}")
