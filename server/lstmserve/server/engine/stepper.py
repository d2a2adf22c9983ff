"""The step function of a model: new timesteps and each session's state in, outputs and new state out.

Derived at load from the model's own layers and weights (engine/stepplan.py says which), and run as
one XLA function over [sessions, k, features] with the sessions' states as an input and an output, so
steps of many sessions run as one batch: the Batcher in front concatenates their rows (inputs and
states alike) and splits the answers back, so a session only ever sees its own rows.

As in engine/compiled.py, the weights are arguments of the traced function, shared by every model of
the same architecture: a new version compiles nothing, and XLA's never-freed code stays bounded by the
number of architectures. Every batch size is compiled ahead for one step, and one session for CHUNK
steps: a message of k steps from one session runs as k // CHUNK calls of CHUNK steps and k % CHUNK
single steps, several sessions' messages of k steps as k single steps of all of them, so nothing
compiles under load (each shape costs about a second of XLA at load).

Measured on this 2-core machine (one thread), one step of a 2 x LSTM(64) of 8 features: XLA 0.13 ms at
1 session and about 1 ms at 256; the same cells in numpy 0.12 ms at 1 and 48 ms at 256. XLA is as quick
for one session and far ahead for many, and runs the model's own layers, so it is the one path.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Sequence

import keras
import numpy as np
import tensorflow as tf

from lstmserve.server import keras_internals
from lstmserve.server.engine.base import DEFAULT_STEP_BUCKETS, EngineStats
from lstmserve.server.engine.compiled import FastCall, architecture_key, pad_rows
from lstmserve.server.engine.stepplan import TIME, StepPlan
from lstmserve.server.errors import ModelNotReady
from lstmserve.server.specs import TensorSpec

log = logging.getLogger(__name__)

CHUNK = 16  # steps per call for long messages (a session primed with its history)


class StepProgram:
    """The traced step function of one architecture, taking (weights, inputs..., state)."""

    _cache: dict[str, StepProgram] = {}
    _cache_lock = threading.Lock()

    def __init__(self, shell, plan: StepPlan, jit_compile: bool) -> None:
        self.jit_compile = jit_compile
        self.plan = plan
        self._variables = list(shell.trainable_variables) + list(shell.non_trainable_variables)
        self._fn = self._trace(jit_compile)
        self._calls: dict[tuple, FastCall] = {}
        self._lock = threading.Lock()

    @classmethod
    def shared(cls, keras_model, plan: StepPlan, inputs: tuple[TensorSpec, ...],
               jit_compile: bool) -> StepProgram:
        key = architecture_key(keras_model, inputs, jit_compile)
        with cls._cache_lock:
            program = cls._cache.get(key) if key else None
            if program is None:
                program = cls(keras_model, plan, jit_compile)
                if key:
                    cls._cache[key] = program
            return program

    def warm(self, run_every_shape) -> None:
        """Compile every shape; graph mode when XLA cannot compile the architecture."""
        with self._lock:
            try:
                run_every_shape()
            except Exception as error:  # XLA rejects some ops; graph mode runs them all.
                if not self.jit_compile:
                    raise
                log.warning("XLA could not compile the step function (%s); using graph mode", error)
                self.jit_compile = False
                self._fn, self._calls = self._trace(jit_compile=False), {}
                run_every_shape()

    def call(self, weights: list, arrays: list[np.ndarray]) -> list[np.ndarray]:
        key = tuple(array.shape for array in arrays)
        call = self._calls.get(key)
        if call is None:
            specs = [tf.TensorSpec(array.shape, array.dtype) for array in arrays]
            weight_specs = [tf.TensorSpec(w.shape, w.dtype) for w in weights]
            call = self._calls[key] = FastCall(self._fn.get_concrete_function(weight_specs, *specs))
        return call(weights, arrays)

    def _trace(self, jit_compile: bool):
        variables, plan = self._variables, self.plan

        def step(weights, *arrays):
            with keras.StatelessScope(state_mapping=list(zip(variables, weights))):
                return tuple(run_plan(plan, list(arrays[:-1]), arrays[-1]))

        return tf.function(step, jit_compile=jit_compile, reduce_retracing=False, autograph=False)


def run_plan(plan: StepPlan, xs: list, state) -> list:
    """Symbolically: every output as [batch, k, ...] for the k new steps, then the new state [batch, S]."""
    batch, steps = xs[0].shape[0], xs[0].shape[1]
    values = {id(tensor): x for tensor, x in zip(plan.graph.inputs, xs)}
    new_states = []
    for item in plan.nodes:
        args, kwargs = item.node.arguments(values)
        if item.slot is not None:
            outputs, states = _run_recurrent(item, args, kwargs, state, batch, steps)
            new_states.extend(tf.reshape(tf.cast(s, tf.float32), [batch, -1]) for s in states)
        else:
            if keras_internals.accepts_training(item.layer):
                kwargs["training"] = False
            outputs = item.layer(*args, **kwargs)
        flat = outputs if isinstance(outputs, (list, tuple)) else [outputs]
        for tensor, value in zip(item.node.outputs, flat):
            values[id(tensor)] = value
    outputs = [values[id(t)] if region == TIME else tf.reshape(values[id(t)], [batch, steps, *t.shape[1:]])
               for t, region in zip(plan.graph.outputs, plan.output_regions)]
    state_out = tf.concat(new_states, axis=1) if new_states else tf.zeros([batch, 0], tf.float32)
    return [*outputs, state_out]


def _run_recurrent(item, args, kwargs, state, batch: int, steps: int):
    """One recurrent layer over the k new steps from this session's state slot."""
    sequences = args[0]
    mask = kwargs.get("mask")
    if mask is None:
        mask = keras_internals.get_mask(sequences)
    slot, start, states = item.slot, item.slot.offset, []
    for shape in slot.shapes:
        size = int(np.prod(shape))
        states.append(tf.reshape(state[:, start:start + size], [batch, *shape]))
        start += size
    outputs, new_states = keras_internals.run_recurrent(item.layer, sequences, states, mask)
    if item.layer.return_sequences:
        if mask is not None:
            keras_internals.set_mask(outputs, mask)
        return outputs, new_states
    # Without return_sequences, each step's output is the last output of its prefix: one value per step.
    return tf.reshape(outputs, [batch * steps, *outputs.shape[2:]]), new_states


class StepEngine:
    """An Engine over [inputs..., state] -> [outputs..., new state], one row per session; thread-safe."""

    inline = False

    def __init__(self, program: StepProgram, weights: list, inputs: Sequence[TensorSpec],
                 buckets: Sequence[int] = DEFAULT_STEP_BUCKETS) -> None:
        self.program = program
        self.inputs = tuple(inputs)
        self.buckets = tuple(sorted(set(buckets)))
        self.max_batch = self.buckets[-1]
        self.state_size = program.plan.state_size
        self._bucket_of = [next(b for b in self.buckets if b >= rows) for rows in range(self.max_batch + 1)]
        self._weights: list | None = weights

    def predict(self, arrays: Sequence[np.ndarray]) -> list[np.ndarray]:
        weights = self._weights
        if weights is None:
            raise ModelNotReady("model is unloaded; its sessions have ended")
        rows = arrays[0].shape[0]
        if rows > self.max_batch:
            chunks = [self.predict([a[s:s + self.max_batch] for a in arrays])
                      for s in range(0, rows, self.max_batch)]
            return [np.concatenate(parts) for parts in zip(*chunks)]
        bucket = self._bucket_of[rows]
        *xs, state = [pad_rows(array, bucket) for array in arrays]
        pieces, start, steps = [], 0, xs[0].shape[1]
        while start < steps:
            size = CHUNK if steps - start >= CHUNK and bucket == 1 else 1
            window = xs if size == steps else [x[:, start:start + size] for x in xs]
            *outputs, state = self.program.call(weights, [*window, state])
            pieces.append(outputs)
            start += size
        outputs = pieces[0] if len(pieces) == 1 else [np.concatenate(p, axis=1) for p in zip(*pieces)]
        return [out[:rows] for out in (*outputs, state)] if bucket != rows else [*outputs, state]

    async def predict_async(self, arrays: Sequence[np.ndarray]) -> list[np.ndarray]:
        return await asyncio.to_thread(self.predict, arrays)

    def stats(self) -> EngineStats:
        return EngineStats()  # the batcher in front counts

    def describe(self) -> str:
        kind = "XLA-compiled" if self.program.jit_compile else "traced graph"
        return (f"{kind} step function, {self.state_size} floats of state per session, sessions batched "
                f"up to {self.max_batch}")

    def close(self) -> None:
        self._weights = None

    def warm(self) -> None:
        """Compile one step at every batch size, and CHUNK steps of one session."""
        def run_every_shape() -> None:
            for bucket, steps in [(bucket, 1) for bucket in self.buckets] + [(1, CHUNK)]:
                self.predict([*_zeros(self.inputs, bucket, steps),
                              np.zeros((bucket, self.state_size), np.float32)])
        self.program.warm(run_every_shape)


def _zeros(inputs: Sequence[TensorSpec], rows: int, steps: int) -> list[np.ndarray]:
    return [np.zeros((rows, steps, *[d or 1 for d in spec.shape[2:]]), spec.dtype) for spec in inputs]


def build_step_engine(keras_model, plan: StepPlan, inputs: Sequence[TensorSpec], jit_compile: bool = True,
                      buckets: Sequence[int] = DEFAULT_STEP_BUCKETS) -> StepEngine:
    """A warmed StepEngine for `keras_model` (its plan from engine.stepplan.plan_steps)."""
    program = StepProgram.shared(keras_model, plan, tuple(inputs), jit_compile)
    variables = list(keras_model.trainable_variables) + list(keras_model.non_trainable_variables)
    engine = StepEngine(program, [tf.constant(np.asarray(v)) for v in variables], inputs, buckets)
    engine.warm()
    return engine


