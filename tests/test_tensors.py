"""The numpy <-> Tensor codec: round trips, and every way a Tensor can be malformed."""

import numpy as np
import pytest

from lstmserve.client.tensors import TensorDecodeError, from_tensor, to_tensor
from lstmserve.v1 import tensor_pb2 as tpb

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("dtype", ["float32", "float64", "int32", "int64"])
def test_round_trip_keeps_dtype_shape_and_values(dtype):
    array = (np.arange(24).reshape(2, 3, 4) * 1.5).astype(dtype)
    decoded = from_tensor(to_tensor(array))
    assert decoded.dtype == array.dtype and decoded.shape == array.shape
    np.testing.assert_array_equal(decoded, array)


def test_big_endian_arrays_travel_little_endian():
    array = np.arange(6, dtype=">f4").reshape(1, 6, 1)
    tensor = to_tensor(array)
    assert tensor.content == np.arange(6, dtype="<f4").tobytes()
    np.testing.assert_array_equal(from_tensor(tensor), array)


def test_non_contiguous_arrays_are_sent_row_major():
    array = np.arange(12, dtype=np.float32).reshape(3, 4).T
    np.testing.assert_array_equal(from_tensor(to_tensor(array)), array)


def test_unsendable_dtype_names_the_choices():
    with pytest.raises(TypeError, match="complex128 cannot be sent; use one of float32"):
        to_tensor(np.zeros(2, np.complex128))


def test_byte_length_must_match_shape():
    tensor = tpb.Tensor(dtype=tpb.DATA_TYPE_FLOAT32, shape=[5, 1, 1], content=b"\0" * 16)
    with pytest.raises(TensorDecodeError, match=r"shape \[5, 1, 1\] of float32 needs 20 bytes; "
                                                r"content has 16"):
        from_tensor(tensor, "input 'x'")


def test_unspecified_dtype_is_refused():
    tensor = tpb.Tensor(shape=[1], content=b"\0" * 4)
    with pytest.raises(TensorDecodeError, match="dtype is DATA_TYPE_UNSPECIFIED; expected one of"):
        from_tensor(tensor)


def test_unknown_dtype_number_is_refused():
    tensor = tpb.Tensor(dtype=99, shape=[1], content=b"\0" * 4)
    with pytest.raises(TensorDecodeError, match="unknown DataType 99"):
        from_tensor(tensor)


def test_negative_dimension_is_refused():
    tensor = tpb.Tensor(dtype=tpb.DATA_TYPE_FLOAT32, shape=[-1, 1], content=b"")
    with pytest.raises(TensorDecodeError, match=r"shape \[-1, 1\]; every dimension must be 0 or more"):
        from_tensor(tensor)


@pytest.mark.parametrize("shape, message", [
    ([0, 2**40, 2**40], "larger than any tensor can be"),
    ([2**31, 2**31, 2**31], "larger than any tensor can be"),
    ([1] * 33, "has rank 33; a tensor has at most 32 dimensions"),
    ([1] * 65, "has rank 65; a tensor has at most 32 dimensions"),
    ([-(2**31), -(2**31)], "every dimension must be 0 or more"),  # a positive product of negatives
])
def test_shapes_no_array_can_have_are_refused_before_decoding(shape, message):
    content = b"\0" * 4 if min(shape) > 0 else b""
    tensor = tpb.Tensor(dtype=tpb.DATA_TYPE_FLOAT32, shape=shape, content=content)
    with pytest.raises(TensorDecodeError, match=message):
        from_tensor(tensor, "input")


def test_rank_32_and_scalars_still_decode():
    assert from_tensor(to_tensor(np.ones([1] * 32, np.float32))).ndim == 32
    assert from_tensor(to_tensor(np.float64(2.5))) == 2.5
    assert from_tensor(to_tensor(np.zeros((0, 3), np.float32))).shape == (0, 3)
