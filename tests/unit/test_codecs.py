"""Value codecs: round trips, refusals, and no pickle anywhere."""

from __future__ import annotations

import math
import sys
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from memcluster.client.codecs import BYTES, JSON, MSGPACK, NUMPY, STR

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: st.lists(children) | st.dictionaries(st.text(), children),
    max_leaves=20,
)
msgpack_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False)
    | st.text()
    | st.binary(),
    lambda children: st.lists(children) | st.dictionaries(st.text() | st.binary(), children),
    max_leaves=20,
)


@given(st.binary())
def test_bytes_is_identity(value: bytes) -> None:
    assert BYTES.encode(value) is value
    assert BYTES.decode(value) == value


@pytest.mark.parametrize("value", ["text", bytearray(b"x"), memoryview(b"x"), 1, None])
def test_bytes_refuses_other_types_and_names_the_alternatives(value: Any) -> None:
    with pytest.raises(TypeError, match="codec=STR"):
        BYTES.encode(value)


@given(st.text())
def test_str_round_trips_as_utf8(value: str) -> None:
    data = STR.encode(value)
    assert data == value.encode("utf-8")
    assert STR.decode(data) == value


def test_str_refuses_bytes() -> None:
    with pytest.raises(TypeError, match="str values"):
        STR.encode(b"raw")  # type: ignore[arg-type]


@given(json_values)
def test_json_round_trips(value: Any) -> None:
    assert JSON.decode(JSON.encode(value)) == value


def test_json_is_compact_utf8_and_strict() -> None:
    assert JSON.encode({"k": ["é", 1]}) == '{"k":["é",1]}'.encode()
    with pytest.raises(TypeError, match="JSON"):
        JSON.encode(math.nan)
    with pytest.raises(TypeError):
        JSON.encode({1, 2})


@given(msgpack_values)
def test_msgpack_round_trips(value: Any) -> None:
    assert MSGPACK.decode(MSGPACK.encode(value)) == value


def test_msgpack_missing_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "msgpack", None)
    with pytest.raises(ImportError, match=r"memcluster\[msgpack\]"):
        MSGPACK.encode({"a": 1})


def test_numpy_missing_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "numpy", None)
    with pytest.raises(ImportError, match=r"memcluster\[numpy\]"):
        NUMPY.decode(b"")


def assert_same_array(got: Any, want: np.ndarray[Any, Any]) -> None:
    assert isinstance(got, np.ndarray)
    assert got.dtype == want.dtype
    assert got.shape == want.shape
    assert got.tobytes() == want.tobytes()
    assert got.flags.c_contiguous
    assert got.flags.writeable


@given(
    hnp.arrays(
        dtype=hnp.scalar_dtypes() | hnp.byte_string_dtypes() | hnp.unicode_string_dtypes(),
        shape=hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=5),
    )
)
def test_numpy_round_trips_plain_dtypes(array: np.ndarray[Any, Any]) -> None:
    assert_same_array(NUMPY.decode(NUMPY.encode(array)), array)


@pytest.mark.parametrize(
    "array",
    [
        np.array(3.5),
        np.arange(12, dtype=">i4").reshape(3, 4),
        np.arange(24, dtype=np.float32).reshape(2, 3, 4)[:, ::2, 1:],
        np.asfortranarray(np.arange(6, dtype=np.complex128).reshape(2, 3)),
        np.arange(10, dtype=np.uint16)[::-3],
        np.zeros((0, 7), dtype=np.float64),
        np.array(["a", "bcd"]),
        np.array([True, False]),
        np.array(["2024-01-01T00:00"], dtype="M8[ns]"),
    ],
    ids=["0-d", "big-endian", "strided", "fortran", "reversed", "empty", "unicode", "bool", "dt"],
)
def test_numpy_round_trips_shapes_and_layouts(array: np.ndarray[Any, Any]) -> None:
    assert_same_array(NUMPY.decode(NUMPY.encode(array)), array)


def test_numpy_payload_is_header_plus_raw_bytes() -> None:
    array = np.arange(4, dtype="<f8")
    data = NUMPY.encode(array)
    assert data.endswith(array.tobytes())
    assert len(data) - len(array.tobytes()) == 4 + 3 + len("<f8") + 8
    assert b"pickle" not in data


@pytest.mark.parametrize(
    "array",
    [
        np.array([{"a": 1}, None], dtype=object),
        np.zeros(2, dtype=[("x", "<i4"), ("y", "<f8")]),
        np.zeros(2, dtype=[("o", object)]),
    ],
    ids=["object", "structured", "structured-object"],
)
def test_numpy_refuses_object_and_structured_dtypes(array: np.ndarray[Any, Any]) -> None:
    with pytest.raises(TypeError, match="plain dtypes"):
        NUMPY.encode(array)


def test_numpy_refuses_non_arrays() -> None:
    with pytest.raises(TypeError, match=r"numpy\.ndarray"):
        NUMPY.encode([1, 2, 3])


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"XXXX\x01\x03\x01<f8" + b"\x00" * 16,
        NUMPY.encode(np.arange(3))[:-1],
        b"MCND\x01\x02\x00|O",
    ],
    ids=["short", "magic", "truncated", "object-dtype"],
)
def test_numpy_rejects_bad_payloads(data: bytes) -> None:
    with pytest.raises(ValueError, match="NUMPY codec payload"):
        NUMPY.decode(data)


@pytest.mark.parametrize("codec", [BYTES, STR, JSON, MSGPACK, NUMPY])
def test_codecs_have_readable_reprs(codec: Any) -> None:
    assert repr(codec) in {"BYTES", "STR", "JSON", "MSGPACK", "NUMPY"}
