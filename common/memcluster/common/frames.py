"""The frame transport: the Node service's data requests over one plain TCP connection.

A unary gRPC call costs about 0.5 ms of Python on a small machine, whatever it
carries; a message on a plain socket costs a tenth of that. So besides its gRPC
server a node listens on a second port (``server.frames_listen``) where the same
requests travel as length-prefixed frames, and clients find that port by asking the
node (``Node.Transports``) over gRPC. Everything else stays on gRPC: topology,
stats, health, reflection, peers, admin.

The wire, version 1 (all integers little-endian)::

    connection  := PREAMBLE frame*                 client to node, then frames both ways
    PREAMBLE    := b"MCF" VERSION                  4 bytes, sent once by the client
    frame       := length:u32 id:u32 kind:u8 body  body is `length` bytes

- A request's ``kind`` names the method (``METHODS``: the Node service's data calls
  and Peer.Replicate) and its body is that method's request message, serialized.
  ``id`` is the client's, echoed back.
- A response's ``kind`` is ``OK`` with the method's response message as the body, or
  ``ERROR`` with a ``FrameError``: the status code, message, memcluster error kind and
  epoch that a unary call would carry as its status and trailing metadata.
- Requests on one connection may be pipelined; answers may come in any order (match
  them by ``id``). A body over the receiver's limit, an unknown kind or an undecodable
  body is answered with an error for that ``id`` and the connection goes on; a bad
  preamble closes it.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from google.protobuf.message import Message

from memcluster.wire import node_pb2, peer_pb2

VERSION = 1
PREAMBLE = b"MCF" + bytes([VERSION])
HEADER = struct.Struct("<IIB")
HEADER_SIZE = HEADER.size
OK = 0
ERROR = 1
MAX_ID = (1 << 32) - 1
#: Bytes read from a socket at a time. Not more: CPython allocates a read's whole size
#: up front, and past glibc's mmap threshold (128 KiB) each read maps and unmaps fresh
#: pages (asyncio's 256 KiB default costs ~20 us a read; 64 KiB ~2 us).
READ_SIZE = 64 * 1024


@dataclass(frozen=True, slots=True)
class Method:
    """One method (of the Node or Peer service) as the frame transport carries it."""

    name: str
    kind: int
    request: type[Message]
    response: type[Message]
    service: str = "Node"  # the gRPC service whose method this is


METHODS: tuple[Method, ...] = (
    Method("Get", 1, node_pb2.GetRequest, node_pb2.GetResponse),
    Method("Put", 2, node_pb2.PutRequest, node_pb2.PutResponse),
    Method("Delete", 3, node_pb2.DeleteRequest, node_pb2.DeleteResponse),
    Method("GetMany", 4, node_pb2.GetManyRequest, node_pb2.GetManyResponse),
    Method("PutMany", 5, node_pb2.PutManyRequest, node_pb2.PutManyResponse),
    Method("DeleteMany", 6, node_pb2.DeleteManyRequest, node_pb2.DeleteManyResponse),
    Method("Touch", 7, node_pb2.TouchRequest, node_pb2.TouchResponse),
    # Peer.Replicate: a write's copies to its other replicas, node to node.
    Method("Replicate", 8, peer_pb2.ReplicateRequest, peer_pb2.ReplicateResponse, "Peer"),
)
BY_NAME = {m.name: m for m in METHODS}
BY_KIND = {m.kind: m for m in METHODS}

_pack = HEADER.pack
_unpack_from = HEADER.unpack_from


def frame(frame_id: int, kind: int, body: bytes) -> bytes:
    """One frame, header and body."""
    return _pack(len(body), frame_id, kind) + body


class FrameReader:
    """Splits a byte stream into frames, whatever the chunks it arrives in.

    ``read_buffer`` is a fixed scratch buffer for asyncio's BufferedProtocol: the event
    loop reads into it (no allocation per read) and ``feed`` takes the bytes read.
    """

    def __init__(self, max_body: int) -> None:
        self.max_body = max_body
        self._buffer = bytearray()
        self._skip = 0  # bytes still to drop of a frame over the limit
        self.read_buffer = memoryview(bytearray(READ_SIZE))

    def feed(self, data: bytes | memoryview) -> list[tuple[int, int, bytes | None]]:
        """Take ``data``; return the frames it completed as (id, kind, body).

        A frame whose body is over ``max_body`` comes back with body None once its
        header is read, and its body is skipped as it arrives: the receiver can refuse
        that one request and go on with the others on the connection.
        """
        buffer = self._buffer
        buffer += data
        frames: list[tuple[int, int, bytes | None]] = []
        offset, end = 0, len(buffer)
        while True:
            if self._skip:
                skipped = min(self._skip, end - offset)
                offset += skipped
                self._skip -= skipped
                if self._skip:
                    break
            if end - offset < HEADER_SIZE:
                break
            length, frame_id, kind = _unpack_from(buffer, offset)
            start = offset + HEADER_SIZE
            if length > self.max_body:
                frames.append((frame_id, kind, None))
                offset, self._skip = start, length
                continue
            if end - start < length:
                break
            frames.append((frame_id, kind, bytes(buffer[start : start + length])))
            offset = start + length
        if offset:
            del buffer[:offset]
        return frames

    def pending(self) -> int:
        """Bytes received that do not make a whole frame yet."""
        return len(self._buffer)
