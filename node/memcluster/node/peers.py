"""Channels to other nodes, made on first use and kept for the node's life.

Replication, the one peer call on every write, travels on the peers' frame
transport (memcluster.common.frames) where they offer it, as clients' data calls do;
fetches and bulk transfers stay on gRPC.
"""

from __future__ import annotations

import grpc

from memcluster.client._frames import AsyncFrames, ask_transports
from memcluster.wire import node_pb2, node_pb2_grpc, peer_pb2, peer_pb2_grpc

MAX_MESSAGE_BYTES = 64 * 1024 * 1024
CHANNEL_OPTIONS = [
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    # A dead peer should fail fast and be retried soon, not in minutes.
    ("grpc.initial_reconnect_backoff_ms", 200),
    ("grpc.max_reconnect_backoff_ms", 2000),
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_timeout_ms", 5_000),
]


class PeerPool:
    """address -> Peer stub over one grpc.aio channel each."""

    def __init__(self, frames: bool = True) -> None:
        self._channels: dict[str, grpc.aio.Channel] = {}
        self._stubs: dict[str, peer_pb2_grpc.PeerAsyncStub] = {}
        self._frames = AsyncFrames(MAX_MESSAGE_BYTES, self._ask) if frames else None

    def stub(self, address: str) -> peer_pb2_grpc.PeerAsyncStub:
        """The Peer stub for ``address``."""
        stub = self._stubs.get(address)
        if stub is None:
            stub = self._stubs[address] = peer_pb2_grpc.PeerStub(self._channel(address))
        return stub

    async def replicate(
        self, address: str, request: peer_pb2.ReplicateRequest, seconds: float
    ) -> peer_pb2.ReplicateResponse:
        """Peer.Replicate at ``address``: on its frame transport if it has one, else gRPC."""
        if self._frames is not None:
            connection = await self._frames.connection(address, seconds)
            if connection is not None:
                response = await connection.call("Replicate", request, seconds)
                assert isinstance(response, peer_pb2.ReplicateResponse)
                return response
        reply: peer_pb2.ReplicateResponse = await self.stub(address).Replicate(
            request, timeout=seconds
        )
        return reply

    async def _ask(self, address: str, seconds: float) -> node_pb2.TransportsResponse | None:
        return await ask_transports(node_pb2_grpc.NodeStub(self._channel(address)), seconds)

    def _channel(self, address: str) -> grpc.aio.Channel:
        channel = self._channels.get(address)
        if channel is None:
            channel = self._channels[address] = grpc.aio.insecure_channel(
                address, options=CHANNEL_OPTIONS
            )
        return channel

    async def close(self) -> None:
        """Close every channel and frame connection."""
        if self._frames is not None:
            self._frames.close()
        channels = list(self._channels.values())
        self._channels.clear()
        self._stubs.clear()
        for channel in channels:
            await channel.close(None)
