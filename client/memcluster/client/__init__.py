"""memcluster's client library: a blocking ``Client`` and an asyncio ``AsyncClient``.

Both faces share one sans-IO core (validation, routing, fan-out, retries, topology
refresh and decoding) and offer the same API::

    from memcluster.client import Client, JSON

    with Client(["10.0.0.1:7400", "10.0.0.2:7400"], codec=JSON) as cache:
        cache.put("user:1", {"name": "Ada"}, ttl=3600)
        cache.get("user:1")

The client bootstraps from any of the given nodes, caches the cluster topology and
routes each key to its replicas; a standalone node is a cluster of one.

Errors are the ``memcluster.common.errors`` tree, re-exported here.
"""

from memcluster.common.errors import (
    CapacityExceeded,
    InternalError,
    InvalidRequest,
    MemclusterError,
    NotFound,
    NotOwner,
    Timeout,
    Unavailable,
)

from ._aio import AsyncClient
from ._sync import Client
from .codecs import BYTES, JSON, MSGPACK, NUMPY, STR, Codec
from .types import Consistency, Entry, NodeInfo, NodeState, Topology

__all__ = [
    "BYTES",
    "JSON",
    "MSGPACK",
    "NUMPY",
    "STR",
    "AsyncClient",
    "CapacityExceeded",
    "Client",
    "Codec",
    "Consistency",
    "Entry",
    "InternalError",
    "InvalidRequest",
    "MemclusterError",
    "NodeInfo",
    "NodeState",
    "NotFound",
    "NotOwner",
    "Timeout",
    "Topology",
    "Unavailable",
]
