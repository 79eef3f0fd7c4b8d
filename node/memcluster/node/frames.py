"""The node's frame transport server (the protocol is in memcluster.common.frames).

Each frame is decoded and handed to the same NodeService method a unary gRPC call
reaches, so both transports share validation, routing checks and error mapping. A
handler runs eagerly: most requests (reads at ONE, writes with nothing to
replicate) finish without suspending and are answered in the same pass of the event
loop, without a task; one that awaits (replication, a quorum read, a fetch from a
previous owner) becomes a task and answers when it is done, so a slow request never
holds up the others on its connection. A connection with too many requests in flight,
or with a client that does not read its answers, stops being read until it drains.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import types
from collections.abc import Callable, Coroutine, Generator
from typing import Any, cast

from google.protobuf.message import DecodeError, Message

from memcluster.common.errors import (
    CapacityExceeded,
    InvalidRequest,
    MemclusterError,
    Unavailable,
)
from memcluster.common.frames import (
    BY_KIND,
    ERROR,
    OK,
    PREAMBLE,
    FrameReader,
    frame,
)
from memcluster.common.rpc import as_error
from memcluster.wire import node_pb2

log = logging.getLogger(__name__)

#: Requests in flight on one connection before it stops being read.
MAX_IN_FLIGHT = 256
Handler = Callable[[Message], Coroutine[Any, Any, Message]]


class FramesServer:
    """Listens for frame connections and serves them with ``handlers`` (by method kind)."""

    def __init__(
        self, handlers: dict[int, Handler], epoch: Callable[[], int], max_body: int
    ) -> None:
        self._handlers = handlers
        self._epoch = epoch
        self._max_body = max_body
        self._server: asyncio.Server | None = None
        self.connections: set[_Connection] = set()
        #: Set on close: requests are refused as Unavailable so that clients go elsewhere.
        self.draining = False
        #: Requests received since start (for the node's counters).
        self.requests = 0

    async def start(self, host: str, port: int) -> int:
        """Bind and listen; returns the bound port."""
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(self._connection, host or None, port)
        bound: int = self._server.sockets[0].getsockname()[1]
        return bound

    async def close(self, grace: float = 0.0) -> None:
        """Stop listening; answer new requests Unavailable; close once in-flight ones end.

        Requests still running after ``grace`` seconds are cancelled.
        """
        if self._server is not None:
            self._server.close()
        self.draining = True
        tasks = [t for c in self.connections for t in c.tasks]
        if tasks and grace > 0:
            await asyncio.wait(tasks, timeout=grace)
        for connection in list(self.connections):
            connection.close()
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None

    def _connection(self) -> _Connection:
        return _Connection(self)


class _Connection(asyncio.BufferedProtocol):
    def __init__(self, server: FramesServer) -> None:
        self._server = server
        self._reader = FrameReader(server._max_body)
        self._transport: asyncio.Transport | None = None
        self._greeted = False
        self._preamble = bytearray()
        self.tasks: set[asyncio.Task[None]] = set()
        self._suspended: dict[asyncio.Task[None], Coroutine[Any, Any, Message]] = {}
        self._paused_writing = False
        self._paused_reading = False

    # -- asyncio.BufferedProtocol (reads land in one reused buffer) ----------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self._transport = cast(asyncio.Transport, transport)
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._server.connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self._server.connections.discard(self)
        self._transport = None
        for task in list(self.tasks):
            task.cancel()

    def pause_writing(self) -> None:
        self._paused_writing = True
        self._update_reading()

    def resume_writing(self) -> None:
        self._paused_writing = False
        self._update_reading()

    def get_buffer(self, sizehint: int) -> memoryview:
        return self._reader.read_buffer

    def buffer_updated(self, nbytes: int) -> None:
        self._received(self._reader.read_buffer[:nbytes])

    def _received(self, data: bytes | memoryview) -> None:
        if not self._greeted:
            data = self._greet(data)
            if not data:
                return
        for frame_id, kind, body in self._reader.feed(data):
            self._dispatch(frame_id, kind, body)
        self._update_reading()

    # -- serving -------------------------------------------------------------------

    def abort(self) -> None:
        """Drop the connection at once."""
        if self._transport is not None:
            self._transport.abort()

    def close(self) -> None:
        """Cancel what still runs, send what is written, then close."""
        for task in list(self.tasks):
            task.cancel()
        if self._transport is not None:
            self._transport.close()

    def _greet(self, data: bytes | memoryview) -> bytes | memoryview:
        # The preamble is tiny and first: it arrives whole in practice, but a client
        # may send it in pieces, so buffer until there are enough bytes to judge.
        self._preamble += data
        if len(self._preamble) < len(PREAMBLE):
            return b""
        received, self._preamble = bytes(self._preamble), bytearray()
        if received[: len(PREAMBLE)] != PREAMBLE:
            log.warning(
                "closing a connection that is not a memcluster frames client "
                "(or speaks another version): %r",
                received[:8],
            )
            self.abort()
            return b""
        self._greeted = True
        return received[len(PREAMBLE) :]

    def _dispatch(self, frame_id: int, kind: int, body: bytes | None) -> None:
        self._server.requests += 1
        method = BY_KIND.get(kind)
        if method is None:
            self._fail(frame_id, InvalidRequest(f"unknown frame kind {kind}"))
            return
        if body is None:
            self._fail(
                frame_id,
                CapacityExceeded(
                    f"{method.name} request over the node's {self._server._max_body}-byte "
                    "frame limit; send fewer or smaller items at a time"
                ),
            )
            return
        if self._server.draining:
            self._fail(frame_id, Unavailable("the node is shutting down"))
            return
        try:
            request = method.request.FromString(body)
        except DecodeError as exc:
            self._fail(frame_id, InvalidRequest(f"undecodable {method.name} request: {exc}"))
            return
        coro = self._server._handlers[kind](request)
        try:
            waiting = coro.send(None)
        except StopIteration as done:
            self._answer(frame_id, done.value)
            return
        except (KeyboardInterrupt, SystemExit):
            raise
        except BaseException as exc:  # CancelledError included: fail this request only
            error = exc if isinstance(exc, Exception) else Unavailable(f"{method.name} cancelled")
            self._fail(frame_id, as_error(error, method.name, self._server._epoch()))
            return
        task = asyncio.get_running_loop().create_task(
            self._finish(frame_id, method.name, coro, waiting)
        )
        self.tasks.add(task)
        self._suspended[task] = coro
        task.add_done_callback(self._done)

    async def _finish(
        self, frame_id: int, name: str, coro: Coroutine[Any, Any, Message], waiting: Any
    ) -> None:
        try:
            result = await _resume(coro, waiting)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self._fail(frame_id, as_error(exc, name, self._server._epoch()))
            return
        self._answer(frame_id, result)

    def _done(self, task: asyncio.Task[None]) -> None:
        self.tasks.discard(task)
        # A task cancelled before its first step never resumed the handler: close it.
        self._suspended.pop(task).close()
        if not task.cancelled() and (exc := task.exception()) is not None:
            log.error("frame request failed outside its handler", exc_info=exc)
        self._update_reading()

    def _answer(self, frame_id: int, response: Message) -> None:
        if self._transport is not None:
            self._transport.write(frame(frame_id, OK, response.SerializeToString()))

    def _fail(self, frame_id: int, error: MemclusterError) -> None:
        body = node_pb2.FrameError(
            code=error.code.value[0],
            message=error.message,
            kind=error.kind,
            epoch=error.epoch or self._server._epoch(),
        ).SerializeToString()
        if self._transport is not None:
            self._transport.write(frame(frame_id, ERROR, body))

    def _update_reading(self) -> None:
        transport = self._transport
        if transport is None:
            return
        stop = self._paused_writing or len(self.tasks) >= MAX_IN_FLIGHT
        if stop and not self._paused_reading:
            transport.pause_reading()
            self._paused_reading = True
        elif not stop and self._paused_reading:
            transport.resume_reading()
            self._paused_reading = False


@types.coroutine
def _resume(coro: Coroutine[Any, Any, Message], waiting: Any) -> Generator[Any, Any, Message]:
    """Go on driving a coroutine that was started by hand and suspended on ``waiting``.

    The task running this generator sees what the coroutine waits on and resumes it as
    asyncio would have (Python 3.12's eager tasks do the same natively).
    """
    while True:
        try:
            sent = yield waiting
        except BaseException as exc:  # cancellation or an exception thrown into the task
            try:
                waiting = coro.throw(exc)
            except StopIteration as done:
                result: Message = done.value
                return result
            continue
        try:
            waiting = coro.send(sent)
        except StopIteration as done:
            result = done.value
            return result
