"""Small real Keras 3 models saved as .h5, for tests that need a model of a particular shape."""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np


def save(model: keras.Model, path: Path) -> Path:
    model.save(path)
    return path


def multi_io(path: Path) -> Path:
    """Two inputs (a free-length sequence and static features), a softmax head and a sequence head."""
    keras.utils.set_random_seed(3)
    series = keras.Input((None, 3), name="series")
    static = keras.Input((4,), name="static")
    seq = keras.layers.LSTM(6, return_sequences=True, name="encoder")(series)
    summary = keras.layers.GlobalAveragePooling1D()(seq)
    joined = keras.layers.Concatenate()([summary, static])
    kind = keras.layers.Dense(3, activation="softmax", name="kind")(joined)
    trace = keras.layers.TimeDistributed(keras.layers.Dense(2), name="trace")(seq)
    return save(keras.Model([series, static], [kind, trace]), path)


def binary(path: Path) -> Path:
    """A single sigmoid unit: classes are p > 0.5."""
    keras.utils.set_random_seed(4)
    model = keras.Sequential([keras.Input((5, 2)), keras.layers.GRU(4),
                              keras.layers.Dense(1, activation="sigmoid", name="p")])
    return save(model, path)


def embedding(path: Path) -> Path:
    """Token ids in (int32), free length, masked zeros."""
    keras.utils.set_random_seed(5)
    model = keras.Sequential([keras.Input((None,), dtype="int32"),
                              keras.layers.Embedding(50, 8, mask_zero=True),
                              keras.layers.LSTM(5),
                              keras.layers.Dense(2, activation="softmax", name="dense")])
    return save(model, path)


def reference(model_path: Path, *inputs: np.ndarray) -> list[np.ndarray]:
    """What plain Keras computes for the file: the oracle for served outputs."""
    model = keras.models.load_model(model_path, compile=False)
    outputs = model(list(inputs) if len(inputs) > 1 else inputs[0], training=False)
    outputs = outputs if isinstance(outputs, (list, tuple)) else [outputs]
    return [np.asarray(out) for out in outputs]


def constant(path: Path, value: float, large: bool = False) -> Path:
    """A model that answers `value` whatever its input (a zero Dense kernel, bias `value`): versions
    whose answers tell them apart. Every value has the same architecture, so a new version compiles
    nothing. `large`: a stacked LSTM on [20, 4] too large for the twin, run on XLA by its batcher's
    thread; else one LSTM(4) step on [1, 1], served by the twin."""
    keras.utils.set_random_seed(8)
    if large:
        layers = [keras.Input((20, 4)), keras.layers.LSTM(16, return_sequences=True),
                  keras.layers.LSTM(16)]
    else:
        layers = [keras.Input((1, 1)), keras.layers.LSTM(4)]
    model = keras.Sequential([*layers, keras.layers.Dense(1, name="out")])
    dense = model.get_layer("out")
    kernel, _ = dense.get_weights()
    dense.set_weights([np.zeros_like(kernel), np.full((1,), value, np.float32)])
    path.parent.mkdir(parents=True, exist_ok=True)
    return save(model, path)


def lambda_layer(path: Path) -> Path:
    """A Lambda layer: Python bytecode in the file, refused unless code is allowed."""
    model = keras.Sequential([keras.Input((1, 1)), keras.layers.Lambda(lambda x: x * 2, name="double"),
                              keras.layers.LSTM(2), keras.layers.Dense(1)])
    return save(model, path)


# --- Models for streaming sessions: each a way a graph can (or cannot) be stepped -------------------

def stacked_free(path: Path, features: int = 3) -> Path:
    """2 x LSTM on free-length sequences: the state session's usual case."""
    keras.utils.set_random_seed(11)
    model = keras.Sequential([keras.Input((None, features)), keras.layers.LSTM(6, return_sequences=True),
                              keras.layers.Dropout(0.3), keras.layers.LSTM(5),
                              keras.layers.Dense(2, name="dense")])
    return save(model, path)


def gru_sequences(path: Path) -> Path:
    """GRU (reset_after) -> GRU (reset_after=False) -> SimpleRNN, an output at every step, softmax."""
    keras.utils.set_random_seed(12)
    model = keras.Sequential([
        keras.Input((None, 2)), keras.layers.GRU(5, return_sequences=True),
        keras.layers.GRU(4, reset_after=False, return_sequences=True),
        keras.layers.SimpleRNN(3, return_sequences=True),
        keras.layers.TimeDistributed(keras.layers.Dense(3, activation="softmax"), name="per_step")])
    return save(model, path)


def masked(path: Path) -> Path:
    """Masking (steps of zeros are skipped) before an LSTM with an output at every step."""
    keras.utils.set_random_seed(13)
    model = keras.Sequential([keras.Input((None, 2)), keras.layers.Masking(0.0),
                              keras.layers.LSTM(4, return_sequences=True),
                              keras.layers.Dense(1, name="per_step")])
    return save(model, path)


def two_sequences(path: Path) -> Path:
    """Functional: two sequence inputs joined per step, a per-step head and a final head."""
    keras.utils.set_random_seed(14)
    a, b = keras.Input((None, 2), name="a"), keras.Input((None, 3), name="b")
    joined = keras.layers.Concatenate()([keras.layers.Dense(4, activation="relu")(a), b])
    seq = keras.layers.LSTM(5, return_sequences=True, name="encoder")(joined)
    last = keras.layers.GRU(3, name="summary")(keras.layers.Add()([seq, keras.layers.Dense(5)(joined)]))
    per_step = keras.layers.TimeDistributed(keras.layers.Dense(1), name="per_step")(seq)
    final = keras.layers.Dense(2, activation="sigmoid", name="final")(last)
    return save(keras.Model([a, b], [per_step, final]), path)


def encoder_decoder(path: Path) -> Path:
    """LSTM encoder -> RepeatVector -> LSTM decoder: a 3-step horizon from each prefix."""
    keras.utils.set_random_seed(15)
    model = keras.Sequential([keras.Input((None, 1)), keras.layers.LSTM(6), keras.layers.RepeatVector(3),
                              keras.layers.LSTM(4, return_sequences=True),
                              keras.layers.TimeDistributed(keras.layers.Dense(1), name="horizon")])
    return save(model, path)


def stateful(path: Path) -> Path:
    """stateful=True, saved for one row at a time: the classic one-step-at-a-time LSTM."""
    keras.utils.set_random_seed(16)
    model = keras.Sequential([keras.Input(batch_shape=(1, 1, 2)), keras.layers.LSTM(4, stateful=True),
                              keras.layers.Dense(1)])
    return save(model, path)


def bidirectional(path: Path, timesteps: int | None = None) -> Path:
    """Needs the future: window sessions when timesteps are fixed, none when they are free."""
    keras.utils.set_random_seed(17)
    model = keras.Sequential([keras.Input((timesteps, 2)),
                              keras.layers.Bidirectional(keras.layers.LSTM(3), name="bidirectional"),
                              keras.layers.Dense(1)])
    return save(model, path)


def pooled(path: Path) -> Path:
    keras.utils.set_random_seed(18)
    model = keras.Sequential([keras.Input((None, 2)), keras.layers.LSTM(3, return_sequences=True),
                              keras.layers.GlobalAveragePooling1D(name="pool"), keras.layers.Dense(1)])
    return save(model, path)
