"""Which session kind a model gets, decided once at load: state, window, or none (with the reason).

- state: free timesteps or stateful=True, and a graph that can be stepped: the server keeps every
  recurrent layer's state per session and runs only the new steps.
- window: fixed timesteps: the server keeps the last raw steps a request needs (the preparation's lag
  included) and answers each step with Predict on the window ending at it.
- none: free timesteps (or stateful) and a layer that needs whole sequences; the reason names it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from lstmserve.format.preparation import Preparation
from lstmserve.server.engine.base import DEFAULT_ENGINE, BatchConfig, Engine, EngineConfig
from lstmserve.server.specs import TensorSpec

log = logging.getLogger(__name__)

STATE, WINDOW, NONE = "state", "window", "none"
# Each session has at most one step in flight, so the queue is bounded by the sessions themselves.
STEP_QUEUE = 1 << 20
# A step function whose full batch needs at most this much arithmetic (a 2 x LSTM(64) of 8 features at
# 256 sessions: 26 MFLOP, about a millisecond of XLA on one core) runs on the event loop itself, batched
# per turn of the loop; larger ones run on a thread of their own behind a Batcher. Counted, not timed.
INLINE_BUDGET_FLOPS = 32e6


@dataclass(frozen=True)
class SessionSupport:
    """What sessions of one model keep and how they run; `stepper` is the batched step engine (state)."""

    kind: str = NONE
    reason: str = "sessions are off"
    windows: tuple[int, ...] = ()  # window: raw steps each input's window holds
    lag: int = 0  # raw steps the preparation consumes before the first prepared step
    state_floats: int = 0  # state: the recurrent layers' state per session
    step_bytes: tuple[int, ...] = ()  # bytes of one raw step, per input
    stepper: Engine | None = None

    @property
    def steps_before_answer(self) -> int:
        """Steps a new session takes before its first answer: a full window, or the preparation's lag."""
        return max(self.windows) - 1 if self.kind == WINDOW else self.lag

    @property
    def state_bytes(self) -> int:
        """Bytes a session keeps: its raw steps (window, or the preparation's lag) and the model's state."""
        if self.kind == WINDOW:
            return sum(max(w - 1, 0) * b for w, b in zip(self.windows, self.step_bytes))
        return 4 * self.state_floats + self.lag * (self.step_bytes[0] if self.step_bytes else 0)

    def close(self) -> None:
        if self.stepper is not None:
            self.stepper.close()


NO_SESSIONS = SessionSupport()


def session_support(keras_model, inputs: Sequence[TensorSpec], preparation: Preparation, name: str,
                    config: EngineConfig = DEFAULT_ENGINE) -> SessionSupport:
    """Plan the model's steps; build and warm the step engine only for a model that needs it."""
    from lstmserve.server.engine.stepplan import NotSteppable, plan_steps
    raw = _raw_specs(inputs, preparation)
    step_bytes = tuple(int(np.prod([d or 1 for d in s.shape[2:]])) * s.dtype.itemsize for s in raw)
    why = ""
    try:
        plan = plan_steps(keras_model)
    except (NotSteppable, TypeError) as error:
        plan, why = None, str(error)
    fixed = all(len(s.shape) >= 2 and s.shape[1] is not None for s in inputs)
    if plan is not None and (plan.stateful or not fixed):
        return _state_support(keras_model, plan, inputs, preparation, name, config, step_bytes)
    if fixed and plan is None and "has no time axis" in why:
        return SessionSupport(reason=f"model '{name}' cannot keep sessions: {why}")
    if fixed and (plan is None or not plan.stateful):
        return SessionSupport(WINDOW, "fixed timesteps: each step is answered on the window ending at it",
                              windows=tuple(s.shape[1] for s in raw), step_bytes=step_bytes)
    return SessionSupport(reason=f"model '{name}' cannot be stepped: {why}")


def _state_support(keras_model, plan, inputs, preparation: Preparation, name: str, config: EngineConfig,
                   step_bytes: tuple[int, ...]) -> SessionSupport:
    from lstmserve.server.engine.batcher import Batcher
    from lstmserve.server.engine.stepper import build_step_engine
    try:
        engine = build_step_engine(keras_model, plan, inputs, config.jit_compile, config.step_buckets)
    except Exception as error:  # noqa: BLE001 (a model that predicts must still load without sessions)
        log.warning("model '%s': no sessions, its step function failed to build", name, exc_info=error)
        return SessionSupport(reason=f"model '{name}' could not be stepped: its step function failed to "
                                     f"build ({type(error).__name__}); see the server log")
    if _step_flops(keras_model, engine.max_batch) <= INLINE_BUDGET_FLOPS:
        from lstmserve.server.engine.loopbatch import LoopBatcher
        stepper = LoopBatcher(engine, f"{name}-steps")
    else:
        stepper = Batcher(engine, BatchConfig(engine.max_batch, 0.0, STEP_QUEUE), f"{name}-steps")
    why = "stateful=True" if plan.stateful else "free timesteps"
    return SessionSupport(STATE, f"{why}: each session keeps its recurrent state and runs only new steps",
                          lag=0 if preparation.is_identity else preparation.lag,
                          state_floats=plan.state_size, step_bytes=step_bytes, stepper=stepper)


def _step_flops(keras_model, rows: int) -> float:
    """An upper bound on one step of a full batch: every weight used once per row."""
    return 2.0 * sum(int(np.prod(w.shape)) for w in keras_model.weights) * rows


def _raw_specs(inputs: Sequence[TensorSpec], preparation: Preparation) -> list[TensorSpec]:
    if preparation.is_identity:
        return list(inputs)
    first = inputs[0]
    return [TensorSpec(first.name, first.dtype, preparation.raw_shape(first.shape)), *inputs[1:]]
