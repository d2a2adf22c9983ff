"""Hypothesis strategies for every request lstmserve serves: well-formed, nearly right and plain wrong.

Tensors are drawn three ways: the seed's and the classifier's own shapes with valid bytes (so many
calls reach the model and answer OK), any small shape with bytes that match it, and any shape at all
(negative, huge, rank 40) with any bytes."""

from __future__ import annotations

import numpy as np
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from lstmserve.inference.v2 import grpc_predict_v2_pb2 as v2
from lstmserve.v1 import model_pb2 as mpb
from lstmserve.v1 import prediction_service_pb2 as pb
from lstmserve.v1 import stats_pb2 as spb
from lstmserve.v1 import tensor_pb2 as tpb


def mostly(right: st.SearchStrategy, wrong: st.SearchStrategy) -> st.SearchStrategy:
    """`right` about nine times in ten: enough requests reach the model for OK to be common.
    (st.one_of(right, right, right, wrong) would not do: it draws each distinct branch alike.)"""
    return st.sampled_from([True] * 9 + [False]).flatmap(lambda ok: right if ok else wrong)


MODEL_NAMES = mostly(st.sampled_from(["seed", "classifier"]),
                     st.one_of(st.sampled_from(["", "nope"]), st.text(max_size=300)))
VERSIONS = mostly(st.sampled_from(["", "1"]), st.one_of(st.just("2"), st.text(max_size=40)))
MODES = mostly(st.integers(1, 3), st.integers(-2, 6))
INPUT_NAMES = mostly(st.sampled_from(["", "input_layer"]), st.text(max_size=40))
# A model's own window: the seed takes [batch, 1, 1], the classifier [batch, 20, 1].
MODEL_SHAPES = mostly(st.tuples(st.integers(1, 70), st.sampled_from([1, 20]), st.just(1)),
                      st.tuples(st.integers(0, 70), st.sampled_from([1, 20, 3]), st.sampled_from([1, 2])))
FINITE = st.floats(-10, 10, width=32)
SMALL_SHAPES = hnp.array_shapes(min_dims=0, max_dims=5, min_side=0, max_side=6)
ANY_DIMENSION = st.one_of(st.integers(-3, 8), st.integers(-(2**63), 2**63 - 1),
                          st.sampled_from([0, 2**31, 2**40, 2**62]))
ANY_SHAPE = st.lists(ANY_DIMENSION, max_size=40)
NUMPY_DTYPES = st.sampled_from(["<f4", "<f8", "<i4", "<i8"])
WIRE_DTYPE = {"<f4": tpb.DATA_TYPE_FLOAT32, "<f8": tpb.DATA_TYPE_FLOAT64, "<i4": tpb.DATA_TYPE_INT32,
              "<i8": tpb.DATA_TYPE_INT64}
V2_DATATYPE = {"<f4": "FP32", "<f8": "FP64", "<i4": "INT32", "<i8": "INT64"}


@st.composite
def arrays(draw) -> np.ndarray:
    """An array of a model's shape or any small one, of a served dtype, NaN and infinity included."""
    dtype = draw(mostly(st.just("<f4"), NUMPY_DTYPES))
    shape = draw(mostly(MODEL_SHAPES, SMALL_SHAPES))
    elements = FINITE if dtype == "<f4" and draw(mostly(st.just(True), st.just(False))) else None
    return draw(hnp.arrays(np.dtype(dtype), shape, elements=elements))


@st.composite
def tensors(draw) -> tpb.Tensor:
    if draw(mostly(st.just(True), st.just(False))):
        array = draw(arrays())
        return tpb.Tensor(dtype=WIRE_DTYPE[array.dtype.str], shape=array.shape, content=array.tobytes())
    return tpb.Tensor(dtype=draw(st.integers(-3, 8)), shape=draw(ANY_SHAPE),
                      content=draw(st.binary(max_size=256)))


def model_specs() -> st.SearchStrategy:
    return st.builds(mpb.ModelSpec, name=MODEL_NAMES, version=VERSIONS)


@st.composite
def predict_requests(draw) -> pb.PredictRequest:
    request = pb.PredictRequest(model=draw(model_specs()), mode=draw(MODES), prepared=draw(st.booleans()))
    inputs = mostly(st.dictionaries(INPUT_NAMES, tensors(), min_size=1, max_size=1),
                    st.dictionaries(INPUT_NAMES, tensors(), max_size=3))
    for name, tensor in draw(inputs).items():
        request.inputs[name].CopyFrom(tensor)
    return request


def metadata_requests() -> st.SearchStrategy:
    return st.builds(pb.GetModelMetadataRequest, model=model_specs())


def stats_requests() -> st.SearchStrategy:
    return st.builds(spb.GetModelStatsRequest, model=st.one_of(st.none(), model_specs()))


def v2_parameters() -> st.SearchStrategy:
    names = st.one_of(st.sampled_from(["classification", "prepared", "sequence_id", "priority",
                                       "shared_memory_region"]), st.text(max_size=20))
    values = st.one_of(
        st.builds(v2.InferParameter, bool_param=st.booleans()),
        st.builds(v2.InferParameter, int64_param=st.integers(-(2**63), 2**63 - 1)),
        st.builds(v2.InferParameter, uint64_param=st.integers(0, 2**64 - 1)),
        st.builds(v2.InferParameter, string_param=st.text(max_size=50)),
        st.builds(v2.InferParameter, double_param=st.floats()),
        st.just(v2.InferParameter()),
    )
    return st.dictionaries(names, values, max_size=2)


@st.composite
def v2_inputs(draw) -> tuple[v2.ModelInferRequest.InferInputTensor, bytes | None]:
    """One input, with the raw bytes that go with it (None: its values are in typed contents)."""
    tensor = v2.ModelInferRequest.InferInputTensor(name=draw(INPUT_NAMES))
    for name, value in draw(mostly(st.just({}), v2_parameters())).items():
        tensor.parameters[name].CopyFrom(value)
    if draw(mostly(st.just(True), st.just(False))):
        array = draw(arrays())
        tensor.datatype, tensor.shape[:] = V2_DATATYPE[array.dtype.str], array.shape
        if draw(st.booleans()):
            return tensor, array.tobytes()
        field = {"FP32": "fp32_contents", "FP64": "fp64_contents", "INT32": "int_contents",
                 "INT64": "int64_contents"}[tensor.datatype]
        getattr(tensor.contents, field).extend(array.ravel().tolist())
        return tensor, None
    tensor.datatype = draw(st.one_of(st.sampled_from(["FP32", "INT64", "BYTES", "FP16", ""]),
                                     st.text(max_size=8)))
    tensor.shape[:] = draw(ANY_SHAPE)
    tensor.contents.fp32_contents.extend(draw(st.lists(st.floats(width=32), max_size=8)))
    return tensor, draw(st.one_of(st.none(), st.binary(max_size=64)))


@st.composite
def infer_requests(draw) -> v2.ModelInferRequest:
    request = v2.ModelInferRequest(model_name=draw(MODEL_NAMES), model_version=draw(VERSIONS),
                                   id=draw(st.text(max_size=20)))
    for name, value in draw(mostly(st.just({}), v2_parameters())).items():
        request.parameters[name].CopyFrom(value)
    inputs = draw(mostly(st.lists(v2_inputs(), min_size=1, max_size=1), st.lists(v2_inputs(), max_size=3)))
    raw = [data for _, data in inputs if data is not None]
    for tensor, _ in inputs:
        request.inputs.append(tensor)
    if raw and (len(raw) == len(inputs) or draw(st.booleans())):
        request.raw_input_contents.extend(raw)
    names = st.one_of(st.sampled_from(["dense", "nope"]), st.text(max_size=10))
    for name in draw(mostly(st.just([]), st.lists(names, max_size=2))):
        output = request.outputs.add(name=name)
        for parameter, value in draw(v2_parameters()).items():
            output.parameters[parameter].CopyFrom(value)
    return request


def v2_metadata_requests() -> st.SearchStrategy:
    return st.builds(v2.ModelMetadataRequest, name=MODEL_NAMES, version=VERSIONS)
