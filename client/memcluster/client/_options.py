"""The client's settings, validated once, and the gRPC channel arguments they imply."""

from __future__ import annotations

from dataclasses import dataclass

from memcluster.common.errors import InvalidRequest

from . import _wire as wire
from .types import Consistency

MiB = 1 << 20
DEFAULT_MAX_MESSAGE_BYTES = 64 * MiB
DEFAULT_BATCH_BYTES = 4 * MiB


@dataclass(frozen=True, slots=True)
class ClientOptions:
    """A client's settings; times in seconds, sizes in bytes."""

    timeout: float = 5.0
    #: Default level of get/get_entry/get_many: the primary, failing over to replicas.
    read_consistency: Consistency = Consistency.ONE
    #: Default level of put/put_many/delete/delete_many.
    write_consistency: Consistency = Consistency.QUORUM
    max_retries: int = 3
    backoff: float = 0.05
    max_backoff: float = 1.0
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
    batch_items: int = 1000
    batch_bytes: int = DEFAULT_BATCH_BYTES
    #: At most this many RPCs of one batch operation are in flight at once.
    max_parallel: int = 32
    #: A node that failed over is avoided for this long when a replica can serve instead.
    suspect_seconds: float = 1.0

    def __post_init__(self) -> None:
        positive = ("timeout", "max_message_bytes", "batch_items", "batch_bytes", "max_parallel")
        problems = [
            f"{name} must be > 0, got {getattr(self, name)}"
            for name in positive
            if not getattr(self, name) > 0
        ]
        if self.max_retries < 0:
            problems.append(f"max_retries must be >= 0, got {self.max_retries}")
        if not 0 <= self.backoff <= self.max_backoff:
            problems.append(
                f"need 0 <= backoff <= max_backoff, got {self.backoff} and {self.max_backoff}"
            )
        if not self.suspect_seconds >= 0:
            problems.append(f"suspect_seconds must be >= 0, got {self.suspect_seconds}")
        if problems:
            raise ValueError("; ".join(problems))

    def channel_options(self) -> list[tuple[str, int]]:
        """gRPC channel arguments for a long-lived cache connection."""
        return [
            ("grpc.max_send_message_length", self.max_message_bytes),
            ("grpc.max_receive_message_length", self.max_message_bytes),
            # Ping only while calls are in flight, no more often than servers accept
            # by default, to spot a dead peer behind a silent network path.
            ("grpc.keepalive_time_ms", 60_000),
            ("grpc.keepalive_timeout_ms", 20_000),
            ("grpc.keepalive_permit_without_calls", 0),
            # gRPC's default reconnect backoff grows to 120 s; a restarted node
            # should be reachable again within seconds.
            ("grpc.initial_reconnect_backoff_ms", 100),
            ("grpc.min_reconnect_backoff_ms", 100),
            ("grpc.max_reconnect_backoff_ms", 5_000),
        ]


def build_options(
    *,
    timeout: float,
    read_consistency: str | Consistency,
    write_consistency: str | Consistency,
    max_retries: int,
    backoff: float,
    max_backoff: float,
    max_message_bytes: int,
) -> ClientOptions:
    """ClientOptions from a face's constructor arguments (ValueError when invalid)."""
    try:
        read = wire.parse_consistency(read_consistency)
        write = wire.parse_consistency(write_consistency)
    except InvalidRequest as exc:
        raise ValueError(exc.message) from exc
    return ClientOptions(
        timeout=timeout,
        read_consistency=read,
        write_consistency=write,
        max_retries=max_retries,
        backoff=backoff,
        max_backoff=max_backoff,
        max_message_bytes=max_message_bytes,
        # Leave room in each message for framing, whatever limit the caller set.
        batch_bytes=min(DEFAULT_BATCH_BYTES, max(1, max_message_bytes // 2)),
    )
