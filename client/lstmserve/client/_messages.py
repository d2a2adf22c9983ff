"""Request building and response reading shared by Client and AsyncClient."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Union

import numpy as np

from lstmserve.client.tensors import from_tensor, to_tensor
from lstmserve.v1 import model_pb2 as mpb
from lstmserve.v1 import model_service_pb2 as msp
from lstmserve.v1 import prediction_service_pb2 as pb

ArrayLike = Union[np.ndarray, list, float]
Inputs = Union[ArrayLike, Mapping[str, ArrayLike]]
Outputs = Union[np.ndarray, dict[str, np.ndarray]]
Version = Union[str, int]

SERVICE = "/lstmserve.v1.PredictionService/"
HEALTH_CHECK = "/grpc.health.v1.Health/Check"
HEALTH_STATUS = {0: "UNKNOWN", 1: "SERVING", 2: "NOT_SERVING", 3: "SERVICE_UNKNOWN"}


def model_spec(model: str | None, version: Version | None = None, label: str | None = None) -> mpb.ModelSpec:
    """A ModelSpec: a version by number or by label (the server refuses both), or neither for the
    highest available one."""
    return mpb.ModelSpec(name=model or "", version=_version(version), version_label=label or "")


def predict_request(
    inputs: Inputs, mode: int, model: str | None, version: Version | None, prepared: bool,
    label: str | None = None,
) -> pb.PredictRequest:
    """A PredictRequest; a bare array goes under the key "" that a single-input model accepts."""
    named = inputs if isinstance(inputs, Mapping) else {"": inputs}
    return pb.PredictRequest(
        model=model_spec(model, version, label),
        inputs={name: to_tensor(value) for name, value in named.items()},
        mode=mode,
        prepared=prepared,
    )


def load_request(model: str, version: Version | None) -> msp.LoadModelRequest:
    return msp.LoadModelRequest(name=model, version=_version(version))


def unload_request(model: str, version: Version | None) -> msp.UnloadModelRequest:
    return msp.UnloadModelRequest(name=model, version=_version(version))


def _version(version: Version | None) -> str:
    return "" if version is None else str(version)


def read_outputs(response: pb.PredictResponse) -> Outputs:
    """The outputs as numpy: one array for a single-output model, else a dict by output name."""
    arrays = {name: from_tensor(t, f"output '{name}'") for name, t in response.outputs.items()}
    return _single_or_dict(arrays)


def read_labels(response: pb.PredictResponse) -> Outputs:
    """Class label strings shaped like the class indices, per output."""
    labelled = {}
    for name, tensor in response.outputs.items():
        if name not in response.labels:
            raise ValueError(f"model carries no class labels for output '{name}'")
        labels = np.array(list(response.labels[name].values), dtype=object)
        labelled[name] = labels.reshape(tuple(tensor.shape))
    return _single_or_dict(labelled)


def _single_or_dict(arrays: dict[str, np.ndarray]) -> Outputs:
    return next(iter(arrays.values())) if len(arrays) == 1 else arrays


def encode_health_request(service: str) -> bytes:
    """grpc.health.v1.HealthCheckRequest by hand: field 1, a string. Spares the SDK another dependency."""
    data = service.encode()
    return b"\x0a" + _varint(len(data)) + data


def decode_health_response(data: bytes) -> str:
    """grpc.health.v1.HealthCheckResponse: field 1, an enum varint (absent means UNKNOWN)."""
    status = 0
    if data[:1] == b"\x08":
        status, shift = 0, 0
        for byte in data[1:]:
            status |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                break
    return HEALTH_STATUS.get(status, f"STATUS_{status}")


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)
