"""What every memcluster gRPC server shares: error mapping, health and reflection.

Servicer methods raise MemclusterError subclasses; ``maps_errors`` turns them into
statuses with trailing metadata (see errors.py), and anything else into INTERNAL with
the exception logged as the bug it is. A servicer that has an ``epoch`` (through
``self.epoch``) stamps it on errors that lack one.
"""

from __future__ import annotations

import functools
import logging
import socket
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import grpc
from grpc_health.v1 import _async as health_aio
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from memcluster.common.errors import InternalError, MemclusterError, trailing_metadata

log = logging.getLogger(__name__)

Req = TypeVar("Req")
Resp = TypeVar("Resp")
Handler = Callable[[Any, Req, Any], Awaitable[Resp]]


def as_error(exc: Exception, what: str, epoch: int = 0) -> MemclusterError:
    """The MemclusterError to answer with (unexpected exceptions are logged as bugs)."""
    if isinstance(exc, MemclusterError):
        exc.epoch = exc.epoch or epoch
        return exc
    log.exception("%s failed", what)
    return InternalError(f"{what} failed: {exc!r}", epoch=epoch)


def maps_errors(handler: Handler[Req, Resp]) -> Handler[Req, Resp]:
    """Decorate a servicer method: domain errors become gRPC statuses."""

    @functools.wraps(handler)
    async def wrapper(self: Any, request: Req, context: Any) -> Resp:
        try:
            return await handler(self, request, context)
        except Exception as exc:
            error = as_error(exc, handler.__name__, getattr(self, "epoch", 0))
            await context.abort(error.code, error.message, trailing_metadata(error))
        raise AssertionError("unreachable: context.abort raises")

    return wrapper


WILDCARDS = {"0.0.0.0", "::", ""}


def advertised_address(listen: str, port: int, advertise: str = "") -> str:
    """The address peers and clients should dial for a server bound to ``listen``.

    An explicit ``advertise`` wins. A wildcard bind (0.0.0.0, ::) cannot be dialled, so
    the host's own address is used: what its hostname resolves to (a container's or a
    pod's IP), else the hostname itself.
    """
    if advertise:
        return advertise
    host = listen.rpartition(":")[0].strip("[]")
    if host in WILDCARDS:
        name = socket.gethostname()
        try:
            host = socket.gethostbyname(name)
        except OSError:
            host = name
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def add_health_and_reflection(
    server: grpc.aio.Server, service_names: Sequence[str]
) -> health_aio.HealthServicer:
    """Serve grpc.health.v1 and server reflection for ``service_names``."""
    servicer = health_aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    reflection.enable_server_reflection(
        (*service_names, health.SERVICE_NAME, reflection.SERVICE_NAME), server
    )
    return servicer


async def set_serving(servicer: health_aio.HealthServicer, service_names: Sequence[str]) -> None:
    """Report the server and each service as SERVING."""
    for name in ("", *service_names):
        await servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
