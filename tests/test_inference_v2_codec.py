"""The Open Inference Protocol codec: decoding every way a V2 request carries tensors, and every way it
can be wrong; classification strings; raw outputs; metadata. No socket, no model."""

import struct
from dataclasses import dataclass

import numpy as np
import pytest

from lstmserve.format.preparation import Preparation
from lstmserve.inference.v2 import grpc_predict_v2_pb2 as v2
from lstmserve.server.errors import InvalidInput, ModeNotSupported
from lstmserve.server.serving.heads import OutputHead
from lstmserve.server.serving.model import Prediction
from lstmserve.server.specs import TensorSpec
from lstmserve.server.transport import inference_v2_codec as codec

pytestmark = pytest.mark.unit

Input = v2.ModelInferRequest.InferInputTensor
Output = v2.ModelInferRequest.InferRequestedOutputTensor


@dataclass(frozen=True)
class Described:
    """The part of a LoadedModel the codec reads."""

    name: str
    inputs: tuple
    heads: tuple
    version: str = "1"
    preparation: Preparation = Preparation()

    @property
    def raw_inputs(self) -> tuple:
        spec = self.inputs[0]
        return (TensorSpec(spec.name, spec.dtype, self.preparation.raw_shape(spec.shape)), *self.inputs[1:])


SOFTMAX = OutputHead(TensorSpec("probs", np.dtype("float32"), (None, 4)), "softmax",
                     ("a", "b", "c", "d"))
LINEAR = OutputHead(TensorSpec("level", np.dtype("float32"), (None, 1)), "linear")
MODEL = Described("m", (TensorSpec("x", np.dtype("float32"), (None, None, 2)),), (SOFTMAX, LINEAR))


def raw_request(*arrays_and_types, **fields) -> v2.ModelInferRequest:
    request = v2.ModelInferRequest(model_name="m", **fields)
    for index, (array, datatype) in enumerate(arrays_and_types):
        request.inputs.add(name=f"in{index}", datatype=datatype, shape=array.shape)
        request.raw_input_contents.append(array.tobytes())
    return request


def refused(request, match):
    with pytest.raises(InvalidInput, match=match):
        codec.inputs_from_request(request)


def read_bytes_tensor(raw: bytes) -> list[str]:
    """BYTES as the protocol lays them out, read independently of the codec's encoder."""
    elements, offset = [], 0
    while offset < len(raw):
        (length,) = struct.unpack_from("<I", raw, offset)
        elements.append(raw[offset + 4:offset + 4 + length].decode())
        offset += 4 + length
    return elements


# --- inputs -------------------------------------------------------------------------------------

@pytest.mark.parametrize("datatype,dtype", [("FP32", "<f4"), ("FP64", "<f8"), ("INT32", "<i4"),
                                            ("INT64", "<i8")])
def test_raw_contents_decode_to_the_datatype(datatype, dtype):
    array = (np.arange(12) * 3 - 7).reshape(2, 3, 2).astype(dtype)
    decoded = codec.inputs_from_request(raw_request((array, datatype)))["in0"]
    assert decoded.dtype == np.dtype(dtype) and decoded.shape == (2, 3, 2)
    np.testing.assert_array_equal(decoded, array)


@pytest.mark.parametrize("datatype,field,dtype", [("FP32", "fp32_contents", np.float32),
                                                  ("FP64", "fp64_contents", np.float64),
                                                  ("INT32", "int_contents", np.int32),
                                                  ("INT64", "int64_contents", np.int64)])
def test_typed_contents_decode_to_the_datatype(datatype, field, dtype):
    request = v2.ModelInferRequest()
    tensor = request.inputs.add(name="x", datatype=datatype, shape=[1, 3, 1])
    getattr(tensor.contents, field).extend([1, -2, 3])
    decoded = codec.inputs_from_request(request)["x"]
    assert decoded.dtype == dtype and decoded.shape == (1, 3, 1)
    np.testing.assert_array_equal(decoded.ravel(), [1, -2, 3])


def test_raw_entries_belong_to_inputs_in_order():
    first = np.arange(4, dtype="<f4").reshape(1, 2, 2)
    second = np.array([[7, 8]], dtype="<i8")
    decoded = codec.inputs_from_request(raw_request((first, "FP32"), (second, "INT64")))
    np.testing.assert_array_equal(decoded["in0"], first)
    np.testing.assert_array_equal(decoded["in1"], second)


def test_raw_bytes_are_read_little_endian():
    request = raw_request((np.array([[1.5, -2.0]], dtype=">f4").astype("<f4"), "FP32"))
    assert request.raw_input_contents[0] == struct.pack("<2f", 1.5, -2.0)
    np.testing.assert_array_equal(codec.inputs_from_request(request)["in0"], [[1.5, -2.0]])


@pytest.mark.parametrize("datatype", ["BYTES", "FP16", "UINT8", "fp32", ""])
def test_unserved_datatypes_name_what_is_expected(datatype):
    request = raw_request((np.zeros((1, 1), "<f4"), "FP32"))
    request.inputs[0].datatype = datatype
    refused(request, f"input 'in0' has datatype '{datatype}'; expected one of FP32, FP64, INT32, INT64")


def test_raw_byte_length_must_match_the_shape():
    request = raw_request((np.zeros((5, 1, 1), "<f4"), "FP32"))
    request.raw_input_contents[0] = b"\0" * 16
    refused(request, r"input 'in0': shape \[5, 1, 1\] of FP32 needs 20 bytes; raw_input_contents\[0\] has 16")


def test_typed_count_must_match_the_shape():
    request = v2.ModelInferRequest()
    request.inputs.add(name="x", datatype="FP64", shape=[2, 2]).contents.fp64_contents.extend([1, 2, 3])
    refused(request, r"input 'x': shape \[2, 2\] needs 4 values; contents.fp64_contents has 3")


def test_an_input_without_any_data_says_how_to_send_it():
    request = v2.ModelInferRequest()
    request.inputs.add(name="x", datatype="FP32", shape=[1, 2])
    refused(request, r"needs 2 values; contents.fp32_contents has 0 \(and no raw_input_contents\)")


def test_typed_values_in_another_datatypes_field_are_refused():
    request = v2.ModelInferRequest()
    request.inputs.add(name="x", datatype="FP32", shape=[1]).contents.int_contents.append(1)
    refused(request, "input 'x' is FP32, whose values go in contents.fp32_contents; "
                     "request has contents.int_contents")


def test_raw_and_typed_data_for_one_input_are_refused():
    request = raw_request((np.zeros((1, 1), "<f4"), "FP32"))
    request.inputs[0].contents.fp32_contents.append(0.0)
    refused(request, r"input 'in0' has both raw_input_contents\[0\] and contents.fp32_contents")


def test_raw_entries_must_match_the_inputs_one_to_one():
    request = raw_request((np.zeros((1, 1), "<f4"), "FP32"), (np.zeros((1, 1), "<f4"), "FP32"))
    del request.raw_input_contents[1]
    refused(request, "request has 2 inputs and 1 raw_input_contents entries")


def test_negative_dimensions_are_refused():
    request = raw_request((np.zeros((1, 1), "<f4"), "FP32"))
    request.inputs[0].shape[:] = [-1, 1]
    refused(request, r"input 'in0' has shape \[-1, 1\]; every dimension must be 0 or more")


@pytest.mark.parametrize("shape", [[2**40, 2**40, 0], [2**62, 4], [2**31, 2**31, 2**31]])
def test_shapes_larger_than_any_tensor_are_refused_not_crashed_on(shape):
    request = raw_request((np.zeros((1,), "<f4"), "FP32"))
    request.inputs[0].shape[:] = shape
    refused(request, "larger than any tensor can be")


def test_ranks_beyond_32_are_refused_as_lstmserve_v1_refuses_them():
    request = raw_request((np.zeros((1,), "<f4"), "FP32"))
    request.inputs[0].shape[:] = [1] * 65
    refused(request, "input 'in0' has rank 65; a tensor has at most 32 dimensions")


def test_duplicate_and_missing_inputs_are_refused():
    request = raw_request((np.zeros((1, 1), "<f4"), "FP32"), (np.zeros((1, 1), "<f4"), "FP32"))
    request.inputs[1].name = "in0"
    refused(request, "input 'in0' appears twice")
    refused(v2.ModelInferRequest(model_name="m"), "request has no inputs")


def test_parameters_that_cannot_be_honoured_are_refused():
    request = raw_request((np.zeros((1, 1), "<f4"), "FP32"))
    request.inputs[0].parameters["shared_memory_region"].string_param = "region"
    refused(request, "input 'in0' has parameter 'shared_memory_region': shared memory is not served")
    request = raw_request((np.zeros((1, 1), "<f4"), "FP32"))
    request.parameters["sequence_id"].int64_param = 7
    with pytest.raises(InvalidInput, match="request has parameter 'sequence_id': lstmserve models keep "
                                           "no state"):
        codec.prepared_flag(request)


def test_prepared_is_a_bool_request_parameter_and_other_hints_are_ignored():
    request = v2.ModelInferRequest()
    request.parameters["priority"].uint64_param = 3
    assert codec.prepared_flag(request) is False
    request.parameters["prepared"].bool_param = True
    assert codec.prepared_flag(request) is True
    request.parameters["prepared"].string_param = "yes"
    with pytest.raises(InvalidInput, match="'prepared' must be a bool_param; got string_param 'yes'"):
        codec.prepared_flag(request)


# --- requested outputs --------------------------------------------------------------------------

def test_no_requested_outputs_means_every_output_in_model_order():
    outputs = codec.requested_outputs(v2.ModelInferRequest(), MODEL)
    assert outputs == [codec.RequestedOutput("probs"), codec.RequestedOutput("level")]


def test_requested_outputs_keep_the_request_order_and_class_count():
    request = v2.ModelInferRequest(outputs=[Output(name="level"), Output(name="probs")])
    request.outputs[1].parameters["classification"].int64_param = 2
    assert codec.requested_outputs(request, MODEL) == [codec.RequestedOutput("level"),
                                                       codec.RequestedOutput("probs", 2)]


@pytest.mark.parametrize("outputs,error,match", [
    ([Output(name="nope")], InvalidInput, r"model 'm' has outputs \['probs', 'level'\]; request asks "
                                          r"for output 'nope'"),
    ([Output(name="probs"), Output(name="probs")], InvalidInput, "output 'probs' is requested twice"),
])
def test_unknown_or_repeated_outputs_are_refused(outputs, error, match):
    with pytest.raises(error, match=match):
        codec.requested_outputs(v2.ModelInferRequest(outputs=outputs), MODEL)


@pytest.mark.parametrize("set_count,match", [
    (lambda p: setattr(p, "int64_param", 0), "'classification' is 0; expected a count of 1 or more"),
    (lambda p: setattr(p, "int64_param", -2), "'classification' is -2; expected a count of 1 or more"),
    (lambda p: setattr(p, "string_param", "2"), "must be an int64_param count; got string_param '2'"),
])
def test_classification_count_must_be_a_positive_integer(set_count, match):
    request = v2.ModelInferRequest(outputs=[Output(name="probs")])
    set_count(request.outputs[0].parameters["classification"])
    with pytest.raises(InvalidInput, match=match):
        codec.requested_outputs(request, MODEL)


def test_classification_of_a_regression_output_is_a_failed_precondition():
    request = v2.ModelInferRequest(outputs=[Output(name="level")])
    request.outputs[0].parameters["classification"].int64_param = 1
    with pytest.raises(ModeNotSupported, match="output 'level' has a linear activation; classification "
                                               "needs a sigmoid or softmax output"):
        codec.requested_outputs(request, MODEL)


# --- classification -----------------------------------------------------------------------------

def test_top_classes_follow_the_extensions_format_and_order():
    # The extension's own example: [1, 5, 10, 4] ranks indices 2, 1, 3, 0.
    values = np.array([[1, 5, 10, 4], [0.5, 0.25, 0.125, 0.125]], dtype=np.float32)
    strings = codec.top_classes(values, 2, SOFTMAX)
    assert strings.tolist() == [["10.000000:2:c", "5.000000:1:b"], ["0.500000:0:a", "0.250000:1:b"]]
    unlabelled = OutputHead(SOFTMAX.spec, "softmax")
    assert codec.top_classes(values[:1], 3, unlabelled).tolist() == [["10.000000:2", "5.000000:1",
                                                                      "4.000000:3"]]


def test_top_classes_break_ties_by_index_and_stop_at_the_class_count():
    values = np.array([[0.25, 0.25, 0.25, 0.25]], dtype=np.float32)
    assert codec.top_classes(values, 9, SOFTMAX).tolist() == [
        ["0.250000:0:a", "0.250000:1:b", "0.250000:2:c", "0.250000:3:d"]]


def test_one_sigmoid_unit_is_two_classes_with_the_positive_one_at_index_1():
    head = OutputHead(TensorSpec("p", np.dtype("float32"), (None, 1)), "sigmoid", ("no", "yes"))
    values = np.array([[0.75], [0.125]], dtype=np.float32)
    assert codec.top_classes(values, 2, head).tolist() == [["0.750000:1:yes", "0.250000:0:no"],
                                                          ["0.875000:0:no", "0.125000:1:yes"]]


def test_sequence_outputs_rank_the_last_axis_of_every_timestep():
    values = np.random.default_rng(0).random((2, 5, 4)).astype(np.float32)
    strings = codec.top_classes(values, 1, SOFTMAX)
    assert strings.shape == (2, 5, 1)
    indices = [[int(s.split(":")[1]) for s in row[:, 0]] for row in strings]
    np.testing.assert_array_equal(indices, values.argmax(axis=-1))


# --- responses ----------------------------------------------------------------------------------

def test_response_holds_raw_little_endian_outputs_in_the_requested_order():
    probs = np.array([[0.125, 0.5, 0.25, 0.125]], dtype=np.float32)
    level = np.array([[3.5]], dtype=np.float32)
    prediction = Prediction({"probs": probs, "level": level})
    outputs = [codec.RequestedOutput("level"), codec.RequestedOutput("probs", 2)]
    response = codec.response_from_prediction(MODEL, prediction, outputs, request_id="r-1")
    assert (response.model_name, response.model_version, response.id) == ("m", "1", "r-1")
    assert [(o.name, o.datatype, list(o.shape)) for o in response.outputs] == [
        ("level", "FP32", [1, 1]), ("probs", "BYTES", [1, 2])]
    assert response.raw_output_contents[0] == struct.pack("<f", 3.5)
    assert read_bytes_tensor(response.raw_output_contents[1]) == ["0.500000:1:b", "0.250000:2:c"]
    assert not any(o.HasField("contents") for o in response.outputs)


@pytest.mark.parametrize("dtype,datatype", [("float32", "FP32"), ("float64", "FP64"), ("int32", "INT32"),
                                            ("int64", "INT64"), ("float16", "FP32"), ("bool", "FP32"),
                                            (">f4", "FP32")])
def test_output_values_encode_to_their_datatype(dtype, datatype):
    array = np.arange(6).reshape(2, 3).astype(dtype)
    got_datatype, raw = codec.encode_values(array)
    assert got_datatype == datatype
    np.testing.assert_array_equal(np.frombuffer(raw, codec.DTYPE_BY_DATATYPE[datatype]), array.ravel())


def test_an_output_dtype_without_a_datatype_is_a_server_bug_not_a_client_error():
    with pytest.raises(TypeError, match="complex64 has no V2 datatype"):
        codec.encode_values(np.zeros(2, np.complex64))


# --- metadata -----------------------------------------------------------------------------------

def test_model_metadata_uses_v2_datatypes_and_minus_one_for_free_dimensions():
    metadata = codec.model_metadata(MODEL)
    assert (metadata.name, list(metadata.versions), metadata.platform) == ("m", ["1"], "keras_h5")
    assert [(t.name, t.datatype, list(t.shape)) for t in metadata.inputs] == [("x", "FP32", [-1, -1, 2])]
    assert [(t.name, t.datatype, list(t.shape)) for t in metadata.outputs] == [
        ("probs", "FP32", [-1, 4]), ("level", "FP32", [-1, 1])]


def test_model_metadata_lists_the_raw_window_a_prepared_model_takes():
    # A lag-12 difference consumes 12 raw steps: callers send 18 for a 6-step model.
    preparation = Preparation.from_metadata({
        "input_steps": [{"kind": "difference", "lag": 12, "features": ["y"]}], "raw_features": ["y"]})
    model = Described("air", (TensorSpec("x", np.dtype("float32"), (None, 6, 1)),), (LINEAR,),
                      preparation=preparation)
    assert list(codec.model_metadata(model).inputs[0].shape) == [-1, 18, 1]


def test_server_metadata_announces_the_classification_extension():
    metadata = codec.server_metadata("0.1.0")
    assert (metadata.name, metadata.version, list(metadata.extensions)) == (
        "lstmserve", "0.1.0", ["classification"])
