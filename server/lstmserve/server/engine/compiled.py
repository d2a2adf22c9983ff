"""Runs a Keras model through traced (XLA-compiled where possible) functions, batch sizes bucketed.

`model.predict()` costs tens of milliseconds of per-call overhead; a traced function costs well under
one. Padding each batch up to a bucket size keeps the set of shapes small, so nothing retraces or
recompiles under load: every bucket is compiled before the model reports SERVING.

The weights are arguments of the traced function, not constants inside it, and one traced function
serves every model of the same architecture. TensorFlow never frees XLA's compiled code (its
compilation cache has no eviction: tensorflow#64170), so a function traced per model would leak about
30 MB at every reload of a 2 x LSTM(16) model; shared per architecture, a new version of a model
compiles nothing and costs no memory beyond its weights, and what stays is bounded by the number of
distinct architectures the process has served.

A model whose inputs have fixed timesteps is traced once, with the batch size left open, and XLA
compiles that one trace for each bucket: tracing (Keras, in Python) was a fifth to a third of every
bucket's start-up cost. With a persistent compilation cache (process.py) a restart loads the compiled
buckets from disk instead.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import threading
from collections.abc import Sequence

import numpy as np
import tensorflow as tf

from lstmserve.server import keras_internals
from lstmserve.server.engine.base import DEFAULT_BUCKETS, EngineStats
from lstmserve.server.errors import ModelNotReady
from lstmserve.server.phases import phase
from lstmserve.server.specs import TensorSpec

log = logging.getLogger(__name__)


class _ExpectedRetracing(logging.Filter):
    """One trace per bucket is the design, not the accident TensorFlow warns about."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "triggered tf.function retracing" not in record.getMessage()


logging.getLogger("tensorflow").addFilter(_ExpectedRetracing())


class CompiledEngine:
    """An Engine over one model's weights and its architecture's shared traced function; thread-safe."""

    inline = False  # a TensorFlow call: milliseconds for large models, never on the event loop

    def __init__(self, keras_model, inputs: Sequence[TensorSpec],
                 buckets: Sequence[int] = DEFAULT_BUCKETS, jit_compile: bool = True) -> None:
        self.inputs = tuple(inputs)
        self.buckets = tuple(sorted(set(buckets)))
        self._bucket_of = [next(b for b in self.buckets if b >= rows) for rows in range(self.max_batch + 1)]
        self._program = Program.shared(keras_model, self.inputs, jit_compile)
        # This model's own weights, in the order the shared function takes them.
        variables = self._program.variables_of(keras_model)
        self._weights: list | None = [tf.constant(np.asarray(v)) for v in variables]

    @property
    def jit_compile(self) -> bool:
        return self._program.jit_compile

    @property
    def tracing_count(self) -> int:
        """Traces so far: one (or, with free timesteps, one per bucket and timestep length seen); never
        grows under steady load."""
        return self._program.tracing_count

    @property
    def max_batch(self) -> int:
        return self.buckets[-1]

    def warm(self) -> None:
        """Compile every bucket now (nothing, if a model of this architecture already did)."""
        with phase("compile"):
            self._program.warm(lambda: self._warm_buckets())

    def predict(self, arrays: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Outputs for `arrays` (already checked against the signature), one array per output."""
        weights = self._weights
        if weights is None:
            raise ModelNotReady("model is unloaded; retry (another version or server answers)")
        rows = arrays[0].shape[0]
        if rows > self.max_batch:
            return self._run_chunked(arrays, rows)
        bucket = self._bucket_of[rows]
        padded = [pad_rows(array, bucket) for array in arrays]
        outputs = self._program.call(weights, padded)
        return [output[:rows] for output in outputs] if bucket != rows else outputs

    async def predict_async(self, arrays: Sequence[np.ndarray]) -> list[np.ndarray]:
        return await asyncio.to_thread(self.predict, arrays)

    def stats(self) -> EngineStats:
        return EngineStats()  # the batcher in front counts

    def describe(self) -> str:
        kind = "XLA-compiled function" if self.jit_compile else "traced graph function"
        return f"{kind}, batch sizes {list(self.buckets)} compiled ahead"

    def close(self) -> None:
        """Drop this model's weights; the traced function stays for the next model of its architecture."""
        self._weights = None

    def _run_chunked(self, arrays: Sequence[np.ndarray], rows: int) -> list[np.ndarray]:
        chunks = [self.predict([a[start:start + self.max_batch] for a in arrays])
                  for start in range(0, rows, self.max_batch)]
        return [np.concatenate(parts) for parts in zip(*chunks)]

    def _warm_buckets(self) -> None:
        # One after another: compiling two buckets at once on two threads measured no faster on a
        # busy 2-core machine (0.99x wall for the heavy model) and held 26 MB more at its peak.
        for bucket in self.buckets:
            with phase(f"bucket {bucket}"):
                self.predict([np.zeros(_concrete_shape(spec, bucket), spec.dtype) for spec in self.inputs])


class Program:
    """The traced function of one architecture, taking (weights, inputs), shared by every model of it.

    The first model of an architecture traces it and stays referenced here as its shell: its weights
    are never read (stateless_call replaces them with each caller's)."""

    _cache: dict[str, Program] = {}
    _cache_lock = threading.Lock()

    def __init__(self, shell, inputs: tuple[TensorSpec, ...], jit_compile: bool) -> None:
        self.jit_compile = jit_compile
        # One trace with the batch left open, unless timesteps are free too (see _trace).
        self._open_batch = all(None not in spec.shape[1:] for spec in inputs)
        self._shell = shell
        self._trainable = len(shell.trainable_variables)
        self._fn = self._trace(jit_compile)
        self._calls: dict[tuple, FastCall] = {}
        self._lock = threading.Lock()
        self._warmed = False

    @classmethod
    def shared(cls, keras_model, inputs: tuple[TensorSpec, ...], jit_compile: bool) -> Program:
        key = architecture_key(keras_model, inputs, jit_compile)
        with cls._cache_lock:
            program = cls._cache.get(key) if key else None
            if program is None:
                program = cls(keras_model, inputs, jit_compile)
                if key:
                    cls._cache[key] = program
            return program

    @property
    def tracing_count(self) -> int:
        return self._fn.experimental_get_tracing_count()

    def variables_of(self, keras_model) -> list:
        """A model's variables in the order the function takes them: trainable, then the rest."""
        return list(keras_model.trainable_variables) + list(keras_model.non_trainable_variables)

    def warm(self, run_every_bucket) -> None:
        """Run every bucket; falls back to plain graph mode when XLA cannot compile the architecture."""
        with self._lock:
            try:
                run_every_bucket()
            except Exception as error:  # XLA rejects some ops; graph mode runs them all.
                if not self.jit_compile:
                    raise
                log.warning("XLA could not compile the model (%s); using graph mode", error)
                self.jit_compile = False
                self._fn, self._calls = self._trace(jit_compile=False), {}
                run_every_bucket()

    def call(self, weights: list, padded: list[np.ndarray]) -> list[np.ndarray]:
        key = tuple((None if self._open_batch else array.shape[0], *array.shape[1:]) for array in padded)
        call = self._calls.get(key) or self._concrete(key, weights, padded)
        return call(weights, padded)

    def _concrete(self, key: tuple, weights: list, padded: list[np.ndarray]) -> FastCall:
        specs = [tf.TensorSpec(shape, array.dtype) for shape, array in zip(key, padded)]
        weight_specs = [tf.TensorSpec(w.shape, w.dtype) for w in weights]
        call = FastCall(self._fn.get_concrete_function(weight_specs, *specs))
        self._calls[key] = call
        return call

    def _trace(self, jit_compile: bool):
        shell, trainable = self._shell, self._trainable

        def call(weights, *xs):
            outputs, _ = shell.stateless_call(weights[:trainable], weights[trainable:],
                                              list(xs) if len(xs) > 1 else xs[0], training=False)
            return tuple(outputs) if isinstance(outputs, (list, tuple)) else (outputs,)

        # Never a trace with free timesteps AND a free batch: Keras 3 layers such as TimeDistributed
        # compute wrong shapes when both are symbolic (a (4, 7, 2) output came back as (4, 4, 2)).
        # Such models get one trace per concrete shape; bucketed batches keep the shapes few.
        return tf.function(call, jit_compile=jit_compile, reduce_retracing=False)


def architecture_key(keras_model, inputs: tuple[TensorSpec, ...], jit_compile: bool) -> str | None:
    """What decides a trace: the built model's config (every layer's class, module and settings, the
    activations swapped in by compatibility steps), the inputs and XLA. None when it cannot be said (a
    custom layer without a config): that model gets a function of its own."""
    try:
        config = keras_model.to_json()
    except Exception:  # noqa: BLE001 (any failure only means: do not share)
        return None
    described = [config, [(s.name, s.dtype.str, s.shape) for s in inputs], jit_compile]
    return hashlib.sha256(json.dumps(described, default=str).encode()).hexdigest()


class FastCall:
    """Calls one concrete function without the public call path's per-call Python overhead.

    tf.function's call re-derives the argument structure and looks up its trace cache on every call
    (~250 us on this class of machine, more than the seed model's own compute); the pinned
    TensorFlow's AtomicFunction takes flat tensors (~50 us). If this private path ever changes
    shape, the public call takes over; the equality tests cover both.
    """

    def __init__(self, concrete) -> None:
        self._concrete = concrete
        self._captures = list(concrete.captured_inputs)
        self._flat = keras_internals.flat_call(concrete)

    def __call__(self, weights: list, arrays: list[np.ndarray]) -> list[np.ndarray]:
        if self._flat is not None:
            try:
                flat = [*weights, *map(tf.constant, arrays), *self._captures]
                return [out.numpy() for out in self._flat(flat)]
            except TypeError:
                log.warning("fast call path unavailable in this TensorFlow; using the public one")
                self._flat = None
        outputs = self._concrete(weights, *arrays)
        outputs = outputs if isinstance(outputs, (list, tuple)) else (outputs,)
        return [out.numpy() for out in outputs]


def pad_rows(array: np.ndarray, rows: int) -> np.ndarray:
    if array.shape[0] == rows:
        return array
    padding = np.zeros((rows - array.shape[0], *array.shape[1:]), array.dtype)
    return np.concatenate([array, padding])


def _concrete_shape(spec: TensorSpec, batch: int) -> tuple[int, ...]:
    # A model with free timesteps is warmed at one step; other lengths compile on first use.
    return (batch, *[dim if dim is not None else 1 for dim in spec.shape[1:]])
