"""The benchmark's messages: one request serialized once, and the real server's answer to it."""

from __future__ import annotations

from pathlib import Path

import grpc
import numpy as np

from lstmserve.client.tensors import from_tensor, to_tensor
from lstmserve.server.bench.models import SHAPES
from lstmserve.v1 import model_pb2 as mpb
from lstmserve.v1 import prediction_service_pb2 as pb

PREDICT = "/lstmserve.v1.PredictionService/Predict"
MODEL_INFER = "/inference.GRPCInferenceService/ModelInfer"


def write_request(model: str, path: Path, rows: int, out: Path) -> Path:
    """A VALUES request of `rows` random windows for `model`, serialized to `out`."""
    x = np.random.default_rng(0).normal(size=(rows, *SHAPES[model])).astype(np.float32)
    request = pb.PredictRequest(model=mpb.ModelSpec(name=model), mode=mpb.PREDICTION_MODE_VALUES,
                                inputs={"": to_tensor(x)})
    out.write_bytes(request.SerializeToString())
    return out


def write_v2_request(address: str, request: Path, out: Path) -> Path:
    """The same inputs as an Open Inference Protocol ModelInferRequest (raw_input_contents), named as the
    server's V2 metadata names the model's input."""
    from lstmserve.inference.v2 import grpc_predict_v2_pb2 as v2
    predict = pb.PredictRequest.FromString(request.read_bytes())
    x = from_tensor(predict.inputs[""])
    with grpc.insecure_channel(address) as channel:
        metadata = v2.ModelMetadataResponse.FromString(channel.unary_unary(
            "/inference.GRPCInferenceService/ModelMetadata")(
            v2.ModelMetadataRequest(name=predict.model.name).SerializeToString(), timeout=60))
    infer = v2.ModelInferRequest(model_name=predict.model.name)
    infer.inputs.add(name=metadata.inputs[0].name, datatype="FP32", shape=list(x.shape))
    infer.raw_input_contents.append(x.tobytes())
    out.write_bytes(infer.SerializeToString())
    return out


def capture_response(address: str, request: Path, out: Path) -> Path:
    """The server's real answer, checked, so the floor answers with exactly as many bytes."""
    with grpc.insecure_channel(address) as channel:
        answer = channel.unary_unary(PREDICT)(request.read_bytes(), timeout=60)
    response = pb.PredictResponse.FromString(answer)
    rows = pb.PredictRequest.FromString(request.read_bytes()).inputs[""].shape[0]
    (output,) = response.outputs.values()
    if from_tensor(output).shape[0] != rows:
        raise RuntimeError(f"the server answered {list(output.shape)} for {rows} rows")
    out.write_bytes(answer)
    return out
