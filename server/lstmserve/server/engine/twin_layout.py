"""Which models a compiled twin can run, and their weights packed for it: Keras and numpy only, no numba.

A server only imports numba (and compiles or loads the twin's kernels) once a model fits: a plain
Sequential stack of LSTM / GRU / SimpleRNN / Dense / Dropout with stock activations, one float32
input of fixed shape, and a full batch within BUDGET_FLOPS. engine/twin.py holds the kernels.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import keras
import numpy as np

from lstmserve.server.specs import TensorSpec

# The twin runs on the server's event loop. A model whose largest batch needs more arithmetic than
# this stays on the compiled engine's worker thread, so health and metadata never wait on it.
# Counted, not timed, so the choice does not depend on the machine's load. Measured on 64 rows: an
# LSTM(12) on 20 steps of 2 features (bound 1.9 MFLOP) takes 1.0-1.6 ms, an LSTM(16) on 30 steps of 4
# (5.2 MFLOP) 2.1-3.0 ms. Larger models lose little by leaving: XLA takes a few tenths of a millisecond
# at one row, on the model's own thread, and is faster at 64.
BUDGET_FLOPS = 2e6

LINEAR, TANH, SIGMOID, RELU, SOFTMAX = range(5)
# Keyed by the Keras function object itself, so a replaced activation (a compatibility shim, a
# user's function of the same name) is never mistaken for the stock one.
ACTIVATIONS: dict[Callable, int] = {
    keras.activations.linear: LINEAR,
    keras.activations.tanh: TANH,
    keras.activations.sigmoid: SIGMOID,
    keras.activations.relu: RELU,
    keras.activations.softmax: SOFTMAX,
}

# A layer of the stack as one row of the program: what it is, its activations, its width, its flags and
# where its weights start in the one flat weight array. One compiled call then runs the whole stack.
DENSE, LSTM, GRU, SIMPLE_RNN = range(4)
SEQUENCES, RESET_AFTER = 1, 2
KIND, ACTIVATION, RECURRENT, UNITS, FLAGS, OFFSET = range(6)


@dataclass(frozen=True)
class TwinLayout:
    """A stack as the kernels take it: one flat float32 weight array and one int64 row per layer."""

    weights: np.ndarray
    program: np.ndarray
    output_steps: bool
    spec: TensorSpec


def twin_layout(keras_model, inputs: Sequence[TensorSpec], max_batch: int) -> TwinLayout | None:
    """The packed stack, or None for anything the kernels do not run (numba is not needed to say)."""
    if not isinstance(keras_model, keras.Sequential) or len(inputs) != 1:
        return None
    spec = inputs[0]
    if spec.dtype != np.float32 or len(spec.shape) not in (2, 3) or None in spec.shape[1:]:
        return None
    if _flops_bound(keras_model, spec, max_batch) > BUDGET_FLOPS:
        return None
    rows, parts, offset = [], [], 0
    output_steps = len(spec.shape) == 3
    for layer in keras_model.layers:
        if type(layer) is keras.layers.Dropout:
            continue
        packed = _pack(layer)
        if packed is None:
            return None
        row, weights = packed
        rows.append([*row, offset])
        parts.extend(weights)
        offset += sum(w.size for w in weights)
        if row[KIND] != DENSE:
            output_steps = bool(row[FLAGS] & SEQUENCES)
    if not rows:
        return None
    weights = np.concatenate([w.ravel() for w in parts]).astype(np.float32)
    return TwinLayout(weights, np.array(rows, np.int64), output_steps, spec)


def _flops_bound(keras_model, spec: TensorSpec, rows: int) -> float:
    """An upper bound on a full batch's multiply-adds: every weight used at every timestep."""
    timesteps = spec.shape[1] if len(spec.shape) == 3 else 1
    weights = sum(int(np.prod(w.shape)) for w in keras_model.weights)
    return 2.0 * weights * rows * timesteps


def _pack(layer) -> tuple[list[int], list[np.ndarray]] | None:
    """(kind, activation, recurrent activation, units, flags) and the weights in the kernels' order."""
    kind = type(layer)
    if kind is keras.layers.Dense:
        activation = ACTIVATIONS.get(layer.activation)
        if activation is None:
            return None
        kernel = np.asarray(layer.kernel)
        bias = np.asarray(layer.bias) if layer.use_bias else np.zeros(kernel.shape[1], np.float32)
        return [DENSE, activation, LINEAR, kernel.shape[1], 0], [kernel, bias]
    if kind in (keras.layers.LSTM, keras.layers.GRU, keras.layers.SimpleRNN):
        return _pack_recurrent(layer)
    return None


def _pack_recurrent(layer) -> tuple[list[int], list[np.ndarray]] | None:
    cell = layer.cell
    if layer.go_backwards or layer.stateful or layer.return_state or getattr(layer, "unroll", False):
        return None
    activation = ACTIVATIONS.get(cell.activation)
    recurrent = ACTIVATIONS.get(getattr(cell, "recurrent_activation", keras.activations.linear))
    if activation in (None, SOFTMAX) or recurrent in (None, SOFTMAX):
        return None
    kind, gates = {keras.layers.LSTM: (LSTM, 4), keras.layers.GRU: (GRU, 3),
                   keras.layers.SimpleRNN: (SIMPLE_RNN, 1)}[type(layer)]
    flags = SEQUENCES if layer.return_sequences else 0
    weights = [np.asarray(cell.kernel), np.asarray(cell.recurrent_kernel)]
    width = gates * cell.units
    if kind == GRU:
        if not cell.use_bias:
            return None
        bias = np.asarray(cell.bias)
        if cell.reset_after:
            flags |= RESET_AFTER
            weights += [bias[0], bias[1]]
        else:
            weights += [bias, np.zeros(width, np.float32)]
    else:
        weights.append(np.asarray(cell.bias) if cell.use_bias else np.zeros(width, np.float32))
    return [kind, activation, recurrent, cell.units, flags], weights
