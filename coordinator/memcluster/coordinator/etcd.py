"""The one door to etcd: a small asyncio adapter over the ``aetcd`` client library.

Only this module imports the library. The rest of memcluster sees ``str`` keys,
``bytes`` values, :class:`WatchEvent` and one exception, :class:`EtcdError` (a
retriable :class:`~memcluster.common.errors.Unavailable`), whose message names the
endpoint and the cause and whose ``__cause__`` is the library's own exception.

aetcd (asyncio over grpc.aio) fits our asyncio servers without threads; it was
checked against etcd 3.5, grpcio 1.85 and protobuf 7 (its generated code is
protobuf 5 gencode, which newer runtimes accept). It talks to one endpoint per
client, so :class:`Etcd` keeps one client per endpoint and moves to the next one in
order when a call fails for want of a connection (never when etcd refused it).
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

import aetcd  # type: ignore[import-untyped]
import grpc

from memcluster.common.errors import Unavailable

__all__ = ["Etcd", "EtcdError", "WatchEvent"]

_T = TypeVar("_T")

# Failures of the connection, not of the request: worth trying another endpoint.
_CONNECTION_ERRORS = (
    aetcd.ConnectionFailedError,
    aetcd.ConnectionTimeoutError,
    aetcd.WatchTimeoutError,
    TimeoutError,
)
_CONNECTION_CODES = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED})


class EtcdError(Unavailable):
    """etcd could not serve a request: unreachable, too slow, or it refused the request."""


@dataclass(frozen=True)
class WatchEvent:
    """One change under a watched prefix (a delete carries an empty value)."""

    kind: Literal["put", "delete"]
    key: str
    value: bytes
    revision: int


def _channel_options(timeout: float) -> dict[str, int]:
    return {
        # A hung etcd (SIGSTOP, dead host) must end watches too, not only unary calls.
        # grpcio 1.85 ignores keepalive_timeout_ms for this: ping_timeout_ms is needed.
        "grpc.keepalive_time_ms": 10_000,
        "grpc.keepalive_timeout_ms": int(timeout * 1000),
        "grpc.http2.ping_timeout_ms": int(timeout * 1000),
        "grpc.http2.max_pings_without_data": 0,
        # gRPC's default backoff grows to 2 minutes: reconnect soon after etcd returns.
        "grpc.initial_reconnect_backoff_ms": 100,
        "grpc.max_reconnect_backoff_ms": 1000,
    }


def _prefix_range(prefix: str) -> tuple[bytes, bytes]:
    """The key range [start, end) of every key that starts with ``prefix``."""
    start = prefix.encode() or b"\0"  # etcd has no empty key; "\0" to "\0" is all keys
    for i in reversed(range(len(start))):
        if start[i] < 0xFF:
            return start, start[:i] + bytes([start[i] + 1])
    return start, b"\0"


def _is_connection_failure(exc: BaseException) -> bool:
    if isinstance(exc, _CONNECTION_ERRORS):
        return True
    return isinstance(exc, grpc.aio.AioRpcError) and exc.code() in _CONNECTION_CODES


def _status_code(exc: BaseException) -> grpc.StatusCode | None:
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, grpc.aio.AioRpcError):
            return cause.code()
        cause = cause.__cause__
    return None


def _error(op: str, endpoint: str, exc: BaseException) -> EtcdError:
    return EtcdError(f"etcd at {endpoint}: {op} failed: {type(exc).__name__}: {exc}")


class Etcd:
    """An etcd client over ``endpoints`` ("host:port"), tried in order on failure.

    Every call is bounded by ``timeout`` seconds. Create it anywhere; it connects on
    first use, in the running event loop, and reconnects by itself after etcd returns.
    """

    def __init__(self, endpoints: Sequence[str], *, timeout: float = 5.0) -> None:
        if not endpoints:
            raise ValueError("at least one etcd endpoint is needed")
        if timeout <= 0:
            raise ValueError(f"timeout must be positive, not {timeout}")
        for endpoint in endpoints:
            host, _, port = endpoint.rpartition(":")
            if not host or not port.isdigit():
                raise ValueError(f"etcd endpoint {endpoint!r} is not host:port")
        self.endpoints = list(endpoints)
        self.timeout = timeout
        self._clients: dict[str, Any] = {}
        self._current = 0

    def _client(self, endpoint: str) -> Any:
        client = self._clients.get(endpoint)
        if client is None:
            host, _, port = endpoint.rpartition(":")
            client = aetcd.Client(
                host=host.strip("[]"),
                port=int(port),
                timeout=self.timeout,
                options=_channel_options(self.timeout),
            )
            self._clients[endpoint] = client
        return client

    async def _call(self, op: str, fn: Callable[[Any], Awaitable[_T]]) -> tuple[str, _T]:
        """Run ``fn(client)`` on the current endpoint, then on the others in order."""
        failures: list[tuple[str, BaseException]] = []
        for step in range(len(self.endpoints)):
            index = (self._current + step) % len(self.endpoints)
            endpoint = self.endpoints[index]
            try:
                result = await fn(self._client(endpoint))
            except (aetcd.ClientError, grpc.RpcError, TimeoutError) as exc:
                if not _is_connection_failure(exc):
                    raise _error(op, endpoint, exc) from exc
                failures.append((endpoint, exc))
                continue
            self._current = index
            return endpoint, result
        tried = ", ".join(endpoint for endpoint, _ in failures)
        cause = failures[-1][1]
        raise _error(op, tried, cause) from cause

    async def get(self, key: str) -> bytes | None:
        """The value of ``key``, or None when it does not exist."""
        value, _ = await self.get_with_revision(key)
        return value

    async def get_with_revision(self, key: str) -> tuple[bytes | None, int]:
        """The value of ``key`` (or None) and the store revision it was read at.

        Watching from ``revision + 1`` then misses no change made after the read.
        """
        _, response = await self._call(
            f"get {key!r}", lambda c: c.get_range(key.encode(), key.encode() + b"\0")
        )
        value = bytes(response.kvs[0].value) if response.kvs else None
        return value, int(response.header.revision)

    async def get_prefix(self, prefix: str) -> dict[str, bytes]:
        """Every key starting with ``prefix``, with its value."""
        values, _ = await self.get_prefix_with_revision(prefix)
        return values

    async def get_prefix_with_revision(self, prefix: str) -> tuple[dict[str, bytes], int]:
        """Every key starting with ``prefix``, and the store revision it was read at.

        List, then watch from ``revision + 1``: no change is missed.
        """
        start, end = _prefix_range(prefix)
        _, response = await self._call(f"get prefix {prefix!r}", lambda c: c.get_range(start, end))
        values = {bytes(kv.key).decode(): bytes(kv.value) for kv in response.kvs}
        return values, int(response.header.revision)

    async def put(self, key: str, value: bytes, *, lease: int | None = None) -> None:
        """Set ``key`` to ``value``, bound to ``lease`` if given."""
        await self._call(f"put {key!r}", lambda c: c.put(key.encode(), value, lease=lease))

    async def delete(self, key: str) -> bool:
        """Delete ``key``; True if it existed."""
        _, response = await self._call(f"delete {key!r}", lambda c: c.delete(key.encode()))
        return response is not None

    async def delete_prefix(self, prefix: str) -> int:
        """Delete every key starting with ``prefix``; returns how many there were."""
        start, end = _prefix_range(prefix)
        _, response = await self._call(
            f"delete prefix {prefix!r}", lambda c: c.delete_range(start, end)
        )
        return int(response.deleted)

    async def create(self, key: str, value: bytes, *, lease: int | None = None) -> bool:
        """Put ``key`` only if it does not exist; True if this call created it."""
        k = key.encode()
        return await self._txn(
            f"create {key!r}",
            lambda c: [c.transactions.create(k) == 0],
            lambda c: [c.transactions.put(k, value, lease=lease)],
        )

    async def put_if_equal(
        self,
        key: str,
        value: bytes,
        *,
        guard_key: str,
        guard_value: bytes,
        lease: int | None = None,
    ) -> bool:
        """Put ``key`` only while ``guard_key`` holds ``guard_value`` (a fenced write).

        False, and nothing written, when the guard differs or does not exist.
        """
        g = guard_key.encode()
        return await self._txn(
            f"put {key!r} if {guard_key!r} matches",
            lambda c: [c.transactions.value(g) == guard_value],
            lambda c: [c.transactions.put(key.encode(), value, lease=lease)],
        )

    async def delete_if_equal(self, key: str, value: bytes) -> bool:
        """Delete ``key`` only while it holds ``value``; True if deleted."""
        k = key.encode()
        return await self._txn(
            f"delete {key!r} if it matches",
            lambda c: [c.transactions.value(k) == value],
            lambda c: [c.transactions.delete(k)],
        )

    async def _txn(
        self, op: str, compare: Callable[[Any], list[Any]], success: Callable[[Any], list[Any]]
    ) -> bool:
        _, (succeeded, _) = await self._call(
            op, lambda c: c.transaction(compare=compare(c), success=success(c), failure=[])
        )
        return bool(succeeded)

    async def grant_lease(self, ttl: int) -> int:
        """A new lease of ``ttl`` seconds (etcd may raise it to its minimum); its id."""
        _, lease = await self._call(f"grant lease ttl={ttl}", lambda c: c.lease(ttl))
        return int(lease.id)

    async def refresh_lease(self, lease_id: int) -> int:
        """Keep ``lease_id`` alive once; its remaining TTL in seconds, 0 if it expired."""
        _, reply = await self._call(
            f"refresh lease {lease_id:x}", lambda c: c.refresh_lease(lease_id)
        )
        return int(reply.TTL) if reply is not None else 0

    async def revoke_lease(self, lease_id: int) -> None:
        """Revoke ``lease_id``, deleting its keys; a lease already gone is no error."""
        try:
            await self._call(f"revoke lease {lease_id:x}", lambda c: c.revoke_lease(lease_id))
        except EtcdError as exc:
            if _status_code(exc) != grpc.StatusCode.NOT_FOUND:
                raise

    async def watch_prefix(
        self, prefix: str, *, start_revision: int | None = None
    ) -> AsyncGenerator[WatchEvent, None]:
        """Yield every change under ``prefix`` (from ``start_revision`` if given).

        Cancelling the consumer (or ``aclose()``) stops the watch; closing this client
        ends the iteration. If etcd goes away, or the start revision was compacted, it
        raises :class:`EtcdError`: list again and watch from the listed revision.
        """
        start, end = _prefix_range(prefix)
        endpoint, watch = await self._call(
            f"watch {prefix!r}",
            lambda c: c.watch(start, range_end=end, start_revision=start_revision),
        )
        client = self._clients[endpoint]
        try:
            async for event in watch:
                kind: Literal["put", "delete"] = "put" if event.kind == "PUT" else "delete"
                kv = event.kv
                yield WatchEvent(
                    kind, bytes(kv.key).decode(), bytes(kv.value), int(kv.mod_revision)
                )
        except (aetcd.ClientError, grpc.RpcError) as exc:
            raise _error(f"watch {prefix!r}", endpoint, exc) from exc
        finally:
            # After close() the client has no watcher left to cancel with.
            if self._clients.get(endpoint) is client:
                await watch.cancel()

    async def status(self) -> None:
        """Return if an endpoint answers and its member sees a leader; else EtcdError."""
        endpoint, status = await self._call("status", lambda c: c.status())
        if status.leader is None:
            raise EtcdError(f"etcd at {endpoint}: status: the member has no leader")

    async def close(self) -> None:
        """Close every connection; pending watches end."""
        clients, self._clients = self._clients, {}
        for client in clients.values():
            await client.close()
