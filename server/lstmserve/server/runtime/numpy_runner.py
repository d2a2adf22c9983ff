"""A numpy twin of small recurrent stacks, for models so small that TensorFlow's call costs more than they do.

The seed model (LSTM(10) on one step, then Dense(1)) computes in microseconds, yet each TensorFlow call
wakes executor threads that cost 0.1-0.3 ms apiece on a cold, shared machine. For plain Sequential
stacks of LSTM / GRU / SimpleRNN / Dense / Dropout with stock activations, the same arithmetic in numpy
answers in tens of microseconds on the caller's thread. `build_numpy_runner` only returns a runner
that reproduces the compiled model on random inputs within float32 tolerance; anything else keeps
the compiled runner.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

import keras
import numpy as np

from lstmserve.server.runtime.signature import TensorSpec

log = logging.getLogger(__name__)

TOLERANCE = 1e-5
SELF_CHECK_ROWS = (1, 3, 64)
# The twin runs on the server's event loop. A model whose largest batch needs more arithmetic than
# this (about a millisecond of numpy) stays on the compiled runner's worker thread, so health and
# metadata never wait on it. Counted, not timed, so the choice does not depend on the machine's load.
BUDGET_FLOPS = 20e6


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


# Keyed by the Keras function object itself, so a replaced activation (a compatibility shim, a
# user's function of the same name) is never mistaken for the stock one.
ACTIVATIONS: dict[Callable, Callable[[np.ndarray], np.ndarray]] = {
    keras.activations.linear: lambda x: x,
    keras.activations.tanh: np.tanh,
    keras.activations.sigmoid: _sigmoid,
    keras.activations.relu: lambda x: np.maximum(x, 0),
    keras.activations.softmax: _softmax,
}


class NumpyRunner:
    """Runs a Sequential recurrent stack with numpy; thread-safe (no shared mutable state)."""

    runs_on_caller_thread = True

    def __init__(self, steps: list[Callable[[np.ndarray], np.ndarray]], max_batch: int) -> None:
        self._steps = steps
        self.max_batch = max_batch

    def run(self, arrays: Sequence[np.ndarray]) -> list[np.ndarray]:
        x = arrays[0]
        for step in self._steps:
            x = step(x)
        return [x.astype(np.float32, copy=False)]


def build_numpy_runner(keras_model, inputs: Sequence[TensorSpec], reference,
                       max_batch: int) -> NumpyRunner | None:
    """A NumpyRunner equal to `reference` (the compiled runner); None for anything but a plain stack."""
    if not isinstance(keras_model, keras.Sequential) or len(inputs) != 1:
        return None
    if inputs[0].dtype != np.float32 or any(dim is None for dim in inputs[0].shape[1:]):
        return None
    steps = []
    for layer in keras_model.layers:
        step = _step_for(layer)
        if step is None:
            return None
        if step is not _skip:
            steps.append(step)
    if _flops_bound(keras_model, inputs[0], max_batch) > BUDGET_FLOPS:
        return None
    runner = NumpyRunner(steps, max_batch)
    return runner if _agrees(runner, reference, inputs[0]) else None


def _flops_bound(keras_model, spec: TensorSpec, rows: int) -> float:
    """An upper bound on a full batch's multiply-adds: every weight used at every timestep."""
    timesteps = spec.shape[1] if len(spec.shape) == 3 else 1
    weights = sum(int(np.prod(w.shape)) for w in keras_model.weights)
    return 2.0 * weights * rows * timesteps


def _skip(x: np.ndarray) -> np.ndarray:
    return x


def _step_for(layer) -> Callable[[np.ndarray], np.ndarray] | None:
    kind = type(layer)
    if kind is keras.layers.Dropout:
        return _skip
    if kind is keras.layers.Dense:
        return _dense(layer)
    if kind in (keras.layers.LSTM, keras.layers.GRU, keras.layers.SimpleRNN):
        return _recurrent(layer)
    return None


def _dense(layer) -> Callable[[np.ndarray], np.ndarray] | None:
    activation = ACTIVATIONS.get(layer.activation)
    if activation is None:
        return None
    kernel = np.asarray(layer.kernel)
    bias = np.asarray(layer.bias) if layer.use_bias else np.zeros(kernel.shape[1], np.float32)
    return lambda x: activation(x @ kernel + bias)


def _recurrent(layer) -> Callable[[np.ndarray], np.ndarray] | None:
    cell = layer.cell
    if layer.go_backwards or layer.stateful or layer.return_state or getattr(layer, "unroll", False):
        return None
    activation = ACTIVATIONS.get(cell.activation)
    recurrent = ACTIVATIONS.get(getattr(cell, "recurrent_activation", keras.activations.linear))
    if activation is None or recurrent is None:
        return None
    step = _cell_step(layer, cell, activation, recurrent)
    if step is None:
        return None
    return lambda x: _unroll(x, step, layer.return_sequences)


def _unroll(x, step, return_sequences) -> np.ndarray:
    state = None  # zeros: every step function takes None for the zero state it starts from
    outputs = []
    for t in range(x.shape[1]):
        state = step(x[:, t, :], state)
        if return_sequences:
            outputs.append(state[0])
    return np.stack(outputs, axis=1) if return_sequences else state[0]


def _cell_step(layer, cell, activation, recurrent):
    kernel = np.asarray(cell.kernel)
    recurrent_kernel = np.asarray(cell.recurrent_kernel)
    units = cell.units
    if isinstance(layer, keras.layers.LSTM):
        bias = np.asarray(cell.bias) if cell.use_bias else np.zeros(4 * units, np.float32)
        if activation is np.tanh and recurrent is _sigmoid:
            return _stock_lstm_step(kernel, recurrent_kernel, bias, units)
        return _lstm_step(kernel, recurrent_kernel, bias, units, activation, recurrent)
    if isinstance(layer, keras.layers.GRU):
        return _gru_step(cell, kernel, recurrent_kernel, units, activation, recurrent)
    bias = np.asarray(cell.bias) if cell.use_bias else np.zeros(units, np.float32)

    def step(x, state):
        z = x @ kernel + bias
        return [activation(z if state is None else z + state[0] @ recurrent_kernel)]
    return step


def _stock_lstm_step(kernel, recurrent_kernel, bias, units):
    """The sigmoid/tanh LSTM in half the numpy calls: one tanh over all four gates.

    sigmoid(z) = 0.5 * tanh(z / 2) + 0.5, so the input, forget and output gates' columns are halved
    once here and moved in front of the candidate's; each step then takes a single tanh of z."""
    i, f, g, o = (slice(k * units, (k + 1) * units) for k in range(4))
    order = np.r_[i, f, o, g]
    scale = np.r_[np.full(3 * units, 0.5, np.float32), np.ones(units, np.float32)]
    kernel, recurrent_kernel, bias = (w[..., order] * scale for w in (kernel, recurrent_kernel, bias))
    sigmoids = 3 * units

    def step(x, state):
        z = x @ kernel
        if state is not None:
            z += state[0] @ recurrent_kernel
        z += bias
        np.tanh(z, out=z)
        gates = z[:, :sigmoids]
        gates *= 0.5
        gates += 0.5
        c = gates[:, :units] * z[:, sigmoids:]  # input gate * candidate
        if state is not None:
            c += gates[:, units:2 * units] * state[1]  # forget gate * previous cell
        return [gates[:, 2 * units:] * np.tanh(c), c]
    return step


def _lstm_step(kernel, recurrent_kernel, bias, units, activation, recurrent):
    def step(x, state):
        z = x @ kernel + bias
        if state is not None:
            z += state[0] @ recurrent_kernel
        c = recurrent(z[:, :units]) * activation(z[:, 2 * units:3 * units])
        if state is not None:
            c += recurrent(z[:, units:2 * units]) * state[1]
        return [recurrent(z[:, 3 * units:]) * activation(c), c]
    return step


def _gru_step(cell, kernel, recurrent_kernel, units, activation, recurrent):
    if not cell.use_bias:
        return None
    bias = np.asarray(cell.bias)
    if cell.reset_after:
        input_bias, recurrent_bias = bias[0], bias[1]
    else:
        input_bias, recurrent_bias = bias, np.zeros(3 * units, np.float32)

    def step(x, state):
        h = np.zeros((x.shape[0], units), np.float32) if state is None else state[0]
        xz = x @ kernel + input_bias
        if cell.reset_after:
            hz = h @ recurrent_kernel + recurrent_bias
            z = recurrent(xz[:, :units] + hz[:, :units])
            r = recurrent(xz[:, units:2 * units] + hz[:, units:2 * units])
            candidate = activation(xz[:, 2 * units:] + r * hz[:, 2 * units:])
        else:
            hz = h @ recurrent_kernel[:, :2 * units]
            z = recurrent(xz[:, :units] + hz[:, :units])
            r = recurrent(xz[:, units:2 * units] + hz[:, units:])
            candidate = activation(xz[:, 2 * units:] + (r * h) @ recurrent_kernel[:, 2 * units:])
        return [z * h + (1 - z) * candidate]
    return step


def _agrees(runner: NumpyRunner, reference, spec: TensorSpec) -> bool:
    """Equal to the compiled model on random inputs at several batch sizes, or not used at all."""
    rng = np.random.default_rng(0)
    for rows in SELF_CHECK_ROWS:
        x = rng.normal(size=(rows, *spec.shape[1:])).astype(np.float32)
        try:
            ours, theirs = runner.run([x])[0], reference.run([x])[0]
        except Exception as error:  # noqa: BLE001 (any failure means: do not use the twin)
            log.info("numpy twin not used: %s", error)
            return False
        if ours.shape != theirs.shape or not np.allclose(ours, theirs, rtol=TOLERANCE, atol=TOLERANCE):
            log.warning("numpy twin disagrees with the compiled model; using the compiled model")
            return False
    return True
