"""The frame transport's framing and error shapes (memcluster.common.frames)."""

from __future__ import annotations

import socket
import threading

import grpc
import pytest
from hypothesis import given
from hypothesis import strategies as st

from memcluster.client._frames import FrameRpcError, SyncExchange, SyncFrames, decode_answer
from memcluster.common.errors import InvalidRequest, NotOwner, from_rpc_error
from memcluster.common.frames import (
    BY_KIND,
    BY_NAME,
    ERROR,
    OK,
    PREAMBLE,
    FrameReader,
    frame,
)
from memcluster.wire import node_pb2

frames_st = st.lists(
    st.tuples(st.integers(0, (1 << 32) - 1), st.integers(0, 255), st.binary(max_size=300)),
    max_size=20,
)


@given(frames_st, st.lists(st.integers(1, 64), min_size=1, max_size=50))
def test_reader_rebuilds_frames_from_any_chunking(
    frames: list[tuple[int, int, bytes]], cuts: list[int]
) -> None:
    stream = b"".join(frame(i, k, b) for i, k, b in frames)
    reader = FrameReader(max_body=1000)
    got: list[tuple[int, int, bytes]] = []
    offset, turn = 0, 0
    while offset < len(stream):
        size = cuts[turn % len(cuts)]
        got.extend(reader.feed(stream[offset : offset + size]))
        offset, turn = offset + size, turn + 1
    assert got == frames
    assert reader.pending() == 0


def test_a_body_over_the_limit_is_reported_then_skipped_without_buffering_it() -> None:
    reader = FrameReader(max_body=10)
    stream = frame(7, 1, b"x" * 5000) + frame(8, 2, b"ok")
    got = [reader.feed(stream[i : i + 100]) for i in range(0, len(stream), 100)]
    assert [f for chunk in got for f in chunk] == [(7, 1, None), (8, 2, b"ok")]
    assert got[0] == [(7, 1, None)]  # known from the header alone
    assert reader.pending() == 0


def test_every_method_has_one_kind_and_its_own_messages() -> None:
    assert len(BY_KIND) == len(BY_NAME)
    assert 0 not in BY_KIND  # kinds start at 1, so that a zeroed header is no request
    for method in BY_NAME.values():
        assert method.request.DESCRIPTOR.name == f"{method.name}Request"
        assert method.response.DESCRIPTOR.name == f"{method.name}Response"


def test_an_error_answer_maps_to_the_same_class_as_a_unary_call() -> None:
    body = node_pb2.FrameError(
        code=grpc.StatusCode.FAILED_PRECONDITION.value[0],
        message="node n2 does not own key b'k'",
        kind="not-owner",
        epoch=9,
    ).SerializeToString()
    with pytest.raises(FrameRpcError) as raised:
        decode_answer("Get", ERROR, body)
    error = from_rpc_error(raised.value)
    assert isinstance(error, NotOwner) and error.epoch == 9 and "n2" in error.message


def test_an_ok_answer_decodes_as_the_methods_response() -> None:
    body = node_pb2.PutResponse(version=42, epoch=3).SerializeToString()
    response = decode_answer("Put", OK, body)
    assert isinstance(response, node_pb2.PutResponse) and response.version == 42


def test_an_undecodable_answer_is_an_internal_error() -> None:
    with pytest.raises(FrameRpcError) as raised:
        decode_answer("Get", OK, b"\xff\xff\xff")
    assert raised.value.code() == grpc.StatusCode.INTERNAL
    error = from_rpc_error(raised.value)
    assert not isinstance(error, InvalidRequest) and "undecodable Get answer" in error.message


class FakeNode:
    """A frame port on one connection that answers Puts (version 7) until ``answers`` have
    been answered, then reads one more request and hangs up on it (None: answers all)."""

    def __init__(self, answers: int | None = None, hold: threading.Event | None = None) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.address = f"127.0.0.1:{self.listener.getsockname()[1]}"
        self.answers = answers
        self.hold = hold  # answers from the second request on wait for it
        self.requests = 0
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        conn, _ = self.listener.accept()
        with conn:
            reader = FrameReader(max_body=1 << 20)
            assert conn.recv(len(PREAMBLE), socket.MSG_WAITALL) == PREAMBLE
            while data := conn.recv(65536):
                for frame_id, _kind, _body in reader.feed(data):
                    self.requests += 1
                    if self.answers is not None and self.requests > self.answers:
                        return  # applied, say, then gone before the answer
                    if self.hold is not None and self.requests > 1:
                        self.hold.wait(30)
                    body = node_pb2.PutResponse(version=7).SerializeToString()
                    conn.sendall(frame(frame_id, OK, body))

    def close(self) -> None:
        self.listener.close()
        self.thread.join(10)


def test_a_request_the_node_may_have_applied_is_not_sent_again() -> None:
    server = FakeNode(answers=1)
    frames = SyncFrames(max_body=1 << 20)
    request = node_pb2.PutRequest(item=node_pb2.PutItem(key=b"k", value=b"v"))
    try:
        first = SyncExchange(frames, server.address, "Put", request, 5.0).result()
        assert isinstance(first, node_pb2.PutResponse) and first.version == 7
        second = SyncExchange(frames, server.address, "Put", request, 5.0)  # pooled socket
        with pytest.raises(FrameRpcError) as raised:
            second.result()
        assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "connection lost" in raised.value.details()
    finally:
        frames.close()
        server.close()
    assert server.requests == 2  # not resent on a fresh connection behind the caller's back


def test_an_answer_that_arrived_while_another_call_timed_out_is_still_read() -> None:
    silent = socket.create_server(("127.0.0.1", 0))  # accepts (backlog) and never answers
    answering = FakeNode()
    frames = SyncFrames(max_body=1 << 20)
    request = node_pb2.PutRequest(item=node_pb2.PutItem(key=b"k", value=b"v"))
    try:
        slow = SyncExchange(frames, f"127.0.0.1:{silent.getsockname()[1]}", "Put", request, 0.3)
        fast = SyncExchange(frames, answering.address, "Put", request, 0.3)
        with pytest.raises(FrameRpcError) as raised:
            slow.result()  # collected first, as a batch does: its deadline passes
        assert raised.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        answer = fast.result()  # past its deadline too, but its answer is waiting
        assert isinstance(answer, node_pb2.PutResponse) and answer.version == 7
    finally:
        frames.close()
        silent.close()
        answering.close()


def test_a_pooled_socket_waits_for_a_later_calls_whole_timeout() -> None:
    # The kernel keeps a socket's receive deadline (SO_RCVTIMEO), set from the call
    # that opened it: a later call with a longer timeout must not give up at the
    # shorter one.
    hold = threading.Event()
    server = FakeNode(hold=hold)
    frames = SyncFrames(max_body=1 << 20)
    request = node_pb2.PutRequest(item=node_pb2.PutItem(key=b"k", value=b"v"))
    release = threading.Timer(0.6, hold.set)  # the node answers the second call late
    try:
        assert SyncExchange(frames, server.address, "Put", request, 0.2).result().version == 7
        slow = SyncExchange(frames, server.address, "Put", request, 10.0)  # pooled socket
        release.start()
        answer = slow.result()
        assert isinstance(answer, node_pb2.PutResponse) and answer.version == 7
        assert hold.is_set()  # answered after the first call's 0.2 s had long passed
    finally:
        release.cancel()
        hold.set()
        frames.close()
        server.close()
