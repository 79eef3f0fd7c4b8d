"""What the sans-IO core asks its faces to do, and what they send back.

An operation is a generator of effects. For a ``Call`` the face sends back the
response, or throws the call's ``grpc.RpcError`` into the generator; for a
``Parallel`` it makes every call at once and sends back one outcome per call, in
order: the response, or the ``grpc.RpcError`` as a value (one failed sub-call must
not hide the others' results). A ``Sleep`` resumes with None.
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass
from typing import Any, Literal, TypeAlias, TypeVar

from google.protobuf.message import Message

T = TypeVar("T")

Service: TypeAlias = Literal["Node", "TopologyService"]


@dataclass(frozen=True, slots=True)
class Call:
    """Effect: make one unary RPC and send back its response (or throw its RpcError)."""

    address: str
    service: Service
    method: str
    request: Message
    timeout: float


@dataclass(frozen=True, slots=True)
class Parallel:
    """Effect: make ``calls`` concurrently; send back each one's response or RpcError."""

    calls: tuple[Call, ...]


@dataclass(frozen=True, slots=True)
class Sleep:
    """Effect: wait ``seconds`` (a retry's backoff), then resume with None."""

    seconds: float


Effect: TypeAlias = Call | Parallel | Sleep
#: An operation in progress; its return value is the operation's result.
Op: TypeAlias = Generator[Effect, Any, T]
