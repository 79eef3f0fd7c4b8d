"""Wiring of the node process: gRPC server, health, reflection, metrics, signals.

``memcluster node --config FILE`` ends up in :func:`run`. The server binds (port 0
is fine), then prints one JSON line ``{"event": "ready", ...}`` with the real
addresses, and writes the same object to ``--ready-file`` when given, so that
whoever started it can connect without guessing ports. SIGTERM or SIGINT stops
accepting requests, lets in-flight ones finish within ``server.grace_period``,
moves the RAM tiers into the cold tier, and exits 0.
"""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import socket
from pathlib import Path

import grpc

from memcluster.common.config import NodeConfig
from memcluster.common.rpc import add_health_and_reflection, advertised_address, set_serving
from memcluster.node.frames import FramesServer
from memcluster.node.loops import event_loop_name, run_on
from memcluster.node.metrics import serve_metrics
from memcluster.node.runtime import NodeRuntime
from memcluster.node.service import (
    FrameHandler,
    NodeService,
    PeerService,
    TopologyService,
    frame_handlers,
)
from memcluster.wire import (
    node_pb2,
    node_pb2_grpc,
    peer_pb2,
    peer_pb2_grpc,
    topology_pb2,
    topology_pb2_grpc,
)

log = logging.getLogger(__name__)

SERVICE_NAMES = (
    node_pb2.DESCRIPTOR.services_by_name["Node"].full_name,
    peer_pb2.DESCRIPTOR.services_by_name["Peer"].full_name,
    topology_pb2.DESCRIPTOR.services_by_name["TopologyService"].full_name,
)
MAX_MESSAGE_BYTES = 64 * 1024 * 1024


def split_host_port(address: str) -> tuple[str, int]:
    """("127.0.0.1", 7400) from "127.0.0.1:7400"; IPv6 as "[::1]:7400"."""
    host, _, port = address.rpartition(":")
    return host.strip("[]"), int(port)


def _write_atomically(path: str, text: str) -> None:
    tmp = Path(path + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)


async def _start_frames(
    config: NodeConfig, node: NodeRuntime, handlers: dict[int, FrameHandler]
) -> FramesServer | None:
    """The frame transport's server, listening, or None when it is off."""
    bind = config.server.frames_bind()
    if bind is None:
        return None
    frames = FramesServer(
        handlers,
        lambda: node.epoch,
        max_body=max(MAX_MESSAGE_BYTES, config.limits.max_value_bytes + 1024 * 1024),
    )
    try:
        port = await frames.start(*bind)
    except OSError as exc:
        raise OSError(f"server.frames_listen: cannot bind {bind[0]}:{bind[1]}: {exc}") from exc
    node.frames_address = f"{node.address.rpartition(':')[0]}:{port}"
    node.frames = frames
    return frames


async def _stop_serving(server: grpc.aio.Server, frames: FramesServer | None, grace: float) -> None:
    """Refuse new requests; give those in flight on both transports one grace period."""
    # New frame requests are answered Unavailable, so clients go to a replica.
    stopping = [server.stop(grace)]
    if frames is not None:
        stopping.append(frames.close(grace))
    await asyncio.gather(*stopping)


def main(config: NodeConfig, ready_file: str | None = None) -> int:
    """Run a node on the event loop its config chooses, until SIGTERM or SIGINT."""
    return run_on(config.server.event_loop, run(config, ready_file))


async def run(config: NodeConfig, ready_file: str | None = None) -> int:
    """Serve until SIGTERM/SIGINT; returns the process exit code."""
    server = grpc.aio.server(
        options=[
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.so_reuseport", 0),
            # Clients ping every 60 s while calls are in flight: do not treat that as abuse.
            ("grpc.http2.min_ping_interval_without_data_ms", 30_000),
            ("grpc.http2.max_ping_strikes", 0),
        ]
    )
    port = server.add_insecure_port(config.server.listen)
    if port == 0:
        raise OSError(f"server.listen: cannot bind {config.server.listen}")
    address = advertised_address(config.server.listen, port, config.server.advertise)
    node_id = config.server.id or f"{socket.gethostname()}:{port}"
    node = NodeRuntime(config, node_id, address)

    node_service, peer_service = NodeService(node), PeerService(node)
    node_pb2_grpc.add_NodeServicer_to_server(node_service, server)
    peer_pb2_grpc.add_PeerServicer_to_server(peer_service, server)
    topology_pb2_grpc.add_TopologyServiceServicer_to_server(TopologyService(node), server)
    health_servicer = add_health_and_reflection(server, SERVICE_NAMES)

    metrics_server = None
    metrics_address = ""
    if config.server.metrics_listen:
        mhost, mport = split_host_port(config.server.metrics_listen)
        metrics_server, bound = serve_metrics(node, mhost, mport)
        metrics_address = f"{mhost}:{bound}"

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    agent = None
    if config.cluster.etcd:
        from memcluster.node.agent import ClusterAgent

        agent = ClusterAgent(node, config.cluster, on_leave=stop.set)

    frames = await _start_frames(config, node, frame_handlers(node_service, peer_service))
    await server.start()
    node.start()
    if agent is not None:
        agent.start()
    await set_serving(health_servicer, SERVICE_NAMES)
    ready = {
        "event": "ready",
        "node_id": node_id,
        "address": address,
        "frames": node.frames_address,
        "metrics": metrics_address,
        "cold_path": config.memory.tiers.cold.path if config.memory.tiers.cold.enabled else "",
        "cluster": config.cluster.name if config.cluster.etcd else "",
        "event_loop": event_loop_name(),
    }
    line = json.dumps(ready)
    if ready_file:
        _write_atomically(ready_file, line)
    print(line, flush=True)
    log.info("node %s serving on %s (event loop: %s)", node_id, address, ready["event_loop"])

    await stop.wait()
    log.info("shutting down: no new requests, %.0fs for in-flight ones", config.server.grace_period)
    await health_servicer.enter_graceful_shutdown()
    await _stop_serving(server, frames, config.server.grace_period)
    if agent is not None:
        await agent.close()
    await node.close()
    if metrics_server is not None:
        metrics_server.shutdown()
    print(json.dumps({"event": "stopped", "node_id": node_id}), flush=True)
    return 0
