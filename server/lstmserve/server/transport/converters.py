"""Protobuf <-> runtime values, and nothing else."""

from __future__ import annotations

import json

import numpy as np

from lstmserve.client.tensors import fill_tensor, from_tensor, wire_dtype
from lstmserve.server.errors import InvalidInput, shown
from lstmserve.server.serving.heads import Mode
from lstmserve.server.serving.model import LoadedModel, Prediction
from lstmserve.server.serving.sessions import DEFAULT_SESSION_LIMITS, SessionLimits
from lstmserve.server.specs import TensorSpec
from lstmserve.v1 import model_pb2 as mpb
from lstmserve.v1 import prediction_service_pb2 as pb
from lstmserve.v1 import tensor_pb2 as tpb

MODE_BY_WIRE = {
    mpb.PREDICTION_MODE_VALUES: Mode.VALUES,
    mpb.PREDICTION_MODE_CLASSES: Mode.CLASSES,
    mpb.PREDICTION_MODE_PROBABILITIES: Mode.PROBABILITIES,
}
WIRE_BY_MODE = {mode: wire for wire, mode in MODE_BY_WIRE.items()}
TASK_BY_NAME = {"regression": mpb.TASK_KIND_REGRESSION,
                "classification": mpb.TASK_KIND_CLASSIFICATION}


def mode_from_wire(wire: int) -> Mode:
    if wire not in MODE_BY_WIRE:
        valid = ", ".join(mpb.PredictionMode.Name(w) for w in MODE_BY_WIRE)
        raise InvalidInput(f"mode is {_mode_label(wire)}; expected one of {valid}")
    return MODE_BY_WIRE[wire]


def inputs_from_wire(request: pb.PredictRequest) -> dict[str, np.ndarray]:
    if not request.inputs:
        raise InvalidInput("request has no inputs; send one tensor per model input")
    return {name: from_tensor(t, f"input '{shown(name)}'" if name else "input")
            for name, t in request.inputs.items()}


def rows_of(inputs: dict[str, np.ndarray]) -> int:
    """The batch size a request asks for (its first input's), for logs and metrics."""
    first = next(iter(inputs.values()), None)
    return int(first.shape[0]) if first is not None and first.ndim else 0


def prediction_to_wire(model: LoadedModel, prediction: Prediction) -> pb.PredictResponse:
    # Filled in place: building nested messages from keyword arguments costs twice as much, and
    # this runs once per request.
    response = pb.PredictResponse()
    response.model.name = model.name
    response.model.version = model.version
    for name, array in prediction.outputs.items():
        fill_tensor(response.outputs[name], array)
    for name, labels in prediction.labels.items():
        response.labels[name].values.extend(labels)
    return response


def metadata_to_wire(model: LoadedModel, limits: SessionLimits = DEFAULT_SESSION_LIMITS) -> mpb.ModelMetadata:
    from lstmserve.server.transport.session_wire import forecast_support_to_wire, support_to_wire
    source = model.source
    metadata = mpb.ModelMetadata(
        model=mpb.ModelSpec(name=model.name, version=model.version),
        task=TASK_BY_NAME.get(model.task, mpb.TASK_KIND_UNSPECIFIED),
        inputs=[spec_to_wire(spec) for spec in model.inputs],
        outputs=[_output_to_wire(head) for head in model.heads],
        keras_version=source.keras_version, backend=source.backend,
        sha256=source.sha256, file_size_bytes=source.size_bytes,
        compatibility_steps=list(model.compatibility_steps),
        training_json=json.dumps(source.training) if source.training else "",
        sessions=support_to_wire(model, limits), forecast=forecast_support_to_wire(model, limits),
    )
    if not model.preparation.is_identity:
        metadata.preparation.CopyFrom(_preparation_to_wire(model))
    return metadata


def spec_to_wire(spec: TensorSpec) -> tpb.TensorSpec:
    return tpb.TensorSpec(name=spec.name, dtype=wire_dtype(spec.dtype),
                          shape=[-1 if dim is None else dim for dim in spec.shape])


def _output_to_wire(head) -> mpb.OutputSpec:
    return mpb.OutputSpec(tensor=spec_to_wire(head.spec), activation=head.activation,
                          supported_modes=[WIRE_BY_MODE[m] for m in head.modes],
                          class_labels=list(head.labels))


def _preparation_to_wire(model: LoadedModel) -> mpb.Preparation:
    prep = model.preparation
    return mpb.Preparation(
        input_steps=[_step_to_wire(step) for step in prep.input_steps],
        output_steps=[_step_to_wire(step) for step in prep.output_steps],
        raw_timesteps=prep.raw_timesteps(model.inputs[0].shape) or 0,
        raw_features=list(prep.raw_features), description=prep.describe(),
    )


def _step_to_wire(step: dict) -> mpb.PreparationStep:
    parameters = {k: v for k, v in step.items() if k not in ("kind", "features")}
    return mpb.PreparationStep(kind=step.get("kind", ""), features=step.get("features", []),
                               parameters_json=json.dumps(parameters))


def _mode_label(wire: int) -> str:
    try:
        return mpb.PredictionMode.Name(wire)
    except ValueError:
        return f"unknown PredictionMode {wire}"
