"""Runs a Keras model through one traced (XLA-compiled where possible) function, batch sizes bucketed.

`model.predict()` costs tens of milliseconds of per-call overhead; a traced function costs well under
one. Padding each batch up to a bucket size keeps the set of shapes small, so nothing retraces or
recompiles under load: every bucket is compiled before the model reports SERVING.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import tensorflow as tf

from lstmserve.server.runtime.signature import TensorSpec

log = logging.getLogger(__name__)

DEFAULT_BUCKETS = (1, 2, 4, 8, 16, 32, 64)


class _ExpectedRetracing(logging.Filter):
    """One trace per bucket is the design, not the accident TensorFlow warns about."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "triggered tf.function retracing" not in record.getMessage()


logging.getLogger("tensorflow").addFilter(_ExpectedRetracing())


class CompiledRunner:
    """Thread-safe: one function, many callers."""

    def __init__(self, keras_model, inputs: Sequence[TensorSpec],
                 buckets: Sequence[int] = DEFAULT_BUCKETS, jit_compile: bool = True) -> None:
        self.inputs = tuple(inputs)
        self.buckets = tuple(sorted(set(buckets)))
        self.jit_compile = jit_compile
        self._model = keras_model
        self._bucket_of = [next(b for b in self.buckets if b >= rows) for rows in range(self.max_batch + 1)]
        self._fn = self._trace(jit_compile)
        self._calls: dict[tuple, _FastCall] = {}

    @property
    def tracing_count(self) -> int:
        """Traces so far: one per bucket (and per timestep length seen); never grows under steady load."""
        return self._fn.experimental_get_tracing_count()

    @property
    def max_batch(self) -> int:
        return self.buckets[-1]

    def warm(self) -> None:
        """Compile every bucket now; falls back to plain graph mode when XLA cannot compile the model."""
        try:
            self._warm_buckets()
        except Exception as error:  # XLA rejects some ops; graph mode runs them all.
            if not self.jit_compile:
                raise
            log.warning("XLA could not compile the model (%s); using graph mode", error)
            self.jit_compile = False
            self._fn = self._trace(jit_compile=False)
            self._calls = {}
            self._warm_buckets()

    def run(self, arrays: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Outputs for `arrays` (already checked against the signature), one array per output."""
        rows = arrays[0].shape[0]
        if rows > self.max_batch:
            return self._run_chunked(arrays, rows)
        bucket = self._bucket_of[rows]
        padded = [_pad_rows(array, bucket) for array in arrays]
        key = tuple(array.shape for array in padded)
        call = self._calls.get(key) or self._concrete(key, padded)
        outputs = call(padded)
        return [output[:rows] for output in outputs] if bucket != rows else outputs

    def _concrete(self, key: tuple, padded: list[np.ndarray]) -> _FastCall:
        specs = [tf.TensorSpec(array.shape, array.dtype) for array in padded]
        call = _FastCall(self._fn.get_concrete_function(*specs))
        self._calls[key] = call
        return call

    def _run_chunked(self, arrays: Sequence[np.ndarray], rows: int) -> list[np.ndarray]:
        chunks = [self.run([a[start:start + self.max_batch] for a in arrays])
                  for start in range(0, rows, self.max_batch)]
        return [np.concatenate(parts) for parts in zip(*chunks)]

    def _warm_buckets(self) -> None:
        for bucket in self.buckets:
            self.run([np.zeros(_concrete_shape(spec, bucket), spec.dtype) for spec in self.inputs])

    def _trace(self, jit_compile: bool):
        model = self._model

        def call(*xs):
            outputs = model(list(xs) if len(xs) > 1 else xs[0], training=False)
            return tuple(outputs) if isinstance(outputs, (list, tuple)) else (outputs,)

        # One trace per concrete shape, never a generic one: Keras 3 layers such as
        # TimeDistributed compute wrong shapes when batch and timesteps are both symbolic
        # (a (4, 7, 2) output came back as (4, 4, 2)). Bucketed batches keep the shapes few.
        return tf.function(call, jit_compile=jit_compile, reduce_retracing=False)


class _FastCall:
    """Calls one concrete function without the public call path's per-call Python overhead.

    tf.function's call re-derives the argument structure and looks up its trace cache on every call
    (~250 us on this class of machine, more than the seed model's own compute); the pinned
    TensorFlow's AtomicFunction takes flat tensors (~50 us). If this private path ever changes
    shape, the public call takes over; the equality tests cover both.
    """

    def __init__(self, concrete) -> None:
        self._concrete = concrete
        self._captures = list(concrete.captured_inputs)
        atomic = getattr(concrete, "_inference_function", None)
        self._flat = getattr(atomic, "call_preflattened", None)

    def __call__(self, arrays: list[np.ndarray]) -> list[np.ndarray]:
        if self._flat is not None:
            try:
                return [out.numpy() for out in self._flat([*map(tf.constant, arrays), *self._captures])]
            except TypeError:
                log.warning("fast call path unavailable in this TensorFlow; using the public one")
                self._flat = None
        outputs = self._concrete(*arrays)
        outputs = outputs if isinstance(outputs, (list, tuple)) else (outputs,)
        return [out.numpy() for out in outputs]


def _pad_rows(array: np.ndarray, rows: int) -> np.ndarray:
    if array.shape[0] == rows:
        return array
    padding = np.zeros((rows - array.shape[0], *array.shape[1:]), array.dtype)
    return np.concatenate([array, padding])


def _concrete_shape(spec: TensorSpec, batch: int) -> tuple[int, ...]:
    # A model with free timesteps is warmed at one step; other lengths compile on first use.
    return (batch, *[dim if dim is not None else 1 for dim in spec.shape[1:]])
