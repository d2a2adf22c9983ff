"""numpy <-> lstmserve.v1.Tensor: the one codec shared by the client SDK and the server."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from lstmserve.v1 import tensor_pb2 as tpb

# Little-endian on the wire whatever the host, so a big-endian peer still agrees.
_NUMPY_BY_WIRE = {
    tpb.DATA_TYPE_FLOAT32: np.dtype("<f4"),
    tpb.DATA_TYPE_FLOAT64: np.dtype("<f8"),
    tpb.DATA_TYPE_INT32: np.dtype("<i4"),
    tpb.DATA_TYPE_INT64: np.dtype("<i8"),
}
_WIRE_BY_KIND = {(np.dtype(d).kind, np.dtype(d).itemsize): w for w, d in _NUMPY_BY_WIRE.items()}
# Native-order dtypes straight to their wire type: the per-request encode's one lookup.
_WIRE_BY_DTYPE = {d.newbyteorder("="): w for w, d in _NUMPY_BY_WIRE.items()}
# Every array a recurrent model takes has rank 3 to 5; 32 is what numpy 1.x (a client may run it) allows at
# most, so both ends agree on the limit, and a shape's description in an error stays short.
MAX_RANK = 32
# numpy sizes arrays in signed 64-bit integers: a larger shape can only be a mistake, and must be refused
# before numpy's own arithmetic turns it into an exception that reads like a server bug.
MAX_TENSOR_BYTES = 2**63 - 1


class TensorDecodeError(ValueError):
    """A Tensor message that does not describe a valid array."""


def dtype_name(wire_dtype: int) -> str:
    """'float32' for DATA_TYPE_FLOAT32, and so on; 'unspecified' for 0."""
    numpy_dtype = _NUMPY_BY_WIRE.get(wire_dtype)
    return numpy_dtype.name if numpy_dtype is not None else "unspecified"


def wire_dtype(numpy_dtype: np.dtype | str | type) -> int:
    """The DataType enum for a numpy dtype; TypeError when the wire has no such type."""
    dt = np.dtype(numpy_dtype)
    try:
        return _WIRE_BY_KIND[(dt.kind, dt.itemsize)]
    except KeyError:
        supported = ", ".join(d.name for d in _NUMPY_BY_WIRE.values())
        raise TypeError(f"dtype {dt.name} cannot be sent; use one of {supported}") from None


def to_tensor(array: np.ndarray | list | float) -> tpb.Tensor:
    """Encode an array (anything np.asarray accepts) as a Tensor."""
    tensor = tpb.Tensor()
    fill_tensor(tensor, array)
    return tensor


def fill_tensor(tensor: tpb.Tensor, array: np.ndarray | list | float) -> None:
    """Encode an array into an empty Tensor in place (e.g. a map entry of a message being built)."""
    arr = np.asarray(array)
    wire = _WIRE_BY_DTYPE.get(arr.dtype)
    if wire is None:  # the rare cases, off the per-request path: widened, or refused by wire_dtype
        if arr.dtype == np.float16 or arr.dtype == np.bool_:
            arr = arr.astype(np.float32)
        wire = wire_dtype(arr.dtype)
    tensor.dtype = wire
    tensor.shape.extend(arr.shape)
    on_wire = _NUMPY_BY_WIRE[wire]
    # tobytes() writes C order whatever the layout; only a big-endian host has bytes to swap.
    tensor.content = (arr if arr.dtype == on_wire else arr.astype(on_wire)).tobytes()


def from_tensor(tensor: tpb.Tensor, name: str = "tensor") -> np.ndarray:
    """Decode a Tensor, checking dtype, shape and byte length; TensorDecodeError names what is wrong."""
    numpy_dtype = _NUMPY_BY_WIRE.get(tensor.dtype)
    if numpy_dtype is None:
        supported = ", ".join(d.name for d in _NUMPY_BY_WIRE.values())
        raise TensorDecodeError(
            f"{name}: dtype is {_enum_label(tensor.dtype)}; expected one of {supported}"
        )
    shape, content = tuple(tensor.shape), tensor.content
    # The usual tensor in one test: positive dimensions whose product matches the bytes (at most one
    # message) need no other check; anything else is looked at dimension by dimension.
    if not (0 < len(shape) <= MAX_RANK and min(shape) > 0
            and math.prod(shape) * numpy_dtype.itemsize == len(content)):
        needed = element_count(shape, numpy_dtype.itemsize, name) * numpy_dtype.itemsize
        if needed != len(content):
            raise TensorDecodeError(f"{name}: shape {list(shape)} of {numpy_dtype.name} needs {needed} "
                                    f"bytes; content has {len(content)}")
    array = np.frombuffer(content, dtype=numpy_dtype).reshape(shape)
    return array if numpy_dtype.isnative else array.astype(numpy_dtype.newbyteorder("="))


def element_count(shape: Sequence[int], itemsize: int, name: str = "tensor") -> int:
    """prod(shape) once the shape is one an array can have: rank at most MAX_RANK, every dimension 0 or
    more, and the dimensions' product (Python integers: no overflow) within MAX_TENSOR_BYTES; the other
    codec (the V2 protocol's) asks the same questions here. TensorDecodeError says what is wrong."""
    if len(shape) > MAX_RANK:
        raise TensorDecodeError(f"{name} has rank {len(shape)}; a tensor has at most {MAX_RANK} dimensions")
    if any(dim < 0 for dim in shape):
        raise TensorDecodeError(f"{name} has shape {list(shape)}; every dimension must be 0 or more")
    # Zero dimensions are left out: [0, 2**40, 2**40] holds no element, yet numpy cannot shape it.
    if math.prod(dim for dim in shape if dim) * itemsize > MAX_TENSOR_BYTES:
        raise TensorDecodeError(f"{name} has shape {list(shape)}, larger than any tensor can be "
                                f"(over {MAX_TENSOR_BYTES} bytes)")
    return math.prod(shape)


def _enum_label(value: int) -> str:
    try:
        return tpb.DataType.Name(value)
    except ValueError:
        return f"unknown DataType {value}"
