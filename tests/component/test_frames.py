"""The frame transport against a real node: the clients' fast path and its failures."""

from __future__ import annotations

import asyncio
import signal
import socket
import struct

import grpc
import pytest

from memcluster.client import AsyncClient, Client
from memcluster.common.errors import CapacityExceeded, InvalidRequest, Timeout
from memcluster.common.frames import BY_NAME, ERROR, HEADER, OK, PREAMBLE, frame
from memcluster.wire import node_pb2, node_pb2_grpc
from tests.harness import NodeFactory


def frames_requests(client: Client[bytes]) -> float:
    return float(client.stats()["counters"]["frames_requests"])


def raw_connection(address: str) -> socket.socket:
    host, _, port = address.rpartition(":")
    sock = socket.create_connection((host, int(port)), timeout=10)
    sock.sendall(PREAMBLE)
    return sock


def read_frame(sock: socket.socket) -> tuple[int, int, bytes]:
    header = sock.recv(HEADER.size, socket.MSG_WAITALL)
    length, frame_id, kind = HEADER.unpack(header)
    return frame_id, kind, sock.recv(length, socket.MSG_WAITALL) if length else b""


def test_the_node_announces_its_frame_port_and_clients_use_it(nodes: NodeFactory) -> None:
    node = nodes.start()
    assert node.ready["frames"].startswith("127.0.0.1:")
    with grpc.insecure_channel(node.address) as channel:
        info = node_pb2_grpc.NodeStub(channel).Transports(node_pb2.TransportsRequest())
    assert info.frames_address == node.ready["frames"] and info.frames_version == 1
    with Client(node.address) as c:
        before = frames_requests(c)
        c.put(b"k", b"v", ttl=60)
        assert c.get(b"k") == b"v"
        assert c.touch(b"k", ttl=None)
        c.put_many({f"m{i}".encode(): b"x" * i for i in range(300)})
        assert len(c.get_many([f"m{i}".encode() for i in range(300)])) == 300
        assert c.delete_many([b"m1", b"m2"]) == 2 and c.delete(b"k")
        # Stats travel over gRPC; every data call above went as a frame.
        assert frames_requests(c) - before >= 7


def test_errors_come_back_as_the_same_classes_and_the_connection_goes_on(
    nodes: NodeFactory,
) -> None:
    node = nodes.start("n1", **{"limits.max_value_bytes": "1KB"})
    with Client(node.address, max_retries=0) as c:
        c.put(b"k", b"v")
        with pytest.raises(InvalidRequest, match="max_key_bytes"):
            c.put(b"k" * 2000, b"v")
        with pytest.raises((InvalidRequest, CapacityExceeded), match="max_value_bytes"):
            c.put(b"big", b"x" * 2000)
        with pytest.raises((InvalidRequest, CapacityExceeded), match="max_value_bytes"):
            c.put_many([(b"a", b"1"), (b"b", b"x" * 2000)])
        assert c.get(b"a") is None  # the bad batch applied nothing
        assert c.get(b"k") == b"v"


def test_a_stopped_node_times_out_and_the_client_recovers(nodes: NodeFactory) -> None:
    node = nodes.start()
    with Client(node.address, timeout=0.5, max_retries=0) as c:
        c.put(b"k", b"v")
        node.signal(signal.SIGSTOP)
        try:
            with pytest.raises(Timeout):
                c.get(b"k")
            with pytest.raises(Timeout):
                c.get_many([b"k", b"j"])
        finally:
            node.signal(signal.SIGCONT)
        assert c.get(b"k") == b"v"  # on a fresh connection: the late answers are not read


def test_a_restarted_node_on_another_frame_port_is_found_again(nodes: NodeFactory) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    listen = {"server.listen": f"127.0.0.1:{port}"}
    node = nodes.start("n1", **listen)
    first_frames = node.ready["frames"]
    with Client(node.address, timeout=5.0) as c:
        c.put(b"k", b"v")
        node.signal(signal.SIGTERM)
        assert node.wait() == 0
        again = nodes.start("n1", **listen)
        assert again.address == node.address and again.ready["frames"] != first_frames
        assert c.get(b"k") == b"v"  # the pooled socket is dead; the client asks the node again
        assert c.stats()["counters"]["frames_requests"] >= 1


def test_with_frames_off_clients_use_grpc(nodes: NodeFactory) -> None:
    node = nodes.start("n1", **{"server.frames_listen": "off"})
    assert node.ready["frames"] == ""
    with Client(node.address) as c:
        c.put(b"k", b"v")
        assert c.get(b"k") == b"v"
        assert c.get_many([b"k"]) == {b"k": b"v"}
        assert frames_requests(c) == 0


def test_transport_grpc_keeps_frames_unused(nodes: NodeFactory) -> None:
    node = nodes.start()
    with Client(node.address, transport="grpc") as c:
        c.put(b"k", b"v")
        assert c.get(b"k") == b"v" and frames_requests(c) == 0
    with pytest.raises(InvalidRequest, match="transport"):
        Client(node.address, transport="udp")  # type: ignore[arg-type]


async def test_async_client_multiplexes_one_connection(nodes: NodeFactory) -> None:
    node = nodes.start()
    async with AsyncClient(node.address) as c:
        keys = [f"k{i}".encode() for i in range(200)]
        await asyncio.gather(*(c.put(k, k * 3) for k in keys))
        values = await asyncio.gather(*(c.get(k) for k in keys))
        assert values == [k * 3 for k in keys]
        assert await c.get_many(keys[:50]) == {k: k * 3 for k in keys[:50]}
        with pytest.raises(InvalidRequest, match="max_key_bytes"):
            await c.get(b"k" * 2000)
        stats = await c.stats()
        assert stats["counters"]["frames_requests"] >= 401
        assert stats["counters"]["frames_connections"] == 1


def test_protocol_violations_get_clear_answers(nodes: NodeFactory) -> None:
    node = nodes.start()
    frames = node.ready["frames"]
    with raw_connection(frames) as sock:
        sock.sendall(frame(5, 99, b""))  # no such method
        frame_id, kind, body = read_frame(sock)
        error = node_pb2.FrameError.FromString(body)
        assert (frame_id, kind) == (5, ERROR) and "unknown frame kind 99" in error.message
        sock.sendall(frame(6, BY_NAME["Get"].kind, b"\xff\xff"))  # not a GetRequest
        frame_id, kind, body = read_frame(sock)
        assert (frame_id, kind) == (6, ERROR)
        assert node_pb2.FrameError.FromString(body).kind == "invalid-request"
        request = node_pb2.GetRequest(key=b"absent").SerializeToString()
        sock.sendall(frame(7, BY_NAME["Get"].kind, request))  # the connection still serves
        frame_id, kind, body = read_frame(sock)
        assert (frame_id, kind) == (7, OK)
        assert not node_pb2.GetResponse.FromString(body).entry.found
        sock.sendall(struct.pack("<IIB", 1 << 31, 8, 1))  # a body over the limit
        frame_id, kind, body = read_frame(sock)
        assert (frame_id, kind) == (8, ERROR)
        assert node_pb2.FrameError.FromString(body).kind == "capacity-exceeded"
    host, _, port = frames.rpartition(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\n\r\n")  # not a frames client
        assert sock.recv(1) == b""
