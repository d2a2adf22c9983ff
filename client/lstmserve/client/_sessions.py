"""Messages of streaming sessions and forecasts, shared by the blocking and the asyncio sessions."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import grpc
import numpy as np

from lstmserve.client._messages import Inputs, Outputs, _single_or_dict
from lstmserve.client.errors import LstmserveError
from lstmserve.client.tensors import from_tensor, to_tensor
from lstmserve.v1 import model_pb2 as mpb
from lstmserve.v1 import session_service_pb2 as spb

MODES = {"values": mpb.PREDICTION_MODE_VALUES, "classes": mpb.PREDICTION_MODE_CLASSES,
         "probabilities": mpb.PREDICTION_MODE_PROBABILITIES}
CODES = {code.value[0]: code for code in grpc.StatusCode}


@dataclass(frozen=True)
class StepResult:
    """The answer to one step message. `outputs` holds one row per answered step ([answered, ...]; a
    dict by output name for several outputs); the answered steps are always the message's last ones."""

    outputs: Outputs | None
    answered: int
    missing: int  # steps still needed before the session's first answer
    position: int  # steps the session has received so far
    labels: Outputs | None = None

    @property
    def last(self) -> Outputs | None:
        """The answer after the message's last step (None while the session still needs steps)."""
        if not self.answered:
            return None
        if isinstance(self.outputs, dict):
            return {name: rows[-1] for name, rows in self.outputs.items()}
        return self.outputs[-1]


def mode_of(mode: str) -> int:
    if mode not in MODES:
        raise ValueError(f"mode is {mode!r}; expected one of {sorted(MODES)}")
    return MODES[mode]


def step_request(x: Inputs, mode: str, specs: Sequence, session_id: str = "") -> spb.StepRequest:
    """A StepRequest; one step may be given without its steps axis ([features] for [1, features])."""
    named = x if isinstance(x, Mapping) else {"": x}
    by_name = {spec.name: spec for spec in specs}
    inputs = {}
    for name, value in named.items():
        spec = by_name.get(name) or (specs[0] if len(specs) == 1 else None)
        inputs[name] = to_tensor(_with_steps_axis(np.asarray(value), spec))
    return spb.StepRequest(session_id=session_id, inputs=inputs, mode=mode_of(mode))


def _with_steps_axis(array: np.ndarray, spec) -> np.ndarray:
    if spec is None:
        return array
    rank = len(spec.shape)
    if array.ndim == rank - 1:
        return array[None]
    if array.ndim == 0 and rank == 2 and spec.shape[1] == 1:
        return array.reshape(1, 1)
    return array


def read_step(response: spb.StepResponse, labels: bool = False) -> StepResult:
    outputs = None
    if response.answered:
        outputs = _single_or_dict({name: from_tensor(t, f"output '{name}'")
                                   for name, t in response.outputs.items()})
    names = None
    if labels and response.labels:
        names = _single_or_dict({name: np.array(list(response.labels[name].values), dtype=object)
                                 .reshape(tuple(response.outputs[name].shape))
                                 for name in response.outputs})
    return StepResult(outputs, response.answered, response.missing_steps, response.position, names)


def read_stream(response: spb.StreamResponse, kind: str):
    """The part of a stream answer a call expects; the in-band error of a failed step as LstmserveError."""
    which = response.WhichOneof("message")
    if which == "error":
        raise LstmserveError(CODES.get(response.error.code, grpc.StatusCode.UNKNOWN), response.error.message)
    if which != kind:
        raise LstmserveError(grpc.StatusCode.INTERNAL, f"server answered {which} to a {kind} message")
    return getattr(response, kind)


def history_array(history) -> tuple[np.ndarray, int]:
    """History as [batch, timesteps, features], and how many leading axes the caller's answer drops:
    [T] (one feature) and [T, F] give one forecast [H]; [B, T, F] gives [B, H]."""
    array = np.asarray(history)
    if array.ndim == 1:
        return array[None, :, None], 1
    if array.ndim == 2:
        return array[None], 1
    return array, 0


def forecast_request(history: np.ndarray, horizon: int, model: str | None,
                     version: str | None) -> spb.ForecastRequest:
    return spb.ForecastRequest(model=mpb.ModelSpec(name=model or "", version=version or ""),
                               history=to_tensor(history), horizon=horizon)


def open_request(model: str | None, version: str | None, prepared: bool) -> spb.CreateSessionRequest:
    return spb.CreateSessionRequest(model=mpb.ModelSpec(name=model or "", version=version or ""),
                                    prepared=prepared)
