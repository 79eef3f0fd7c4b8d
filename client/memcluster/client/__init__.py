"""memcluster's client library: a blocking ``Client`` and an asyncio ``AsyncClient``.

Both faces share one sans-IO core (validation, routing, batching, retries and
decoding) and offer the same API::

    from memcluster.client import Client, JSON

    with Client("127.0.0.1:7000", codec=JSON) as cache:
        cache.put("user:1", {"name": "Ada"}, ttl=3600)
        cache.get("user:1")

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
from .types import Consistency, Entry, NodeInfo, Topology

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
    "NotFound",
    "NotOwner",
    "Timeout",
    "Topology",
    "Unavailable",
]
