"""A compiled twin of small recurrent stacks, for models so small that a TensorFlow call costs more.

The seed model (LSTM(10) on one step, then Dense(1)) computes in microseconds, yet each TensorFlow call
wakes executor threads that cost 0.1-0.3 ms apiece on a cold, shared machine. For plain Sequential
stacks of LSTM / GRU / SimpleRNN / Dense / Dropout with stock activations, the same arithmetic as
numba-compiled loops answers in a few microseconds on the caller's thread. It replaced a numpy version
of the same layers: a dozen numpy calls per layer cost 17 us per seed request where the loops cost 3,
and under load the server spent more of its interpreter time there than anywhere else of its own.

Which models qualify, and their packed weights, is engine/twin_layout.py (no numba): this module is
imported only once a model does. `build_twin` only returns an engine that reproduces the reference
(Keras itself) on random inputs within float32 tolerance. The stack runs as one compiled call over a
flat weight array and a small table of layers; the kernels are compiled once per process (and cached
on disk where numba can write), the first time a model is checked, so serving never compiles.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence

import numba
import numpy as np

from lstmserve.server.engine.base import EngineStats
from lstmserve.server.engine.twin_layout import (
    ACTIVATION,
    DENSE,
    FLAGS,
    GRU,
    KIND,
    LSTM,
    OFFSET,
    RECURRENT,
    RELU,
    RESET_AFTER,
    SEQUENCES,
    SIGMOID,
    SOFTMAX,
    TANH,
    UNITS,
    TwinLayout,
    twin_layout,
)
from lstmserve.server.errors import ModelNotReady
from lstmserve.server.specs import TensorSpec

log = logging.getLogger(__name__)

TOLERANCE = 1e-5
SELF_CHECK_ROWS = (1, 3, 64)


def _kernel(function):
    try:
        return numba.njit(cache=True)(function)
    except RuntimeError:  # nowhere writable to cache: compile once per process instead
        return numba.njit(function)


@_kernel
def _activate(v, kind):
    # In float64 from exp alone: libm's float32 tanh took 16 ns a call, twice exp's 7, and activations
    # are most of a twin's time. Infinite exp gives the exact limits (0, 1, -1), never NaN.
    w = np.float64(v)
    if kind == TANH:
        return 1.0 - 2.0 / (math.exp(2.0 * w) + 1.0)
    if kind == SIGMOID:
        return 1.0 / (1.0 + math.exp(-w))
    if kind == RELU:
        return max(w, 0.0)
    return w


@_kernel
def _affine(z, x, kernel, bias):
    """z = x @ kernel + bias, for one row; the inner loop runs along z, so it vectorises."""
    z[:] = bias
    for k in range(x.shape[0]):
        xk = x[k]
        for j in range(z.shape[0]):
            z[j] += xk * kernel[k, j]


@_kernel
def _matrix(weights, offset, rows, columns):
    return weights[offset:offset + rows * columns].reshape(rows, columns)


@_kernel
def _run_stack(x, weights, program):
    """x [rows, steps, features] through every layer; a layer without return_sequences leaves 1 step."""
    out = _run_layer(x, weights, program[0])
    for layer in range(1, program.shape[0]):
        out = _run_layer(out, weights, program[layer])
    return out


@_kernel
def _run_layer(x, weights, layer):
    kind = layer[KIND]
    if kind == DENSE:
        return _dense(x, weights, layer)
    if kind == LSTM:
        return _recurrent(x, weights, layer, 4)
    if kind == GRU:
        return _recurrent(x, weights, layer, 3)
    return _recurrent(x, weights, layer, 1)


@_kernel
def _dense(x, weights, layer):
    rows, steps, features = x.shape
    units, activation, offset = layer[UNITS], layer[ACTIVATION], layer[OFFSET]
    kernel = _matrix(weights, offset, features, units)
    bias = weights[offset + features * units:offset + (features + 1) * units]
    out = np.empty((rows, steps, units), np.float32)
    for r in range(rows):
        for t in range(steps):
            z = out[r, t]
            _affine(z, x[r, t], kernel, bias)
            if activation == SOFTMAX:
                e = np.exp(z - z.max())
                z[:] = e / e.sum()
            else:
                for j in range(units):
                    z[j] = _activate(z[j], activation)
    return out


@_kernel
def _recurrent(x, weights, layer, gates):
    """LSTM (4 gates), GRU (3) or SimpleRNN (1) over every row; weights: kernel, recurrent kernel, bias
    (a GRU's bias is its input bias then its recurrent bias, the latter zero unless reset_after)."""
    rows, steps, features = x.shape
    units, offset = layer[UNITS], layer[OFFSET]
    width = gates * units
    kernel = _matrix(weights, offset, features, width)
    offset += features * width
    recurrent_kernel = _matrix(weights, offset, units, width)
    offset += units * width
    bias = weights[offset:offset + width]
    recurrent_bias = weights[offset + width:offset + 2 * width] if gates == 3 else np.zeros(width, np.float32)
    sequences = layer[FLAGS] & SEQUENCES
    out = np.empty((rows, steps if sequences else 1, units), np.float32)
    z = np.empty(width, np.float32)
    hz = np.empty(width, np.float32)
    h = np.empty(units, np.float32)
    c = np.empty(units, np.float32)  # an LSTM's cell state; a GRU's update and reset gates use `gru`
    gru = np.empty(2 * units, np.float32)
    for r in range(rows):
        h[:] = 0.0
        c[:] = 0.0
        for t in range(steps):
            _affine(z, x[r, t], kernel, bias)
            _affine(hz, h, recurrent_kernel, recurrent_bias)
            if gates == 4:
                _lstm_cell(z, hz, h, c, layer[ACTIVATION], layer[RECURRENT])
            elif gates == 3:
                _gru_cell(z, hz, h, gru, recurrent_kernel, layer[ACTIVATION], layer[RECURRENT],
                          layer[FLAGS] & RESET_AFTER)
            else:
                for j in range(units):
                    h[j] = _activate(z[j] + hz[j], layer[ACTIVATION])
            if sequences:
                out[r, t] = h
        if not sequences:
            out[r, 0] = h
    return out


@_kernel
def _lstm_cell(z, hz, h, c, activation, recurrent):
    units = h.shape[0]
    for j in range(units):  # Keras's gate order: input, forget, candidate, output
        i = _activate(z[j] + hz[j], recurrent)
        f = _activate(z[units + j] + hz[units + j], recurrent)
        g = _activate(z[2 * units + j] + hz[2 * units + j], activation)
        o = _activate(z[3 * units + j] + hz[3 * units + j], recurrent)
        c[j] = f * c[j] + i * g
        h[j] = o * _activate(c[j], activation)


@_kernel
def _gru_cell(z, hz, h, gates, recurrent_kernel, activation, recurrent, reset_after):
    units = h.shape[0]
    update, reset = gates[:units], gates[units:]  # the caller's buffer: no allocation per step
    for j in range(units):  # Keras's gate order: update, reset, candidate
        update[j] = _activate(z[j] + hz[j], recurrent)
        reset[j] = _activate(z[units + j] + hz[units + j], recurrent)
    if not reset_after:
        # The reset gate applies to h before the recurrent kernel: redo the candidate's columns.
        hz[2 * units:] = 0.0
        for k in range(units):
            rh = reset[k] * h[k]
            for j in range(units):
                hz[2 * units + j] += rh * recurrent_kernel[k, 2 * units + j]
        reset[:] = 1.0
    for j in range(units):
        candidate = _activate(z[2 * units + j] + reset[j] * hz[2 * units + j], activation)
        h[j] = update[j] * h[j] + (1.0 - update[j]) * candidate


class TwinEngine:
    """An Engine running a Sequential recurrent stack as one compiled call; thread-safe (no shared
    mutable state). Inline: its full batch is bounded by BUDGET_FLOPS, so it runs on the caller's thread."""

    inline = True

    def __init__(self, weights: np.ndarray, program: np.ndarray, output_steps: bool, max_batch: int) -> None:
        self._weights = weights
        self._program = program
        self._output_steps = output_steps
        self.max_batch = max_batch

    def predict(self, arrays: Sequence[np.ndarray]) -> list[np.ndarray]:
        if self._weights is None:
            raise ModelNotReady("model is unloaded; retry (another version or server answers)")
        x = arrays[0]
        if x.ndim == 2:  # [rows, features]: one step
            x = x[:, None, :]
        if not x.flags.c_contiguous:  # the kernels are compiled (and warmed) for C order only
            x = np.ascontiguousarray(x)
        out = _run_stack(x, self._weights, self._program)
        return [out if self._output_steps else out[:, 0]]

    async def predict_async(self, arrays: Sequence[np.ndarray]) -> list[np.ndarray]:
        return self.predict(arrays)

    def stats(self) -> EngineStats:
        return EngineStats()  # the batcher in front counts

    def describe(self) -> str:
        return "compiled twin (checked equal to Keras at load)"

    def close(self) -> None:
        self._weights = None


def build_twin(keras_model, inputs: Sequence[TensorSpec], reference, max_batch: int) -> TwinEngine | None:
    """A TwinEngine equal to `reference` (anything with predict(arrays)); None for anything but a plain
    stack, or a twin that disagrees."""
    layout = twin_layout(keras_model, inputs, max_batch)
    return twin_from_layout(layout, reference, max_batch) if layout is not None else None


def twin_from_layout(layout: TwinLayout, reference, max_batch: int) -> TwinEngine | None:
    """The twin of a packed stack, if it agrees with `reference`; compiles (or loads) the kernels."""
    twin = TwinEngine(layout.weights, layout.program, layout.output_steps, max_batch)
    return twin if _agrees(twin, reference, layout.spec) else None


def _agrees(twin: TwinEngine, reference, spec: TensorSpec) -> bool:
    """Equal to the reference on random inputs at several batch sizes, or not used at all."""
    rng = np.random.default_rng(0)
    for rows in SELF_CHECK_ROWS:
        x = rng.normal(size=(rows, *spec.shape[1:])).astype(np.float32)
        # Also read-only, as a decoded request arrives: the kernels are compiled here for both, so
        # serving never compiles.
        frozen = x.copy()
        frozen.flags.writeable = False
        try:
            ours, theirs = twin.predict([x])[0], reference.predict([x])[0]
            again = twin.predict([frozen])[0]
        except Exception as error:  # noqa: BLE001 (any failure means: do not use the twin)
            log.info("compiled twin not used: %s", error)
            return False
        if ours.shape != theirs.shape or not np.allclose(ours, theirs, rtol=TOLERANCE, atol=TOLERANCE):
            log.warning("compiled twin disagrees with Keras; using the compiled model")
            return False
        if not np.array_equal(ours, again):
            return False
    return True
