"""One long-lived Node.Pipeline stream per node: the blocking client's single-key calls.

A unary call in grpcio's blocking API costs about twice what a message on an open
stream costs, and for single-key requests that per-call cost is most of the time.
So the blocking client sends Get/Put/Delete/Touch as messages on one stream per node
and reads the answers in order. One request is in flight per stream (callers from
several threads take turns); a watchdog thread cancels the stream when an answer is
late past the caller's timeout, and the next call opens a new one. Answers that are
errors come back as ``PipelineError`` values, raised here as an RpcError that the
core maps like any other.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Iterator
from typing import Any

import grpc
from google.protobuf.message import Message

from memcluster.common.errors import EPOCH_METADATA, ERROR_KIND_METADATA
from memcluster.wire import node_pb2

#: Node methods that may travel on the pipeline, and their oneof field names.
PIPELINED = {"Get": "get", "Put": "put", "Delete": "delete", "Touch": "touch"}
WATCHDOG_PERIOD = 0.1
_CODES = {code.value[0]: code for code in grpc.StatusCode}


class PipelineRpcError(grpc.RpcError):
    """A failed pipelined request, shaped like a failed unary call."""

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


class PipelineStream:
    """The stream to one node (see the module docstring)."""

    def __init__(self, stub: Any, address: str) -> None:
        self._stub = stub
        self._address = address
        self._lock = threading.Lock()
        self._requests: queue.SimpleQueue[node_pb2.PipelineRequest | None] | None = None
        self._responses: Any = None
        self._next_id = 0
        self._deadline: float | None = None
        self._timed_out = False

    def call(self, method: str, request: Message, timeout: float) -> Message:
        """Send one request and wait for its answer (raises an RpcError on failure)."""
        field = PIPELINED[method]
        with self._lock:
            if self._responses is None:
                self._open()
            assert self._requests is not None
            self._next_id += 1
            self._timed_out = False
            self._deadline = time.monotonic() + timeout
            # The oneof field is chosen by name; the request matches it by construction.
            message = node_pb2.PipelineRequest(id=self._next_id, **{field: request})  # type: ignore[arg-type]
            self._requests.put(message)
            try:
                response = next(self._responses)
            except grpc.RpcError as exc:
                self._reset()
                if self._timed_out:
                    raise PipelineRpcError(
                        grpc.StatusCode.DEADLINE_EXCEEDED,
                        f"no answer from {self._address} within {timeout}s",
                    ) from exc
                raise
            except StopIteration as exc:
                self._reset()
                raise PipelineRpcError(
                    grpc.StatusCode.UNAVAILABLE, f"{self._address} closed the pipeline"
                ) from exc
            finally:
                self._deadline = None
        if response.id != self._next_id:
            self.close()
            raise PipelineRpcError(grpc.StatusCode.INTERNAL, "pipeline answer out of order")
        if response.WhichOneof("result") == "error":
            err = response.error
            code = _CODES.get(err.code, grpc.StatusCode.UNKNOWN)
            raise PipelineRpcError(code, err.message, err.kind, err.epoch)
        result: Message = getattr(response, field)
        return result

    def expire_if_late(self, now: float) -> None:
        """Cancel the stream if the answer in flight is past its deadline (watchdog)."""
        deadline, responses = self._deadline, self._responses
        if deadline is not None and responses is not None and now > deadline:
            self._timed_out = True
            responses.cancel()

    def close(self) -> None:
        """End the stream."""
        with self._lock:
            self._reset()

    def _open(self) -> None:
        requests: queue.SimpleQueue[node_pb2.PipelineRequest | None] = queue.SimpleQueue()

        def feed() -> Iterator[node_pb2.PipelineRequest]:
            while (item := requests.get()) is not None:
                yield item

        self._requests = requests
        self._responses = self._stub.Pipeline(feed())

    def _reset(self) -> None:
        if self._requests is not None:
            self._requests.put(None)
        if self._responses is not None:
            self._responses.cancel()
        self._requests = self._responses = None


class Watchdog:
    """One daemon thread per client that enforces pipelined calls' timeouts."""

    def __init__(self, streams: dict[str, PipelineStream]) -> None:
        self._streams = streams
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="memcluster-watchdog", daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Stop the thread."""
        self._stop.set()
        self._thread.join(1.0)

    def _run(self) -> None:
        while not self._stop.wait(WATCHDOG_PERIOD):
            now = time.monotonic()
            for stream in list(self._streams.values()):
                stream.expire_if_late(now)
