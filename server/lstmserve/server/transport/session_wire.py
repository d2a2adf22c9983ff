"""Protobuf <-> runtime values for sessions and forecasts, and nothing else."""

from __future__ import annotations

import numpy as np

from lstmserve.client.tensors import fill_tensor, from_tensor
from lstmserve.server.errors import InvalidInput
from lstmserve.server.serving.model import LoadedModel
from lstmserve.server.serving.sessions import Session, SessionLimits, StepResult
from lstmserve.server.serving.stepping import NONE, STATE, WINDOW
from lstmserve.server.transport.converters import spec_to_wire
from lstmserve.v1 import model_pb2 as mpb
from lstmserve.v1 import session_service_pb2 as spb

KIND_TO_WIRE = {NONE: mpb.SESSION_KIND_NONE, WINDOW: mpb.SESSION_KIND_WINDOW,
                STATE: mpb.SESSION_KIND_STATE}


def steps_from_wire(request: spb.StepRequest) -> dict[str, np.ndarray]:
    if not request.inputs:
        raise InvalidInput("step has no inputs; send one tensor of shape [steps, ...] per model input")
    return {name: from_tensor(t, f"step input '{name}'" if name else "step input")
            for name, t in request.inputs.items()}


def info_to_wire(session: Session, limits: SessionLimits) -> spb.SessionInfo:
    support = session.model.sessions
    return spb.SessionInfo(
        session_id=session.id, model=mpb.ModelSpec(name=session.model.name, version=session.model.version),
        kind=KIND_TO_WIRE[session.kind], step_inputs=[spec_to_wire(spec) for spec in session.step_specs],
        steps_before_first_answer=max(session.keep_steps), state_bytes=support.state_bytes,
        idle_timeout_seconds=limits.idle_seconds, position=session.position)


def step_to_wire(session: Session, result: StepResult,
                 response: spb.StepResponse | None = None) -> spb.StepResponse:
    """The StepResponse, filled in place (into `response`, a stream answer's field, when given): this
    runs once per step, and building nested messages from arguments costs twice as much."""
    response = spb.StepResponse() if response is None else response
    response.session_id = session.id
    response.position = result.position
    response.answered = result.answered
    response.missing_steps = result.missing
    for name, array in result.prediction.outputs.items():
        fill_tensor(response.outputs[name], array)
    for name, labels in result.prediction.labels.items():
        response.labels[name].values.extend(labels)
    return response


def support_to_wire(model: LoadedModel, limits: SessionLimits) -> mpb.SessionSupport:
    support = model.sessions
    return mpb.SessionSupport(kind=KIND_TO_WIRE[support.kind], reason=support.reason,
                              steps_before_first_answer=support.steps_before_answer if support.kind != NONE
                              else 0, state_bytes=support.state_bytes, max_sessions=limits.max_sessions,
                              idle_timeout_seconds=limits.idle_seconds)


def forecast_support_to_wire(model: LoadedModel, limits: SessionLimits) -> mpb.ForecastSupport:
    support = model.forecasting
    if support is None or not support.supported:
        return mpb.ForecastSupport(reason=support.reason if support is not None else "not checked")
    names = model.preparation.raw_features
    feature = names[support.feature] if support.feature < len(names) else str(support.feature)
    return mpb.ForecastSupport(supported=True, feature=feature, model_horizon=support.horizon,
                               max_horizon=limits.max_horizon)


def forecast_to_wire(model: LoadedModel, values: np.ndarray, method: str) -> spb.ForecastResponse:
    response = spb.ForecastResponse(model=mpb.ModelSpec(name=model.name, version=model.version),
                                    method=method)
    fill_tensor(response.forecast, values)
    return response
