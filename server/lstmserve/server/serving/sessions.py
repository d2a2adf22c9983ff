"""Streaming sessions: one sequence's state kept on the server, so a caller sends only its new steps.

A session is pinned to the LoadedModel (version) it started on. A window session keeps the last raw
steps a request needs and answers each step with Predict on the window ending at it; a state session
keeps every recurrent layer's state (and the raw steps the preparation consumes) and runs the model's
step function on the new steps only, batched with other sessions' steps. Nothing of a session changes
until a step has been checked, run and answered: a bad step leaves it as it was.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from lstmserve.format.errors import RawInputError
from lstmserve.server.errors import (
    CannotStep,
    InvalidInput,
    ModelNotReady,
    Overloaded,
    SessionModelGone,
    SessionNotFound,
)
from lstmserve.server.serving.heads import Mode
from lstmserve.server.serving.model import LoadedModel, Prediction
from lstmserve.server.serving.registry import ModelRegistry
from lstmserve.server.serving.signature import _value_problem
from lstmserve.server.serving.stepping import NONE, STATE
from lstmserve.server.specs import TensorSpec

REMEMBERED_ENDINGS = 10_000  # recently ended ids, so a late step hears why rather than "unknown"
MAX_ID_CHARS = 64


@dataclass(frozen=True)
class SessionLimits:
    idle_seconds: float = 60.0
    max_sessions: int = 10_000  # per model name
    max_horizon: int = 1_000
    max_steps: int = 10_000  # per step message (and per Forecast history)

    def __post_init__(self) -> None:
        if self.idle_seconds <= 0 or min(self.max_sessions, self.max_horizon, self.max_steps) < 1:
            raise ValueError(f"sessions need idle seconds > 0, and max sessions, horizon and steps >= 1; "
                             f"got {self.idle_seconds}, {self.max_sessions}, {self.max_horizon}, "
                             f"{self.max_steps}")


DEFAULT_SESSION_LIMITS = SessionLimits()
DEFAULT_MAX_STEPS = DEFAULT_SESSION_LIMITS.max_steps


class StepResult(NamedTuple):
    """The answer to one step message: outputs for its last `answered` steps ([answered, ...] each).
    (A named tuple: made once per step, twice as cheap as a frozen dataclass.)"""

    prediction: Prediction
    position: int  # steps the session has received, this message's included
    answered: int
    missing: int  # steps still to send up to and including the first answered one (0: answering)


class Session:
    """One sequence on one model version. Steps run one at a time, in the order they arrive."""

    def __init__(self, session_id: str, model: LoadedModel, prepared: bool = False,
                 max_steps: int = DEFAULT_MAX_STEPS) -> None:
        self.id = session_id
        self.max_steps = max_steps
        self.model = model
        self.prepared = prepared
        self.kind = model.sessions.kind
        self.step_specs = step_specs(model, prepared)
        self._modes = frozenset(model.modes)
        self.position = 0
        self.last_used = time.monotonic()
        self.lease = None  # the registry's hold on the version, set by the manager
        self._lock = asyncio.Lock()
        self._clear()

    async def step(self, inputs: Mapping[str, np.ndarray], mode: Mode) -> StepResult:
        """Run the new steps; InvalidInput (and every other failure) leaves the session untouched."""
        if mode not in self._modes:
            self.model.require(mode)
        arrays = check_steps(self.step_specs, inputs, self.model.name, self.max_steps)
        async with self._lock:
            try:
                if self.kind == STATE:
                    return await self._step_state(arrays, mode)
                return await self._step_window(arrays, mode)
            except ModelNotReady:
                raise SessionModelGone(f"session '{self.id}' is on model '{self.model.name}' version "
                                       f"'{self.model.version}', which has been unloaded; start a new "
                                       "session") from None

    def reset(self) -> None:
        """Back to an empty sequence, as if just created."""
        self.position = 0
        self._clear()

    @property
    def state_bytes(self) -> int:
        return sum(a.nbytes for a in self._buffers) + (self._state.nbytes if self._state is not None else 0)

    @property
    def keep_steps(self) -> list[int]:
        """Raw steps kept per input: a window less one, or the preparation's lag (state sessions)."""
        return list(self._keep)

    def _clear(self) -> None:
        support = self.model.sessions
        if self.kind == STATE:
            keep = [0 if self.prepared else support.lag] + [0] * (len(self.step_specs) - 1)
        elif self.prepared:
            keep = [spec.shape[1] - 1 for spec in self.model.inputs]
        else:
            keep = [max(w - 1, 0) for w in support.windows]
        self._buffers = [np.zeros((0, *s.shape[1:]), s.dtype) for s in self.step_specs]
        self._keep = keep
        self._plain = self.kind == STATE and len(self.step_specs) == 1 and not self._raw
        self._state = np.zeros(support.state_floats, np.float32) if self.kind == STATE else None

    async def _step_window(self, arrays: list[np.ndarray], mode: Mode) -> StepResult:
        joined = [np.concatenate([b, a]) for b, a in zip(self._buffers, arrays)]
        windows = [keep + 1 for keep in self._keep]
        steps = arrays[0].shape[0]
        answered = min(steps, *(len(j) - w + 1 for j, w in zip(joined, windows)))
        prediction = Prediction({})
        if answered > 0:
            named = {spec.name: _windows(j, w, answered)
                     for spec, j, w in zip(self.step_specs, joined, windows)}
            prediction = await self.model.predict_async(named, mode, prepared=self.prepared)
        missing = max(0, max(w - len(j) for j, w in zip(joined, windows)))
        self._commit(joined, None, steps)
        return StepResult(prediction, self.position, max(answered, 0), missing)

    async def _step_plain(self, x: np.ndarray, mode: Mode) -> StepResult:
        """The usual state step: one input, no preparation between the caller and the model."""
        *outputs, new_state = await self.model.sessions.stepper.predict_async([x[None], self._state[None]])
        prediction = self.model.shape_outputs([out[0] for out in outputs], mode)
        self._state = new_state[0].copy()
        self.position += x.shape[0]
        return StepResult(prediction, self.position, x.shape[0], 0)

    async def _step_state(self, arrays: list[np.ndarray], mode: Mode) -> StepResult:
        if self._plain:
            return await self._step_plain(arrays[0], mode)
        support, steps, lag = self.model.sessions, arrays[0].shape[0], self._keep[0]
        joined = [np.concatenate([self._buffers[0], arrays[0]]), *arrays[1:]] if lag else arrays
        answered = max(0, min(steps, len(joined[0]) - lag))
        prediction, state = Prediction({}), self._state
        if answered:
            model_steps = [self._prepare(joined[0])[-answered:], *(a[-answered:] for a in arrays[1:])]
            *outputs, new_state = await support.stepper.predict_async(
                [step[None] for step in model_steps] + [state[None]])
            outputs = [out[0] for out in outputs]
            if self._raw and mode is Mode.VALUES:
                windows = _windows(joined[0], max(lag, 1), answered)
                outputs = self.model.preparation.restore(outputs, [windows])
            prediction, state = self.model.shape_outputs(outputs, mode), new_state[0].copy()
        self._commit(joined, state, steps)
        return StepResult(prediction, self.position, answered, max(0, lag + 1 - len(joined[0])))

    @property
    def _raw(self) -> bool:
        return not self.prepared and not self.model.preparation.is_identity

    def _prepare(self, raw: np.ndarray) -> np.ndarray:
        if not self._raw:
            return raw
        try:
            return self.model.preparation.prepare([raw[None]])[0][0]
        except RawInputError as error:
            raise InvalidInput(f"model '{self.model.name}': {error}") from None

    def _commit(self, joined: list[np.ndarray], state: np.ndarray | None, steps: int) -> None:
        if any(self._keep):  # else the buffers stay empty
            self._buffers = [j[max(0, len(j) - keep):].copy() if keep else j[:0]
                             for j, keep in zip(joined, self._keep)]
        if state is not None:
            self._state = state
        self.position += steps


def _windows(joined: np.ndarray, width: int, count: int) -> np.ndarray:
    """The windows of `width` rows ending at each of the last `count` rows: [count, width, ...]."""
    end = len(joined)
    return np.stack([joined[end - count + i + 1 - width:end - count + i + 1] for i in range(count)])


def step_specs(model: LoadedModel, prepared: bool) -> list[TensorSpec]:
    """What one step message carries per input: [steps, *one step's shape] (raw unless `prepared`)."""
    specs = model.inputs if prepared else model.raw_inputs
    return [TensorSpec(s.name, s.dtype, (None, *s.shape[2:])) for s in specs]


def describe_step(spec: TensorSpec) -> str:
    """'float32 [steps, features=8]', or 'int32 [steps]' for token ids."""
    dims = ["steps", *(f"features={d}" if i == 0 else f"dim{i + 2}={d}"
                       for i, d in enumerate(spec.shape[1:]))]
    return f"{spec.dtype.name} [{', '.join(dims)}]"


def check_steps(specs: list[TensorSpec], inputs: Mapping[str, np.ndarray], model_name: str,
                max_steps: int) -> list[np.ndarray]:
    """The step message's arrays in input order, checked and cast; InvalidInput names what is wrong."""
    if len(specs) == 1 and len(inputs) == 1:  # the usual step: one input, named or not
        array = inputs.get("", inputs.get(specs[0].name))
        if array is not None:
            return [_checked_count(_check_step(specs[0], array, model_name), max_steps)]
    names = [spec.name for spec in specs]
    if set(inputs) != set(names):
        raise InvalidInput(f"model '{model_name}' takes steps of inputs {names}; the step has "
                           f"{sorted(inputs)}")
    arrays = [_check_step(spec, inputs[spec.name], model_name) for spec in specs]
    _checked_count(arrays[0], max_steps)
    if len({a.shape[0] for a in arrays}) > 1:
        raise InvalidInput(f"inputs of a step must carry the same number of steps; got "
                           f"{ {s.name: a.shape[0] for s, a in zip(specs, arrays)} }")
    return arrays


def _checked_count(array: np.ndarray, max_steps: int) -> np.ndarray:
    if array.shape[0] > max_steps:
        raise InvalidInput(f"step message has {array.shape[0]} steps; at most {max_steps} per message "
                           "(--max-steps-per-message): send long histories in parts")
    return array


def _check_step(spec: TensorSpec, array: np.ndarray, model_name: str) -> np.ndarray:
    if (array.shape[1:] == spec.shape[1:] and array.dtype == spec.dtype and array.shape[0]
            and (spec.dtype.kind != "f" or np.isfinite(array).all())):
        return array  # the usual step, in a few comparisons (a free dimension never compares equal)
    shape = tuple(array.shape)
    if len(shape) != len(spec.shape) or not shape[0] or any(
            want is not None and got != want for got, want in zip(shape[1:], spec.shape[1:])):
        raise InvalidInput(f"step input '{spec.name}' has shape {list(shape)}; model '{model_name}' takes "
                           f"steps as {describe_step(spec)}")
    problem = _value_problem(spec, array)
    if problem:
        raise InvalidInput(f"step input '{spec.name}' {problem}; model '{model_name}' takes steps as "
                           f"{describe_step(spec)}" + (" with finite values" if "NaN" in problem else ""))
    return array if array.dtype == spec.dtype else array.astype(spec.dtype)


class SessionManager:
    """Every open session of a server, by id: created, found, ended, expired. Used from one event loop."""

    def __init__(self, registry: ModelRegistry, limits: SessionLimits = DEFAULT_SESSION_LIMITS,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.registry = registry
        self.limits = limits
        self._clock = clock
        self._sessions: dict[str, Session] = {}
        self._counts: dict[str, int] = {}
        self._ended: OrderedDict[str, str] = OrderedDict()

    def create(self, name: str = "", version: str = "", prepared: bool = False) -> Session:
        """A new session on the model's version (latest unless named); CannotStep, Overloaded. The session
        holds a lease on its version, so a reload that replaces it lets the session finish on it (within
        the registry's drain time)."""
        lease = self.registry.lease(name, version)
        try:
            session = self._open(lease.model, prepared)
        except BaseException:
            lease.release()
            raise
        session.lease = lease
        return session

    def _open(self, model: LoadedModel, prepared: bool) -> Session:
        if model.sessions.kind == NONE:
            raise CannotStep(model.sessions.reason)
        if prepared and model.preparation.is_identity:
            prepared = False  # nothing to skip
        if self._counts.get(model.name, 0) >= self.limits.max_sessions:
            self.expire_idle()
        if self._counts.get(model.name, 0) >= self.limits.max_sessions:
            raise Overloaded(f"model '{model.name}' has {self.limits.max_sessions} open sessions, the most "
                             "allowed (--max-sessions); end some, or wait for idle ones to expire after "
                             f"{self.limits.idle_seconds:g} s (--session-idle-seconds)")
        session = Session(secrets.token_hex(16), model, prepared, self.limits.max_steps)
        session.last_used = self._clock()
        self._sessions[session.id] = session
        self._counts[model.name] = self._counts.get(model.name, 0) + 1
        return session

    def touch(self, session: Session) -> None:
        """A session its caller holds (a stream's) marked as used now; SessionNotFound when it has
        expired or ended meanwhile (`get`, for a caller that already holds the session)."""
        now, idle = self._clock(), self.limits.idle_seconds
        if self._sessions.get(session.id) is not session or now - session.last_used > idle:
            self.get(session.id)  # ends an expired session and says why it is gone
        session.last_used = now

    def get(self, session_id: str) -> Session:
        """The session, marked as used now; SessionNotFound says whether it expired, ended or never was."""
        session = self._sessions.get(session_id)
        now = self._clock()
        if session is not None and now - session.last_used > self.limits.idle_seconds:
            self._end(session, f"expired after {self.limits.idle_seconds:g} s without steps "
                               "(--session-idle-seconds)")
            session = None
        if session is None:
            raise SessionNotFound(self._why_missing(session_id))
        session.last_used = now
        return session

    def end(self, session_id: str, why: str = "was ended by its client") -> Session:
        session = self.get(session_id)
        self._end(session, why)
        return session

    def discard(self, session: Session, why: str) -> None:
        """End a session the caller holds (a stream's), if it is still open."""
        if self._sessions.get(session.id) is session:
            self._end(session, why)

    def expire_idle(self) -> int:
        """End every session idle longer than the limit; how many ended."""
        deadline = self._clock() - self.limits.idle_seconds
        idle = [s for s in self._sessions.values() if s.last_used < deadline]
        for session in idle:
            self._end(session, f"expired after {self.limits.idle_seconds:g} s without steps "
                               "(--session-idle-seconds)")
        return len(idle)

    def count(self, model_name: str) -> int:
        return self._counts.get(model_name, 0)

    def counts(self) -> dict[str, int]:
        """Open sessions per model (a copy: metrics read it from their own thread)."""
        return dict(self._counts)

    def __len__(self) -> int:
        return len(self._sessions)

    def _end(self, session: Session, why: str) -> None:
        del self._sessions[session.id]
        if session.lease is not None:
            session.lease.release()
        self._counts[session.model.name] -= 1
        self._ended[session.id] = why
        while len(self._ended) > REMEMBERED_ENDINGS:
            self._ended.popitem(last=False)

    def _why_missing(self, session_id: str) -> str:
        shown = session_id if len(session_id) <= MAX_ID_CHARS else session_id[:MAX_ID_CHARS] + "..."
        if not session_id:
            return "the request names no session; create one first (CreateSession, or open a stream)"
        if session_id in self._ended:
            return f"session '{shown}' {self._ended[session_id]}"
        return (f"no session '{shown}' on this server (sessions live on the server that created them; "
                "it may have ended or expired long ago)")
