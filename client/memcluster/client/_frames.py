"""The client's side of the frame transport (protocol: memcluster.common.frames).

The faces ask ``Node.Transports`` over gRPC once per node for its frame address, then
send the Node service's data calls as frames: the blocking client on pooled sockets,
one request per socket at a time (a batch's sub-calls go out on several sockets
before any answer is read), the asyncio client on one multiplexed connection per
node. Errors come back shaped like a failed unary call (``FrameRpcError``), so the
core maps them like any other. A node that offers no frame port, or whose port does
not answer while its gRPC server does, is served over gRPC (checked again after
``RECHECK_SECONDS``).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
from google.protobuf.message import DecodeError, Message

from memcluster.common.errors import EPOCH_METADATA, ERROR_KIND_METADATA
from memcluster.common.frames import (
    BY_NAME,
    MAX_ID,
    OK,
    PREAMBLE,
    READ_SIZE,
    FrameReader,
    frame,
)
from memcluster.wire import node_pb2

#: How long a node found without a usable frame port is served over gRPC before the
#: client asks again.
RECHECK_SECONDS = 30.0
#: Idle sockets kept per node by the blocking client.
POOL_SIZE = 8
_CODES = {code.value[0]: code for code in grpc.StatusCode}


class FrameRpcError(grpc.RpcError):
    """A failed frame request, shaped like a failed unary call."""

    def __init__(self, code: grpc.StatusCode, details: str, kind: str = "", epoch: int = 0):
        super().__init__(details)
        self._code = code
        self._details = details
        self._metadata: tuple[tuple[str, str], ...] = (
            ((ERROR_KIND_METADATA, kind), (EPOCH_METADATA, str(epoch))) if kind else ()
        )

    def code(self) -> grpc.StatusCode:
        """The status code."""
        return self._code

    def details(self) -> str:
        """The message."""
        return self._details

    # grpc-stubs types metadata as its private _Metadatum; plain pairs are what it holds.
    def trailing_metadata(self) -> tuple[tuple[str, str], ...]:  # type: ignore[override]
        """memcluster's error kind and epoch."""
        return self._metadata


def carried(method: str) -> bool:
    """Whether the frame transport carries this Node method."""
    found = BY_NAME.get(method)
    return found is not None and found.service == "Node"


def decode_answer(method: str, kind: int, body: bytes | None) -> Message:
    """The response message of an answer frame; raises FrameRpcError for an error frame
    (and for an answer over the client's ``max_message_bytes``: body None)."""
    if body is None:
        raise FrameRpcError(
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            f"the {method} answer is over this client's max_message_bytes; raise it or ask "
            "for fewer or smaller values at a time",
        )
    try:
        if kind == OK:
            response: Message = BY_NAME[method].response.FromString(body)
            return response
        err = node_pb2.FrameError.FromString(body)
    except DecodeError as exc:
        raise FrameRpcError(
            grpc.StatusCode.INTERNAL, f"undecodable {method} answer: {exc}"
        ) from exc
    raise FrameRpcError(
        _CODES.get(err.code, grpc.StatusCode.UNKNOWN), err.message, err.kind, err.epoch
    )


def unavailable(address: str, what: str) -> FrameRpcError:
    """The error for a frame connection that failed."""
    return FrameRpcError(grpc.StatusCode.UNAVAILABLE, f"{address}: {what}")


class ConnectFailed(FrameRpcError):
    """The node's frame port did not take a connection (nothing was sent)."""

    def __init__(self, address: str, exc: BaseException) -> None:
        super().__init__(grpc.StatusCode.UNAVAILABLE, f"{address}: cannot connect: {exc}")


class Directory:
    """Which frame address each node offers (None: use gRPC), as the nodes said."""

    def __init__(self) -> None:
        self._known: dict[str, tuple[str | None, float]] = {}
        self._lock = threading.Lock()

    def lookup(self, address: str) -> tuple[bool, str | None]:
        """(known, frame address) for the node at ``address``."""
        entry = self._known.get(address)
        if entry is None:
            return False, None
        frames, until = entry
        if frames is None and time.monotonic() > until:
            return False, None
        return True, frames

    def learn(self, address: str, response: node_pb2.TransportsResponse | None) -> str | None:
        """Record a node's Transports answer (None: it has no such method)."""
        frames = response.frames_address if response is not None else ""
        self.set(address, frames or None)
        return frames or None

    def set(self, address: str, frames: str | None) -> None:
        """Record ``frames`` for ``address`` (None: gRPC for a while)."""
        with self._lock:
            self._known[address] = (frames, time.monotonic() + RECHECK_SECONDS)

    def forget(self, address: str) -> None:
        """Ask the node again next time (its frame port may have moved)."""
        with self._lock:
            self._known.pop(address, None)


def _split(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host.strip("[]"), int(port)


# -- blocking ------------------------------------------------------------------------


def _timeval(seconds: float) -> bytes:
    """A ``struct timeval`` for SO_RCVTIMEO / SO_SNDTIMEO (at least 1 µs: 0 means never)."""
    micros = max(int(seconds * 1e6), 1)
    return struct.pack("@ll", micros // 1_000_000, micros % 1_000_000)


class SyncConnection:
    """One socket to a node's frame port; one request at a time.

    The socket stays in blocking mode, its deadlines kept by the kernel (SO_RCVTIMEO,
    SO_SNDTIMEO): a request is then one send and one receive. A Python socket timeout
    would add a poll before each of them, and switching modes for the check before
    reuse two ioctls more; on this path those were five of eight system calls.
    """

    def __init__(self, address: str, timeout: float, max_body: int) -> None:
        self.address = address
        self.reused = False
        self._sock = socket.create_connection(_split(address), timeout=timeout)
        self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._sock.settimeout(None)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, _timeval(timeout))
        self._receive_timeout = 0.0
        self._wait_at_most(timeout)
        self._reader = FrameReader(max_body)
        self._frames: list[tuple[int, int, bytes | None]] = []
        self._next_id = 0
        self._sock.sendall(PREAMBLE)

    def _wait_at_most(self, seconds: float) -> None:
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, _timeval(seconds))
        self._receive_timeout = seconds

    def send(self, method: str, request: Message) -> int:
        """Send one request; returns its id."""
        self._next_id = self._next_id + 1 if self._next_id < MAX_ID else 1
        body = request.SerializeToString()
        self._sock.sendall(frame(self._next_id, BY_NAME[method].kind, body))
        return self._next_id

    def receive(self, frame_id: int, deadline: float) -> tuple[int, bytes | None]:
        """Wait for the answer to ``frame_id``: (kind, body). Raises OSError/TimeoutError."""
        while True:
            for index, (got, kind, body) in enumerate(self._frames):
                if got == frame_id:
                    del self._frames[index]
                    return kind, body
            remaining = deadline - time.monotonic()
            try:
                if remaining <= 0.0:
                    # Past the deadline the socket is still read once without waiting: a
                    # batch collects its answers one after another, and one that waited
                    # on a slow node must not fail the others whose answers are here.
                    data = self._sock.recv(READ_SIZE, socket.MSG_DONTWAIT)
                else:
                    # The kernel's wait is set again only when it would overshoot the
                    # deadline by over a millisecond: calls with the same timeout share it.
                    if self._receive_timeout - remaining > 0.001:
                        self._wait_at_most(remaining)
                    data = self._sock.recv(READ_SIZE)
            except BlockingIOError as exc:
                if remaining > 0.0 and deadline - time.monotonic() > 0.0:
                    self._wait_at_most(deadline - time.monotonic())
                    continue  # the kernel's wait was shorter than this call's
                raise TimeoutError from exc
            if not data:
                raise ConnectionResetError("the node closed the connection")
            self._frames.extend(self._reader.feed(data))

    def idle(self) -> bool:
        """No answer pending or partly read: the socket can serve the next request."""
        return not self._frames and self._reader.pending() == 0

    def usable(self) -> bool:
        """Still open at the node's end with nothing unread (checked before reuse).

        A node that restarted or shut down closed its end while the socket sat in the
        pool; a request sent on it would be lost without telling whether it was applied.
        """
        try:
            self._sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
        except BlockingIOError:
            return True  # nothing to read: open, as it should be
        except OSError:
            return False
        return False  # end of stream, or bytes nobody asked for

    def close(self) -> None:
        """Close the socket."""
        with contextlib.suppress(OSError):
            self._sock.close()


class SyncFrames:
    """The blocking client's frame connections, pooled per node."""

    def __init__(self, max_body: int) -> None:
        self._max_body = max_body
        self._pools: dict[str, list[SyncConnection]] = {}
        self._lock = threading.Lock()
        self._closed = False

    def acquire(self, address: str, timeout: float) -> SyncConnection:
        """A pooled idle connection to ``address``, or a new one (raises OSError)."""
        with self._lock:
            if self._closed:
                raise RuntimeError("this memcluster client is closed")
            pool = self._pools.get(address)
            while pool:
                connection = pool.pop()
                if connection.usable():
                    connection.reused = True
                    return connection
                connection.close()
        return SyncConnection(address, timeout, self._max_body)

    def release(self, connection: SyncConnection) -> None:
        """Give a connection back after a completed request."""
        with self._lock:
            pool = self._pools.setdefault(connection.address, [])
            if not self._closed and connection.idle() and len(pool) < POOL_SIZE:
                pool.append(connection)
                return
        connection.close()

    def discard(self, address: str) -> None:
        """Close the idle connections to ``address`` (the node went away)."""
        with self._lock:
            pool = self._pools.pop(address, [])
        for connection in pool:
            connection.close()

    def close(self) -> None:
        """Close every connection."""
        with self._lock:
            self._closed = True
            pools, self._pools = self._pools, {}
        for pool in pools.values():
            for connection in pool:
                connection.close()


class SyncExchange:
    """One request on a blocking connection: sent now, answered by ``result``."""

    def __init__(
        self, frames: SyncFrames, address: str, method: str, request: Message, timeout: float
    ) -> None:
        self._frames = frames
        self._address = address
        self._method = method
        self._request = request
        self._timeout = timeout
        self._deadline = time.monotonic() + timeout
        self._connection: SyncConnection | None = None
        self._id = 0
        self._send()

    def _send(self) -> None:
        try:
            self._connection = self._frames.acquire(self._address, self._timeout)
        except OSError as exc:
            raise ConnectFailed(self._address, exc) from exc
        try:
            self._id = self._connection.send(self._method, self._request)
        except OSError as exc:
            self._resend_or_fail(exc)

    def _resend_or_fail(self, exc: OSError) -> None:
        connection, self._connection = self._connection, None
        assert connection is not None
        connection.close()
        if not connection.reused:
            raise unavailable(self._address, f"connection failed: {exc}") from exc
        # The send itself failed on a pooled socket (the node closed it just after the
        # check): no whole frame reached the node, so the request goes once more on a
        # fresh connection.
        self._frames.discard(self._address)
        self._send()

    def result(self) -> Message:
        """The response; raises FrameRpcError."""
        connection = self._connection
        assert connection is not None
        try:
            kind, body = connection.receive(self._id, self._deadline)
        except TimeoutError as exc:
            self._connection = None
            connection.close()
            raise FrameRpcError(
                grpc.StatusCode.DEADLINE_EXCEEDED,
                f"no answer from {self._address} within {self._timeout}s",
            ) from exc
        except OSError as exc:
            # The request went out: the node may have applied it, so it is not sent
            # again here (the caller's retry policy decides, as for a gRPC call).
            self._connection = None
            connection.close()
            raise unavailable(self._address, f"connection lost: {exc}") from exc
        self._frames.release(connection)
        self._connection = None
        return decode_answer(self._method, kind, body)

    def abandon(self) -> None:
        """Give up on the answer (the caller was interrupted)."""
        if self._connection is not None:
            self._connection.close()
            self._connection = None


# -- asyncio -------------------------------------------------------------------------


class _AsyncProtocol(asyncio.BufferedProtocol):
    def __init__(self, owner: AsyncConnection) -> None:
        self._owner = owner

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def get_buffer(self, sizehint: int) -> memoryview:
        return self._owner.read_buffer

    def buffer_updated(self, nbytes: int) -> None:
        self._owner.received(self._owner.read_buffer[:nbytes])

    def pause_writing(self) -> None:
        self._owner.writable.clear()

    def resume_writing(self) -> None:
        self._owner.writable.set()

    def connection_lost(self, exc: Exception | None) -> None:
        self._owner.writable.set()  # wake writers: they fail on the closed connection
        self._owner.lost(exc)


class AsyncConnection:
    """One multiplexed connection to a node's frame port (requests matched by id)."""

    def __init__(self, address: str, max_body: int) -> None:
        self.address = address
        self.alive = True
        self._reader = FrameReader(max_body)
        self._transport: asyncio.Transport | None = None
        self._pending: dict[int, asyncio.Future[tuple[int, bytes | None]]] = {}
        self._next_id = 0
        self.read_buffer = self._reader.read_buffer
        #: Clear while the transport's write buffer is over its high-water mark (a node
        #: that stops reading): callers wait instead of buffering without bound.
        self.writable = asyncio.Event()
        self.writable.set()

    async def open(self, seconds: float) -> None:
        """Connect within ``seconds`` (raises OSError or TimeoutError)."""
        loop = asyncio.get_running_loop()
        host, port = _split(self.address)
        transport, _ = await asyncio.wait_for(
            loop.create_connection(lambda: _AsyncProtocol(self), host, port), seconds
        )
        self._transport = transport
        transport.write(PREAMBLE)

    async def call(self, method: str, request: Message, seconds: float) -> Message:
        """Send one request and await its answer for ``seconds`` (raises FrameRpcError)."""
        if not self.writable.is_set():
            try:
                await asyncio.wait_for(self.writable.wait(), seconds)
            except TimeoutError as exc:
                raise FrameRpcError(
                    grpc.StatusCode.DEADLINE_EXCEEDED,
                    f"{self.address} took no request within {seconds}s (it is not reading)",
                ) from exc
        if self._transport is None or not self.alive:
            raise unavailable(self.address, "connection closed")
        self._next_id = self._next_id + 1 if self._next_id < MAX_ID else 1
        frame_id = self._next_id
        future: asyncio.Future[tuple[int, bytes | None]] = (
            asyncio.get_running_loop().create_future()
        )
        self._pending[frame_id] = future
        self._transport.write(frame(frame_id, BY_NAME[method].kind, request.SerializeToString()))
        try:
            kind, body = await asyncio.wait_for(future, seconds)
        except TimeoutError as exc:
            raise FrameRpcError(
                grpc.StatusCode.DEADLINE_EXCEEDED,
                f"no answer from {self.address} within {seconds}s",
            ) from exc
        finally:
            self._pending.pop(frame_id, None)
        return decode_answer(method, kind, body)

    def received(self, data: bytes | memoryview) -> None:
        """Resolve the requests whose answers arrived."""
        for frame_id, kind, body in self._reader.feed(data):
            future = self._pending.pop(frame_id, None)
            if future is not None and not future.done():
                future.set_result((kind, body))

    def lost(self, exc: Exception | None) -> None:
        """Fail every request in flight."""
        self._fail(unavailable(self.address, f"connection lost: {exc or 'closed by the node'}"))

    def close(self) -> None:
        """Close the connection; requests in flight fail."""
        if self._transport is not None:
            self._transport.close()
        self._fail(unavailable(self.address, "connection closed by the client"))

    def _fail(self, error: FrameRpcError) -> None:
        self.alive = False
        if self._transport is not None:
            self._transport.abort()
        pending, self._pending = self._pending, {}
        for future in pending.values():
            if not future.done():
                future.set_exception(error)


#: Asks a node (over gRPC) where its frame transport is: the Transports answer, or None
#: when the node has no such method; other failures raise the call's RpcError.
AskTransports = Callable[[str, float], Awaitable[node_pb2.TransportsResponse | None]]


class AsyncFrames:
    """asyncio frame connections: one multiplexed connection per node, opened once."""

    def __init__(self, max_body: int, ask: AskTransports) -> None:
        self._max_body = max_body
        self._ask = ask
        self._directory = Directory()
        self._connections: dict[str, AsyncConnection] = {}
        self._connecting: dict[str, asyncio.Lock] = {}
        self._closed = False

    async def connection(self, address: str, seconds: float) -> AsyncConnection | None:
        """The frame connection to the node at ``address``; None: use gRPC."""
        connection = self._connections.get(address)
        if connection is not None and connection.alive:
            return connection
        lock = self._connecting.setdefault(address, asyncio.Lock())
        async with lock:
            connection = self._connections.get(address)
            if connection is not None and connection.alive:
                return connection
            tried: str | None = None
            for _ in range(2):
                known, frames = self._directory.lookup(address)
                if not known:
                    frames = self._directory.learn(address, await self._ask(address, seconds))
                if frames is None or frames == tried:
                    break
                connection = AsyncConnection(frames, self._max_body)
                try:
                    await connection.open(seconds)
                except (OSError, TimeoutError):
                    # The node may have restarted on another frame port: ask it again.
                    self._directory.forget(address)
                    tried = frames
                    continue
                if self._closed:
                    connection.close()
                    raise RuntimeError("these frame connections are closed")
                self._connections[address] = connection
                return connection
            self._directory.set(address, None)
            return None

    def close(self) -> None:
        """Close every connection; requests in flight fail."""
        self._closed = True
        connections, self._connections = self._connections, {}
        for connection in connections.values():
            connection.close()


async def ask_transports(stub: Any, seconds: float) -> node_pb2.TransportsResponse | None:
    """``Node.Transports`` through a grpc.aio Node stub (None: the node lacks it)."""
    try:
        response: node_pb2.TransportsResponse = await stub.Transports(
            node_pb2.TransportsRequest(), timeout=seconds
        )
    except grpc.RpcError as exc:
        if exc.code() != grpc.StatusCode.UNIMPLEMENTED:
            raise
        return None
    return response
