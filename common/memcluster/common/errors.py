"""The memcluster exception tree, and its one mapping to and from gRPC status codes.

::

    MemclusterError
    ├── InvalidRequest        INVALID_ARGUMENT     bad key, value, TTL, priority, request
    ├── NotFound              NOT_FOUND            an admin call named an unknown thing
    ├── NotOwner              FAILED_PRECONDITION  the node does not own the key (refresh routing)
    ├── Unavailable           UNAVAILABLE          node down, shutting down, not enough replicas
    ├── Timeout               DEADLINE_EXCEEDED    the deadline passed before an answer
    ├── CapacityExceeded      RESOURCE_EXHAUSTED   a limit of the node or of the request was hit
    └── InternalError         INTERNAL / other     a bug or an unexpected failure; see the node log

Every class carries two flags a caller can act on: ``retriable`` (the same request
may succeed later, unchanged) and ``refresh_routing`` (the caller's topology is stale:
fetch it again before retrying). On the wire the class travels as the gRPC status code
plus the trailing metadata ``memcluster-error`` (the class's ``kind``), so that two
classes sharing a status code stay distinct.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import grpc

ERROR_KIND_METADATA = "memcluster-error"
EPOCH_METADATA = "memcluster-epoch"


class MemclusterError(Exception):
    """Base of every error memcluster raises on purpose."""

    kind = "error"
    code = grpc.StatusCode.UNKNOWN
    retriable = False
    refresh_routing = False

    def __init__(self, message: str, *, epoch: int = 0) -> None:
        super().__init__(message)
        self.message = message
        #: The topology epoch of the node that answered, when one did (0: unknown).
        self.epoch = epoch


class InvalidRequest(MemclusterError):
    """The request itself is wrong (key, value, TTL, priority...): fix it; retrying won't help."""

    kind = "invalid-request"
    code = grpc.StatusCode.INVALID_ARGUMENT


class NotFound(MemclusterError):
    """An administrative request named something that does not exist (a node id, say)."""

    kind = "not-found"
    code = grpc.StatusCode.NOT_FOUND


class NotOwner(MemclusterError):
    """The node no longer owns the key: refresh the topology and send it elsewhere."""

    kind = "not-owner"
    code = grpc.StatusCode.FAILED_PRECONDITION
    retriable = True
    refresh_routing = True


class Unavailable(MemclusterError):
    """The node (or enough replicas) could not serve the request now; it may later."""

    kind = "unavailable"
    code = grpc.StatusCode.UNAVAILABLE
    retriable = True


class Timeout(MemclusterError):
    """No answer came before the deadline; the request may or may not have been applied."""

    kind = "timeout"
    code = grpc.StatusCode.DEADLINE_EXCEEDED
    retriable = True


class CapacityExceeded(MemclusterError):
    """A size or capacity limit was hit (a request too large for the node to take)."""

    kind = "capacity-exceeded"
    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class InternalError(MemclusterError):
    """Something failed that should not have: the node's log has the details."""

    kind = "internal"
    code = grpc.StatusCode.INTERNAL


_CLASSES: Sequence[type[MemclusterError]] = (
    InvalidRequest,
    NotFound,
    NotOwner,
    Unavailable,
    Timeout,
    CapacityExceeded,
    InternalError,
)
_BY_KIND = {cls.kind: cls for cls in _CLASSES}
# Status codes from gRPC itself (no memcluster-error metadata) map by code alone.
_BY_CODE: dict[grpc.StatusCode, type[MemclusterError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidRequest,
    grpc.StatusCode.OUT_OF_RANGE: InvalidRequest,
    grpc.StatusCode.NOT_FOUND: NotFound,
    grpc.StatusCode.UNAVAILABLE: Unavailable,
    grpc.StatusCode.DEADLINE_EXCEEDED: Timeout,
    grpc.StatusCode.RESOURCE_EXHAUSTED: CapacityExceeded,
    grpc.StatusCode.CANCELLED: Unavailable,
}


def trailing_metadata(error: MemclusterError) -> tuple[tuple[str, str], ...]:
    """The trailing metadata a server sends with ``error``."""
    return ((ERROR_KIND_METADATA, error.kind), (EPOCH_METADATA, str(error.epoch)))


def from_status(
    code: grpc.StatusCode, details: str, metadata: Sequence[tuple[str, str | bytes]] = ()
) -> MemclusterError:
    """Build the exception a client raises for a failed call."""
    meta = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in metadata}
    cls = _BY_KIND.get(meta.get(ERROR_KIND_METADATA, "")) or _BY_CODE.get(code, InternalError)
    try:
        epoch = int(meta.get(EPOCH_METADATA, "0"))
    except ValueError:
        epoch = 0
    message = details or f"{code.name.lower()} (no details from the server)"
    return cls(message, epoch=epoch)


def from_rpc_error(exc: grpc.RpcError) -> MemclusterError:
    """Map a grpc.RpcError (sync or aio) to our tree; callers re-raise ``from exc``."""
    # Sync and aio errors both offer code()/details()/trailing_metadata(), but share
    # no typed base that says so.
    call: Any = exc
    if not callable(getattr(call, "code", None)):
        return InternalError(f"gRPC failure: {exc!r}")
    metadata = call.trailing_metadata() or ()
    return from_status(call.code(), call.details() or "", tuple((k, v) for k, v in metadata))
