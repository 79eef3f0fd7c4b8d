"""Value codecs: how the client turns Python objects into stored bytes and back.

The wire carries bytes only. A codec is any object with ``encode(obj) -> bytes`` and
``decode(bytes) -> obj``; the ones here cover the usual cases. None of them pickles:
a value written by one service must be safe to read in another.

- ``BYTES`` (the default): bytes in, bytes out, nothing else accepted.
- ``STR``: str as UTF-8.
- ``JSON``: strict JSON (no NaN/Infinity) as UTF-8; tuples come back as lists.
- ``MSGPACK``: needs the ``msgpack`` package (``pip install 'memcluster[msgpack]'``).
- ``NUMPY``: ``numpy.ndarray`` of a plain dtype (needs ``numpy``); the payload is a
  small header (magic, dtype string, shape) followed by the array's C-order bytes.

Codecs raise TypeError for a value they cannot take and ValueError for bytes they
cannot read; the client reports the former as InvalidRequest.
"""

from __future__ import annotations

import json
import math
import struct
from typing import Any, Protocol, TypeVar

__all__ = ["BYTES", "JSON", "MSGPACK", "NUMPY", "STR", "Codec"]

T = TypeVar("T")


class Codec(Protocol[T]):
    """Turns values into the bytes the cluster stores, and back."""

    def encode(self, obj: T, /) -> bytes:
        """The bytes to store for ``obj``."""
        ...

    def decode(self, data: bytes, /) -> T:
        """The value ``data`` (made by ``encode``) stands for."""
        ...


class _BytesCodec:
    def encode(self, obj: bytes, /) -> bytes:
        if not isinstance(obj, bytes):
            raise TypeError(
                f"values must be bytes with the default codec, got {type(obj).__name__}; "
                "pass codec=STR, JSON, MSGPACK or NUMPY to store other types"
            )
        return obj

    def decode(self, data: bytes, /) -> bytes:
        return data

    def __repr__(self) -> str:
        return "BYTES"


class _StrCodec:
    def encode(self, obj: str, /) -> bytes:
        if not isinstance(obj, str):
            raise TypeError(f"the STR codec stores str values, got {type(obj).__name__}")
        return obj.encode("utf-8")

    def decode(self, data: bytes, /) -> str:
        return data.decode("utf-8")

    def __repr__(self) -> str:
        return "STR"


class _JsonCodec:
    def encode(self, obj: Any, /) -> bytes:
        try:
            text = json.dumps(obj, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
        except ValueError as exc:
            raise TypeError(f"the JSON codec cannot store this value: {exc}") from exc
        return text.encode("utf-8")

    def decode(self, data: bytes, /) -> Any:
        return json.loads(data)

    def __repr__(self) -> str:
        return "JSON"


class _MsgpackCodec:
    def encode(self, obj: Any, /) -> bytes:
        packed: bytes = _msgpack().packb(obj, use_bin_type=True)
        return packed

    def decode(self, data: bytes, /) -> Any:
        return _msgpack().unpackb(data, raw=False)

    def __repr__(self) -> str:
        return "MSGPACK"


def _msgpack() -> Any:
    try:
        import msgpack
    except ImportError as exc:
        raise ImportError(
            "the MSGPACK codec needs the msgpack package: pip install 'memcluster[msgpack]'"
        ) from exc
    return msgpack


# Header: magic, format version, len(dtype string), ndim; then the dtype string
# (numpy's dtype.str, e.g. '<f4', which records byte order) and ndim uint64 dims.
_NP_MAGIC = b"MCND"
_NP_VERSION = 1
_NP_HEAD = struct.Struct("<4sBBB")
_NP_DIM = struct.Struct("<Q")


class _NumpyCodec:
    def encode(self, obj: Any, /) -> bytes:
        np = _numpy()
        if not isinstance(obj, np.ndarray):
            raise TypeError(f"the NUMPY codec stores numpy.ndarray, got {type(obj).__name__}")
        dtype = obj.dtype
        if dtype.hasobject or dtype.fields is not None:
            raise TypeError(
                f"the NUMPY codec stores arrays of plain dtypes only, not {dtype!r}: object "
                "arrays would need pickle and structured dtypes lose their field names"
            )
        dtype_str: bytes = dtype.str.encode("ascii")
        header = _NP_HEAD.pack(_NP_MAGIC, _NP_VERSION, len(dtype_str), obj.ndim)
        dims = b"".join(_NP_DIM.pack(n) for n in obj.shape)
        # tobytes() yields C order whatever the array's strides.
        data: bytes = obj.tobytes(order="C")
        return header + dtype_str + dims + data

    def decode(self, data: bytes, /) -> Any:
        np = _numpy()
        if len(data) < _NP_HEAD.size:
            raise ValueError("not a NUMPY codec payload: too short")
        magic, version, dtype_len, ndim = _NP_HEAD.unpack_from(data)
        if magic != _NP_MAGIC or version != _NP_VERSION:
            raise ValueError("not a NUMPY codec payload (bad magic or version)")
        offset = _NP_HEAD.size
        try:
            dtype = np.dtype(data[offset : offset + dtype_len].decode("ascii"))
        except (TypeError, UnicodeDecodeError) as exc:
            raise ValueError(f"NUMPY codec payload has a bad dtype: {exc}") from exc
        if dtype.hasobject:
            raise ValueError("NUMPY codec payload claims an object dtype; refusing it")
        offset += dtype_len
        shape = tuple(_NP_DIM.unpack_from(data, offset + i * _NP_DIM.size)[0] for i in range(ndim))
        offset += ndim * _NP_DIM.size
        count = math.prod(shape)
        if len(data) - offset != dtype.itemsize * count:
            raise ValueError(f"NUMPY codec payload has the wrong length for {dtype} {shape}")
        if count == 0 or dtype.itemsize == 0:
            return np.empty(shape, dtype=dtype)
        # copy(): frombuffer over immutable bytes would hand back a read-only array.
        flat = np.frombuffer(data, dtype=dtype, count=count, offset=offset)
        return flat.reshape(shape).copy()

    def __repr__(self) -> str:
        return "NUMPY"


def _numpy() -> Any:
    try:
        import numpy
    except ImportError as exc:
        raise ImportError(
            "the NUMPY codec needs the numpy package: pip install 'memcluster[numpy]'"
        ) from exc
    return numpy


#: bytes in, bytes out (the default).
BYTES: Codec[bytes] = _BytesCodec()
#: str values, stored as UTF-8.
STR: Codec[str] = _StrCodec()
#: JSON-able values (dict, list, str, int, finite float, bool, None), stored as UTF-8 JSON.
JSON: Codec[Any] = _JsonCodec()
#: msgpack-able values; needs the msgpack package.
MSGPACK: Codec[Any] = _MsgpackCodec()
#: numpy.ndarray of plain dtypes, without pickle; needs numpy.
NUMPY: Codec[Any] = _NumpyCodec()
