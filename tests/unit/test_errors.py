"""The exception tree survives the trip through gRPC status codes."""

from __future__ import annotations

import grpc
import pytest

from memcluster.common import errors


@pytest.mark.parametrize(
    "cls",
    [
        errors.InvalidRequest,
        errors.NotFound,
        errors.NotOwner,
        errors.Unavailable,
        errors.Timeout,
        errors.CapacityExceeded,
        errors.InternalError,
    ],
)
def test_round_trip(cls: type[errors.MemclusterError]) -> None:
    err = cls("explained", epoch=7)
    back = errors.from_status(err.code, err.message, errors.trailing_metadata(err))
    assert type(back) is cls and back.message == "explained" and back.epoch == 7
    assert back.retriable == cls.retriable and back.refresh_routing == cls.refresh_routing


def test_plain_grpc_codes_map_by_code() -> None:
    assert isinstance(errors.from_status(grpc.StatusCode.UNAVAILABLE, ""), errors.Unavailable)
    assert isinstance(errors.from_status(grpc.StatusCode.DATA_LOSS, "x"), errors.InternalError)
    assert errors.NotOwner.refresh_routing and errors.Unavailable.retriable
    assert not errors.InvalidRequest.retriable


def test_advertised_address() -> None:
    import socket

    from memcluster.common.rpc import advertised_address

    assert advertised_address("127.0.0.1:0", 7400) == "127.0.0.1:7400"
    assert advertised_address("0.0.0.0:7400", 7400, "node-1.svc:7400") == "node-1.svc:7400"
    wildcard = advertised_address("0.0.0.0:7400", 7400)
    assert not wildcard.startswith("0.0.0.0") and wildcard.endswith(":7400")
    assert socket.gethostname() in wildcard or wildcard[0].isdigit()
    assert advertised_address("[::1]:0", 7401) == "[::1]:7401"
