"""The systems under test behind one interface: memcluster, Redis and memcached.

Each ``System`` hands out blocking operations (one client, one call at a time),
asyncio operations where its ecosystem has a standard asyncio client (memcluster's
``AsyncClient``, ``redis.asyncio``; memcached has none, so its concurrent runs use
threads with one blocking client each), and reports what its processes use
(memory, and disk for memcluster's cold tier).

The multi-key calls are each system's own batch primitive: memcluster
``get_many``/``put_many`` (fanned out by owner), Redis ``MGET`` and a pipeline of
``SET`` (one round trip, no transaction), memcached ``get_many`` (one ``get`` with
many keys) and ``set_many`` (the ``set`` commands sent together).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import psutil

from bench.cluster import disk_bytes, node_pids, process_memory
from bench.memcached_server import MemcachedServer
from bench.redis_server import RedisServer
from memcluster.cli.local import LocalCluster

CLIENT_TIMEOUT = 30.0  # seconds per call; far above any latency the benchmarks expect


@dataclass(frozen=True)
class SyncOps:
    """Blocking operations of one client, and how to close it."""

    get: Callable[[bytes], object]
    put: Callable[[bytes, bytes], object]
    get_many: Callable[[list[bytes]], object]
    put_many: Callable[[dict[bytes, bytes]], object]
    close: Callable[[], None]


@dataclass(frozen=True)
class AsyncOps:
    """asyncio operations of one client (bound to the running loop), and how to close it."""

    get: Callable[[bytes], Awaitable[object]]
    put: Callable[[bytes, bytes], Awaitable[object]]
    close: Callable[[], Awaitable[None]]


class System(ABC):
    """One system under test, already running."""

    #: Short name used in the results ("memcluster", "redis", ...).
    name: str
    #: How its concurrent runs keep operations in flight: "asyncio" or "threads".
    concurrency: str = "asyncio"

    @abstractmethod
    def sync_ops(self) -> SyncOps:
        """A new blocking client's operations."""

    async def async_ops(self) -> AsyncOps:
        """A new asyncio client's operations (only when ``concurrency == "asyncio"``)."""
        raise NotImplementedError(f"{self.name} has no asyncio client")

    @abstractmethod
    def memory(self) -> dict[str, Any]:
        """Memory (and disk) figures in bytes, as the system reports them or psutil sees them."""


class Memcluster(System):
    """A LocalCluster, through memcluster.client (default options: reads ONE, writes QUORUM)."""

    def __init__(self, cluster: LocalCluster, name: str = "memcluster") -> None:
        self.cluster = cluster
        self.name = name
        self.addresses = cluster.node_addresses()

    def sync_ops(self) -> SyncOps:
        """A ``Client`` (data calls on the nodes' frame transport, pooled sockets)."""
        from memcluster.client import Client

        client: Client[bytes] = Client(self.addresses, timeout=CLIENT_TIMEOUT)
        return SyncOps(client.get, client.put, client.get_many, client.put_many, client.close)

    async def async_ops(self) -> AsyncOps:
        """An ``AsyncClient`` (one multiplexed frame connection per node)."""
        from memcluster.client import AsyncClient

        client: AsyncClient[bytes] = AsyncClient(self.addresses, timeout=CLIENT_TIMEOUT)
        return AsyncOps(client.get, client.put, client.close)

    def memory(self) -> dict[str, Any]:
        """Summed RSS of the node processes, cold-tier disk use, and items per tier."""
        from memcluster.client import Client

        tiers: dict[str, dict[str, int]] = {}
        with Client(self.addresses, timeout=CLIENT_TIMEOUT) as client:
            for address in self.addresses:
                for tier, figures in client.stats(address)["tiers"].items():
                    total = tiers.setdefault(tier, {"items": 0, "bytes": 0})
                    total["items"] += figures["items"]
                    total["bytes"] += figures["bytes"]
        return {
            **process_memory(node_pids(self.cluster)),
            "disk": disk_bytes(self.cluster),
            "tiers": tiers,
        }


class Redis(System):
    """The private redis-server, through redis-py and redis.asyncio."""

    name = "redis"

    def __init__(self, server: RedisServer) -> None:
        self.server = server

    def sync_ops(self) -> SyncOps:
        """A redis-py client: GET, SET, MGET, and a pipeline of SETs for a batch write."""
        client = self.server.client()

        def set_many(items: dict[bytes, bytes]) -> object:
            pipe = client.pipeline(transaction=False)
            for k, v in items.items():
                pipe.set(k, v)
            return pipe.execute()

        return SyncOps(client.get, client.set, client.mget, set_many, client.close)

    async def async_ops(self) -> AsyncOps:
        """A redis.asyncio client (a connection per operation in flight)."""
        import redis.asyncio

        client = redis.asyncio.Redis(
            host="127.0.0.1", port=self.server.port, socket_timeout=CLIENT_TIMEOUT
        )
        return AsyncOps(client.get, client.set, client.aclose)

    def memory(self) -> dict[str, Any]:
        """``INFO memory``'s used_memory, and the process's RSS.

        psutil reads RSS directly; Redis's own ``used_memory_rss`` is sampled
        periodically and can lag a load that just finished.
        """
        client = self.server.client()
        try:
            info = client.info()
        finally:
            client.close()
        rss = psutil.Process(info["process_id"]).memory_info().rss
        return {"used_memory": info["used_memory"], "rss": rss}


class Memcached(System):
    """The private memcached, through pymemcache (threads for concurrency)."""

    name = "memcached"
    concurrency = "threads"

    def __init__(self, server: MemcachedServer) -> None:
        self.server = server

    def sync_ops(self) -> SyncOps:
        """A pymemcache client that waits for every reply (no ``noreply``)."""
        client = self.server.client()
        return SyncOps(client.get, client.set, client.get_many, client.set_many, client.close)

    def memory(self) -> dict[str, Any]:
        """``stats`` bytes (item memory in use) and the process's RSS."""
        stats = self.server.stats()
        rss = psutil.Process(self.server.pid).memory_info().rss
        return {"bytes": int(stats["bytes"]), "rss": rss}
