"""Open Inference Protocol (KServe V2) messages <-> runtime values; no grpc, no model work.

Tensors travel as V2 datatypes FP32, FP64, INT32 and INT64, in `raw_input_contents` (row-major,
little-endian, one entry per input) or in the typed `contents` field of that datatype. Outputs go back
in `raw_output_contents`. An output requested with the `classification` parameter comes back as the
classification extension defines it: BYTES strings "<value>:<index>[:<label>]", highest value first.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from lstmserve.client import tensors
from lstmserve.inference.v2 import grpc_predict_v2_pb2 as v2
from lstmserve.server.errors import InvalidInput, ModeNotSupported, shown
from lstmserve.server.serving.heads import Mode, OutputHead
from lstmserve.server.specs import TensorSpec

if TYPE_CHECKING:  # the codec needs the model's description only, not the module that loads models
    from lstmserve.server.serving.model import LoadedModel, Prediction

SERVER_NAME = "lstmserve"
PLATFORM = "keras_h5"
EXTENSIONS = ("classification",)

# Little-endian on the wire whatever the host, as lstmserve.v1 does.
DTYPE_BY_DATATYPE = {
    "FP32": np.dtype("<f4"),
    "FP64": np.dtype("<f8"),
    "INT32": np.dtype("<i4"),
    "INT64": np.dtype("<i8"),
}
DATATYPE_BY_DTYPE = {dtype.newbyteorder("="): name for name, dtype in DTYPE_BY_DATATYPE.items()}
TYPED_FIELD = {"FP32": "fp32_contents", "FP64": "fp64_contents", "INT32": "int_contents",
               "INT64": "int64_contents"}
SERVED = ", ".join(DTYPE_BY_DATATYPE)

# Parameters whose meaning lstmserve cannot honour: silently ignoring them would answer a different
# question than the one asked. Any other parameter (priority, timeout, ...) is a hint and is ignored.
_STATELESS = "lstmserve models keep no state between requests; send the whole sequence in one request"
_NO_SHARED_MEMORY = "shared memory is not served; send the tensor's data in the request"
REFUSED_PARAMETERS = {
    "sequence_id": _STATELESS, "sequence_start": _STATELESS, "sequence_end": _STATELESS,
    "shared_memory_region": _NO_SHARED_MEMORY,
}
# lstmserve's own request parameter: true means the inputs are already prepared (see PredictRequest).
PREPARED_PARAMETER = "prepared"


@dataclass(frozen=True)
class RequestedOutput:
    """One output to answer with: its values, or (class_count > 0) its top classes as strings."""

    name: str
    class_count: int = 0


# --- requests -----------------------------------------------------------------------------------

def inputs_from_request(request: v2.ModelInferRequest) -> dict[str, np.ndarray]:
    """The request's arrays by input name; InvalidInput says which input is wrong and how."""
    if not request.inputs:
        raise InvalidInput("request has no inputs; send one InferInputTensor per model input")
    raw = request.raw_input_contents
    if raw and len(raw) != len(request.inputs):
        raise InvalidInput(
            f"request has {len(request.inputs)} inputs and {len(raw)} raw_input_contents entries; "
            "send one raw entry per input, in the order of inputs (or typed contents and no raw entries)"
        )
    arrays: dict[str, np.ndarray] = {}
    for index, tensor in enumerate(request.inputs):
        if tensor.name in arrays:
            raise InvalidInput(f"input '{shown(tensor.name)}' appears twice in the request; "
                               "send each input once")
        arrays[tensor.name] = decode_input(tensor, raw[index] if raw else None, index)
    return arrays


def decode_input(tensor: v2.ModelInferRequest.InferInputTensor, raw: bytes | None,
                 index: int = 0) -> np.ndarray:
    """One input tensor as an array, from its raw bytes (when the request has them) or typed contents."""
    label = f"input '{shown(tensor.name)}'"
    dtype = DTYPE_BY_DATATYPE.get(tensor.datatype)
    if dtype is None:
        raise InvalidInput(f"{label} has datatype '{shown(tensor.datatype)}'; expected one of {SERVED}")
    refuse_parameters(tensor.parameters, label)
    shape = tuple(tensor.shape)
    count = element_count(shape, dtype.itemsize, label)
    if raw is None:
        array = _from_contents(tensor, dtype, count, label)
    else:
        typed = [field.name for field, _ in tensor.contents.ListFields()]
        if typed:
            raise InvalidInput(f"{label} has both raw_input_contents[{index}] and contents.{typed[0]}; "
                               "send its data one way only")
        if len(raw) != count * dtype.itemsize:
            raise InvalidInput(f"{label}: shape {list(shape)} of {tensor.datatype} needs "
                               f"{count * dtype.itemsize} bytes; raw_input_contents[{index}] has {len(raw)}")
        array = np.frombuffer(raw, dtype=dtype)
    array = array.reshape(shape)
    return array if dtype.isnative else array.astype(dtype.newbyteorder("="))


def element_count(shape: Sequence[int], itemsize: int, label: str) -> int:
    """prod(shape), refusing what no array can have, with the checks lstmserve.v1's codec makes."""
    try:
        return tensors.element_count(shape, itemsize, label)
    except tensors.TensorDecodeError as error:
        raise InvalidInput(str(error)) from None


def _from_contents(tensor, dtype: np.dtype, count: int, label: str) -> np.ndarray:
    field = TYPED_FIELD[tensor.datatype]
    other = [f.name for f, _ in tensor.contents.ListFields() if f.name != field]
    if other:
        raise InvalidInput(f"{label} is {tensor.datatype}, whose values go in contents.{field}; "
                           f"request has contents.{other[0]}")
    values = getattr(tensor.contents, field)
    if len(values) != count:
        where = "" if values else " (and no raw_input_contents)"
        raise InvalidInput(f"{label}: shape {list(tensor.shape)} needs {count} values; "
                           f"contents.{field} has {len(values)}{where}")
    return np.array(values, dtype=dtype)


def refuse_parameters(parameters: Mapping[str, v2.InferParameter], label: str) -> None:
    for name in parameters:
        if name in REFUSED_PARAMETERS:
            raise InvalidInput(f"{label} has parameter '{name}': {REFUSED_PARAMETERS[name]}")


def prepared_flag(request: v2.ModelInferRequest) -> bool:
    """lstmserve's `prepared` request parameter (a bool; absent means raw inputs), after refusing
    request parameters that cannot be honoured."""
    refuse_parameters(request.parameters, "request")
    if PREPARED_PARAMETER not in request.parameters:
        return False
    parameter = request.parameters[PREPARED_PARAMETER]
    if parameter.WhichOneof("parameter_choice") != "bool_param":
        raise InvalidInput(f"request parameter '{PREPARED_PARAMETER}' must be a bool_param; "
                           f"got {_parameter_label(parameter)}")
    return parameter.bool_param


def requested_outputs(request: v2.ModelInferRequest, model: LoadedModel) -> list[RequestedOutput]:
    """The outputs to answer with, in the request's order; every output when it names none."""
    if not request.outputs:
        return [RequestedOutput(head.name) for head in model.heads]
    heads = {head.name: head for head in model.heads}
    chosen: dict[str, RequestedOutput] = {}
    for output in request.outputs:
        label = f"output '{shown(output.name)}'"
        if output.name not in heads:
            raise InvalidInput(f"model '{model.name}' has outputs {list(heads)}; request asks for "
                               f"{label}")
        if output.name in chosen:
            raise InvalidInput(f"{label} is requested twice; request each output once")
        refuse_parameters(output.parameters, label)
        count = class_count(output.parameters, label)
        if count:
            require_classes(heads[output.name], model.name)
        chosen[output.name] = RequestedOutput(output.name, count)
    return list(chosen.values())


def class_count(parameters: Mapping[str, v2.InferParameter], label: str) -> int:
    """The `classification` parameter's count (0 when absent)."""
    if "classification" not in parameters:
        return 0
    parameter = parameters["classification"]
    kind = parameter.WhichOneof("parameter_choice")
    if kind not in ("int64_param", "uint64_param"):
        raise InvalidInput(f"{label} parameter 'classification' must be an int64_param count; "
                           f"got {_parameter_label(parameter)}")
    count = getattr(parameter, kind)
    if count < 1:
        raise InvalidInput(f"{label} parameter 'classification' is {count}; expected a count of 1 or more")
    return count


def require_classes(head: OutputHead, model_name: str) -> None:
    # Ranking a regression output's values would answer with numbers that are not classes.
    if Mode.CLASSES not in head.modes:
        raise ModeNotSupported(
            f"model '{model_name}' output '{head.name}' has a {head.activation} activation; "
            "classification needs a sigmoid or softmax output (request it without 'classification')"
        )


def _parameter_label(parameter: v2.InferParameter) -> str:
    kind = parameter.WhichOneof("parameter_choice")
    return f"{kind} {shown(repr(getattr(parameter, kind)))}" if kind else "an empty InferParameter"


# --- responses ----------------------------------------------------------------------------------

def response_from_prediction(model: LoadedModel, prediction: Prediction,
                             outputs: Sequence[RequestedOutput], request_id: str = "",
                             ) -> v2.ModelInferResponse:
    """The requested outputs, each in raw_output_contents at the same position as in outputs."""
    response = v2.ModelInferResponse(model_name=model.name, model_version=model.version, id=request_id)
    heads = {head.name: head for head in model.heads}
    for output in outputs:
        values = prediction.outputs[output.name]
        if output.class_count:
            strings = top_classes(values, output.class_count, heads[output.name])
            datatype, shape, raw = "BYTES", strings.shape, encode_bytes(strings.ravel())
        else:
            datatype, raw = encode_values(values)
            shape = values.shape
        response.outputs.add(name=output.name, datatype=datatype, shape=shape)
        response.raw_output_contents.append(raw)
    return response


def encode_values(array: np.ndarray) -> tuple[str, bytes]:
    """The V2 datatype and row-major little-endian bytes of an array."""
    datatype = v2_datatype(array.dtype)
    wire = DTYPE_BY_DATATYPE[datatype]
    return datatype, (array if array.dtype == wire else array.astype(wire)).tobytes()


def v2_datatype(dtype: np.dtype) -> str:
    """FP32 for float32 and so on; float16 and bool are widened to FP32 as lstmserve.v1 does."""
    dtype = np.dtype(dtype)
    if dtype == np.float16 or dtype == np.bool_:
        return "FP32"
    try:
        return DATATYPE_BY_DTYPE[dtype.newbyteorder("=")]
    except KeyError:
        raise TypeError(f"dtype {dtype.name} has no V2 datatype here; served: {SERVED}") from None


def top_classes(values: np.ndarray, count: int, head: OutputHead) -> np.ndarray:
    """The classification extension: per row, the top `count` classes as "<value>:<index>[:<label>]".

    Ranked highest value first along the last axis; equal values keep index order (Triton's sort
    leaves ties unspecified). A single sigmoid unit p is the two classes [1 - p, p], so index 1 is
    the positive class, as predict_classes and the model's two labels have it.
    """
    if head.activation == "sigmoid" and values.shape[-1] == 1:
        values = np.concatenate([1 - values, values], axis=-1)
    count = min(count, values.shape[-1])
    order = np.argsort(-values, axis=-1, kind="stable")[..., :count]
    ranked = np.take_along_axis(values, order, axis=-1)
    float_values = ranked.dtype.kind == "f"
    strings = [
        # "%f", as Triton's std::to_string writes a floating value.
        (f"{value:f}" if float_values else f"{int(value)}") + f":{index}"
        + (f":{head.labels[index]}" if head.labels else "")
        for value, index in zip(ranked.ravel().tolist(), order.ravel().tolist())
    ]
    return np.array(strings, dtype=object).reshape(order.shape)


def encode_bytes(elements: Sequence[str]) -> bytes:
    """BYTES elements for raw contents: each a 4-byte little-endian length, then its UTF-8 bytes."""
    parts = []
    for element in elements:
        data = element.encode()
        parts += (struct.pack("<I", len(data)), data)
    return b"".join(parts)


# --- metadata -----------------------------------------------------------------------------------

def model_metadata(model: LoadedModel) -> v2.ModelMetadataResponse:
    """Inputs as a caller sends them by default (raw, before the model's own preparation)."""
    inputs = model.raw_inputs
    return v2.ModelMetadataResponse(
        name=model.name, versions=[model.version], platform=PLATFORM,
        inputs=[tensor_metadata(spec) for spec in inputs],
        outputs=[tensor_metadata(head.spec) for head in model.heads],
    )


def tensor_metadata(spec: TensorSpec) -> v2.ModelMetadataResponse.TensorMetadata:
    return v2.ModelMetadataResponse.TensorMetadata(
        name=spec.name, datatype=v2_datatype(spec.dtype),
        shape=[-1 if dim is None else dim for dim in spec.shape],
    )


def server_metadata(version: str) -> v2.ServerMetadataResponse:
    return v2.ServerMetadataResponse(name=SERVER_NAME, version=version, extensions=list(EXTENSIONS))
