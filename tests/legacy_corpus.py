"""Writes the Keras 2 test corpus with tf-keras (the Keras 2 line) and the outputs tf-keras computes.

Run as a script in its own process (`python legacy_corpus.py OUTDIR`): tf-keras and Keras 3 do not share
a process well. Each model NAME becomes NAME.h5 and NAME.npz (inputs x0.., oracle outputs y0..).
Older files (Keras 2.0, CuDNN layers, wrappers without `module`) are made by h5py edits of tf-keras files
whose numbers stay the same, so tf-keras's outputs remain their oracle.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
import legacy_edits  # noqa: E402
import numpy as np  # noqa: E402
import tf_keras as k  # noqa: E402

L = k.layers


class Attention(L.Layer):
    """A user's attention pooling whose name shadows keras.layers.Attention."""

    def __init__(self, units: int = 4, **kwargs):
        super().__init__(**kwargs)
        self.units = units

    def build(self, input_shape):
        self.w = self.add_weight(name="w", shape=(input_shape[-1], self.units))
        self.v = self.add_weight(name="v", shape=(self.units, 1))

    def call(self, x):
        scores = k.backend.softmax(k.backend.dot(k.backend.tanh(k.backend.dot(x, self.w)), self.v), axis=1)
        return k.backend.sum(x * scores, axis=1)

    def get_config(self):
        return {**super().get_config(), "units": self.units}


class SeqPooling(L.Layer):
    """A user layer with no Keras namesake."""

    def call(self, x):
        return k.backend.mean(x, axis=1)


def seq(*layers) -> k.Model:
    return k.Sequential(list(layers))


def x_float(*shape: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=shape).astype("float32")


def models() -> dict[str, tuple[k.Model, list[np.ndarray]]]:
    """The tf-keras models of the corpus and the inputs their oracle outputs are computed on."""
    x = [x_float(4, 6, 3)]
    return {
        "tfkeras_lstm": (seq(L.Input((6, 3)), L.LSTM(5), L.Dense(2)), x),
        "tfkeras_gru_bidirectional": (seq(
            L.Input((6, 3)), L.GRU(4, reset_after=False, return_sequences=True),
            L.Bidirectional(L.LSTM(3)), L.Dense(1, activation="sigmoid")), x),
        "keras20_sequential": (seq(
            L.LSTM(5, recurrent_activation="hard_sigmoid", return_sequences=True,
                   batch_input_shape=(None, 6, 3)),
            L.GRU(4, reset_after=False, recurrent_activation="hard_sigmoid"), L.Dense(2)), x),
        "keras20_embedding": (seq(
            L.Embedding(20, 4, input_length=7, batch_input_shape=(None, 7)), L.LSTM(3),
            L.Dense(2, activation="softmax")),
            [np.random.default_rng(1).integers(0, 20, (4, 7)).astype("int32")]),
        "wrapped_without_module": (seq(
            L.Input((6, 3)), L.Bidirectional(L.LSTM(3, return_sequences=True)),
            L.TimeDistributed(L.Dense(2))), x),
        "cudnn": (seq(
            L.Input((6, 3), name="series"), L.LSTM(5, return_sequences=True, name="lstm"),
            L.Bidirectional(L.GRU(3, reset_after=True), name="bidirectional"), L.Dense(2, name="out")), x),
        "multi_io": (multi_io(), [x_float(4, 6, 3), x_float(4, 2, seed=1)]),
        "seq2seq": (seq2seq(), [x_float(4, 5, 3), x_float(4, 4, 2, seed=1)]),
        "custom_attention": (seq(L.Input((6, 3)), L.LSTM(4, return_sequences=True),
                                 Attention(3, name="attention"), L.Dense(1)), x),
        "custom_unknown": (seq(L.Input((6, 3)), L.LSTM(4, return_sequences=True),
                               SeqPooling(), L.Dense(1)), x),
        "lambda": (seq(L.Input((6, 3)), L.LSTM(4), L.Lambda(lambda t: t * 2.0)), x),
        **second_pass(),
    }


def second_pass() -> dict[str, tuple[k.Model, list[np.ndarray]]]:
    """The classes of real-world files the second pass serves (issue 13)."""
    ids = np.random.default_rng(2).integers(0, 30, (4, 7))
    return {
        # input_shape/input_length gave the Input Keras made the float32 default.
        "keras2_embedding_float_input": (seq(
            L.Embedding(30, 4, input_length=7, input_shape=(7,)), L.LSTM(3),
            L.Dense(2, activation="softmax")), [ids]),
        "keras215_stateful_gru": (seq(
            L.GRU(4, stateful=True, batch_input_shape=(1, None, 3)), L.Dense(2)), [x_float(5, 6, 3)]),
        "keras2_stateful_lstm_batch4": (seq(
            L.LSTM(4, stateful=True, return_sequences=True, batch_input_shape=(4, 6, 3)),
            L.TimeDistributed(L.Dense(2))), [x_float(4, 6, 3)]),
        "keras2_nested_odd_names": (nested_models(), [x_float(4, 6, 3)]),
        "keras2_layer_arguments": (layer_arguments(), [x_float(4, 12, 4)]),
        "keras2_attention": (attention(), [x_float(4, 6, 3)]),
    }


def nested_models() -> k.Model:
    """A Sequential and a functional model inside a functional one (renamed by legacy_edits to names
    TensorFlow refuses)."""
    inner_seq = k.Sequential([L.Input((6, 3)), L.Bidirectional(L.LSTM(3, return_sequences=True))],
                             name="inner_seq")
    steps = L.Input((6, 6))
    inner_fn = k.Model(steps, L.GRU(2)(steps), name="inner_fn")
    series = L.Input((6, 3), name="series_in")
    return k.Model(series, L.Dense(2, name="out_layer")(inner_fn(inner_seq(series))), name="outer")


def layer_arguments() -> k.Model:
    """Layers whose Keras 2 configs carry arguments Keras 3 refuses or renamed."""
    return seq(
        L.Input((12, 4)), L.Conv1D(8, 3, padding="causal", dilation_rate=2), L.BatchNormalization(),
        L.LeakyReLU(alpha=0.2), L.SpatialDropout1D(0.2), L.MaxPooling1D(2),
        L.SeparableConv1D(6, 2, padding="same"), L.ThresholdedReLU(0.1),
        L.DepthwiseConv1D(2, padding="same"), L.Dropout(0.3, noise_shape=(None, 1, 6), seed=3),
        L.GaussianNoise(0.1), L.LSTM(5, return_sequences=True), L.AveragePooling1D(2), L.Flatten(),
        L.RepeatVector(2), L.Reshape((3, 10)), L.GRU(3), L.Dense(2))


def attention() -> k.Model:
    """Self-attention over an LSTM's steps: the value passed by keyword, Attention's score_mode."""
    series = L.Input((6, 3), name="series")
    steps = L.LSTM(4, return_sequences=True)(series)
    attended = L.MultiHeadAttention(2, 3)(steps, steps)
    scored = L.Attention(use_scale=True)([steps, attended])
    return k.Model(series, L.Softmax()(L.Dense(3)(L.GlobalAveragePooling1D()(scored))))


def multi_io() -> k.Model:
    """Two inputs; a softmax head and a per-timestep (TimeDistributed) head."""
    series, static = L.Input((6, 3), name="series"), L.Input((2,), name="static")
    encoded = L.LSTM(4, return_sequences=True, name="encoder")(series)
    trace = L.TimeDistributed(L.Dense(2), name="trace")(encoded)
    joined = L.Concatenate()([L.LSTM(3, name="summary")(encoded), static])
    kind = L.Dense(3, activation="softmax", name="kind")(joined)
    return k.Model([series, static], [kind, trace])


def seq2seq() -> k.Model:
    """The classic encoder-decoder: the encoder's states start the decoder."""
    source, target = L.Input((5, 3), name="source"), L.Input((4, 2), name="target")
    _, h, c = L.LSTM(4, return_state=True, name="encoder")(source)
    decoded = L.LSTM(4, return_sequences=True, name="decoder")(target, initial_state=[h, c])
    return k.Model([source, target], L.TimeDistributed(L.Dense(2), name="step")(decoded))


def write(out: Path) -> None:
    k.utils.set_random_seed(7)
    for name, (model, inputs) in models().items():
        model.compile("adam", "mse", metrics=["mse"])
        _perturb_biases(model)
        outputs = _oracle(model, inputs)
        path = out / f"{name}.h5"
        model.save(path)
        np.savez(out / f"{name}.npz", **{f"x{i}": a for i, a in enumerate(inputs)},
                 **{f"y{i}": np.asarray(o) for i, o in enumerate(outputs)})
        legacy_edits.EDITS.get(name, lambda _: None)(path)


def _oracle(model: k.Model, inputs: list[np.ndarray]) -> list[np.ndarray]:
    """What the writing Keras computes; a stateful model row by row from a fresh state (its batch
    size when the file fixes one above 1), as predict after reset_states()."""
    if not any(getattr(layer, "stateful", False) for layer in model.layers):
        # Token ids given to a float32 Input as Keras 2 users gave them: as floats.
        as_written = [a.astype("float32") if a.dtype.kind == "i" and model.inputs[i].dtype == "float32"
                      else a for i, a in enumerate(inputs)]
        outputs = model(as_written if len(inputs) > 1 else as_written[0], training=False)
        return list(outputs) if isinstance(outputs, (list, tuple)) else [outputs]
    batch = model.inputs[0].shape[0]
    rows = []
    for start in range(0, len(inputs[0]), batch):
        model.reset_states()
        rows.append(np.asarray(model(inputs[0][start:start + batch], training=False)))
    return [np.concatenate(rows)]


def _perturb_biases(model: k.Model) -> None:
    # Zero biases would hide a wrongly converted bias layout; random ones expose it.
    rng = np.random.default_rng(11)
    for layer in model.layers:
        layer.set_weights([_perturbed(w, v.name, rng) for w, v in zip(layer.get_weights(), layer.weights)])


def _perturbed(value: np.ndarray, name: str, rng: np.random.Generator) -> np.ndarray:
    changed = value + rng.normal(scale=0.3, size=value.shape).astype(value.dtype)
    return np.abs(changed) + 0.1 if "moving_variance" in name else changed  # a variance stays positive


if __name__ == "__main__":
    write(Path(sys.argv[1]))
