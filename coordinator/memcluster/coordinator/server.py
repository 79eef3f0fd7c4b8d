"""Wiring of the coordinator process: gRPC server, health, reflection, signals.

Like a node, it prints one JSON line ``{"event": "ready", ...}`` with its real address
once it serves, and stops on SIGTERM/SIGINT (a leader steps down on the way out).
"""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import socket

import grpc

from memcluster.common.config import CoordinatorConfig
from memcluster.common.rpc import add_health_and_reflection, advertised_address, set_serving
from memcluster.coordinator.leader import CoordinatorRuntime
from memcluster.coordinator.service import CoordinatorService, TopologyService
from memcluster.wire import coordinator_pb2, coordinator_pb2_grpc, topology_pb2, topology_pb2_grpc

log = logging.getLogger(__name__)

SERVICE_NAMES = (
    coordinator_pb2.DESCRIPTOR.services_by_name["Coordinator"].full_name,
    topology_pb2.DESCRIPTOR.services_by_name["TopologyService"].full_name,
)


async def run(config: CoordinatorConfig) -> int:
    """Serve until SIGTERM/SIGINT; returns the exit code."""
    server = grpc.aio.server()
    port = server.add_insecure_port(config.server.listen)
    address = advertised_address(config.server.listen, port, config.server.advertise)
    coordinator_id = config.server.id or f"coordinator-{socket.gethostname()}-{port}"
    runtime = CoordinatorRuntime(config, coordinator_id, address)
    coordinator_pb2_grpc.add_CoordinatorServicer_to_server(CoordinatorService(runtime), server)
    topology_pb2_grpc.add_TopologyServiceServicer_to_server(TopologyService(runtime), server)
    health_servicer = add_health_and_reflection(server, SERVICE_NAMES)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await server.start()
    runtime.start()
    await set_serving(health_servicer, SERVICE_NAMES)
    print(json.dumps({"event": "ready", "id": coordinator_id, "address": address}), flush=True)
    await stop.wait()
    await health_servicer.enter_graceful_shutdown()
    await server.stop(config.server.grace_period)
    await runtime.close()
    print(json.dumps({"event": "stopped", "id": coordinator_id}), flush=True)
    return 0
