"""Forecast: several steps ahead, server-side, in the caller's units, for models that say they forecast.

A model forecasts when its file declares it (`lstmserve.format.metadata` "forecast": the output is the
next `horizon` values of one input feature; the trainer's forecasting models do). The forecast runs
through a session of the model: the history is stepped in as one message, and each answer (in raw
units, through the stored preparation) is fed back as the next steps: recursive for one-step models,
direct for horizon models within their horizon, and chained beyond it. Feeding back needs the model's
only input feature to be the one it forecasts; a model of several features forecasts within its
horizon only.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import numpy as np

from lstmserve.format.preparation import Preparation
from lstmserve.server.errors import CannotStep, InvalidInput
from lstmserve.server.serving.heads import PROBABILISTIC, Mode, OutputHead
from lstmserve.server.serving.stepping import NONE, WINDOW, SessionSupport
from lstmserve.server.specs import TensorSpec

HOW_TO_DECLARE = ("the trainer's forecasting models declare it; add it to your own file with "
                  "lstmserve.format.metadata.declare_forecast(path, feature, horizon)")


@dataclass(frozen=True)
class ForecastSupport:
    """Which input feature the model forecasts and how many steps one answer covers; or why it cannot."""

    feature: int = -1
    horizon: int = 0
    features: int = 0
    reason: str = ""

    @property
    def supported(self) -> bool:
        return self.feature >= 0

    def method(self, horizon: int) -> str:
        if self.horizon == 1:
            return "recursive"
        return "direct" if horizon <= self.horizon else "direct, chained"

    def check(self, model_name: str, horizon: int, max_horizon: int) -> None:
        """InvalidInput for a horizon out of range; CannotStep when this model cannot reach it."""
        if not 0 < horizon <= max_horizon:
            raise InvalidInput(f"horizon is {horizon}; expected 1..{max_horizon} steps (--max-horizon)")
        if not self.supported:
            raise CannotStep(f"model '{model_name}' cannot forecast: {self.reason}")
        if horizon > self.horizon and self.features > 1:
            raise CannotStep(
                f"model '{model_name}' forecasts {self.horizon} step(s) of one of its {self.features} input "
                f"features; a horizon of {horizon} would need the future of the others, which it does not "
                f"predict (ask for at most {self.horizon})")


def forecast_support(block: dict | None, inputs: tuple[TensorSpec, ...], heads: tuple[OutputHead, ...],
                     preparation: Preparation, sessions: SessionSupport) -> ForecastSupport:
    """Checked once at load: the file's declaration against the model's signature and session kind."""
    if not block:
        return ForecastSupport(reason="its file does not declare that its output is the next value of an "
                                      f"input feature ({HOW_TO_DECLARE})")
    if sessions.kind == NONE:
        return ForecastSupport(reason=sessions.reason)
    if len(inputs) != 1 or len(heads) != 1:
        return ForecastSupport(reason=f"it has {len(inputs)} inputs and {len(heads)} outputs; forecasting "
                                      "takes one of each")
    names = list(preparation.raw_features)
    features = inputs[0].shape[-1] if len(inputs[0].shape) == 3 else 0
    feature = block["feature"]
    index = names.index(feature) if feature in names else feature if isinstance(feature, int) else -1
    if not 0 <= index < (features or 0):
        return ForecastSupport(reason=f"it declares feature {feature!r:.60}, which is not among its "
                                      f"{features} input features {names or ''}")
    head, horizon = heads[0], int(block["horizon"])
    units = head.spec.shape[-1]
    if head.activation in PROBABILISTIC or units != horizon or len(head.spec.shape) not in (2, 3):
        return ForecastSupport(reason=f"its output '{head.name}' ({head.activation}, shape "
                                      f"{list(head.spec.shape)}) is not {horizon} value(s) per step as "
                                      "declared")
    if sessions.kind == WINDOW and len(head.spec.shape) != 2:
        return ForecastSupport(reason=f"its output '{head.name}' is a sequence over the window")
    return ForecastSupport(index, horizon, features)


async def forecast(sessions: list, history: np.ndarray, horizon: int) -> np.ndarray:
    """[batch, horizon] forecasts, one session per history row (new, empty sessions of the model)."""
    first = await asyncio.gather(*(s.step({"": row}, Mode.VALUES) for s, row in zip(sessions, history)))
    missing = max(result.missing for result in first)
    if missing or any(result.answered == 0 for result in first):
        spec = sessions[0]
        raise InvalidInput(f"history has {history.shape[1]} steps; model '{spec.model.name}' needs at least "
                           f"{history.shape[1] + missing} to forecast")
    found = [np.asarray(_last(result)) for result in first]
    while len(found[0]) < horizon:
        fed = [f[-sessions[0].model.forecasting.horizon:] for f in found]
        steps = await asyncio.gather(*(s.step({"": f[:, None].astype(history.dtype)}, Mode.VALUES)
                                       for s, f in zip(sessions, fed)))
        found = [np.concatenate([f, _last(result)]) for f, result in zip(found, steps)]
    return np.stack([f[:horizon] for f in found])


def _last(result) -> np.ndarray:
    """The model's answer after the last step of a message: its next `horizon` values."""
    (values,) = result.prediction.outputs.values()
    return values[-1].reshape(-1)


async def forecast_model(model, history: np.ndarray, horizon: int, limits) -> np.ndarray:
    """Check the request, then forecast each row of `history` [batch, timesteps, features] (raw units).
    Each row runs as a session of its own for the call: at most --max-sessions rows."""
    from lstmserve.server.serving.sessions import Session, check_steps
    support: ForecastSupport = model.forecasting or ForecastSupport(reason="its file declares no forecast")
    support.check(model.name, horizon, limits.max_horizon)
    if history.ndim != 3 or not 0 < history.shape[0] <= limits.max_sessions:
        raise InvalidInput(f"history has shape {list(history.shape)}; expected [batch, timesteps, features] "
                           f"with 1..{limits.max_sessions} rows (--max-sessions)")
    sessions = [Session(f"forecast-{i}", model, max_steps=limits.max_steps) for i in range(history.shape[0])]
    rows = [check_steps(sessions[0].step_specs, {"": row}, model.name, limits.max_steps)[0]
            for row in history]
    return await forecast(sessions, np.stack(rows), horizon)
