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


def write_request(model: str, path: Path, rows: int, out: Path) -> Path:
    """A VALUES request of `rows` random windows for `model`, serialized to `out`."""
    x = np.random.default_rng(0).normal(size=(rows, *SHAPES[model])).astype(np.float32)
    request = pb.PredictRequest(model=mpb.ModelSpec(name=model), mode=mpb.PREDICTION_MODE_VALUES,
                                inputs={"": to_tensor(x)})
    out.write_bytes(request.SerializeToString())
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
