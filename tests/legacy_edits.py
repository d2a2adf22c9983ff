"""h5py edits that make tf-keras files look as Keras 2.0 and CuDNN-era Keras wrote them, numbers unchanged."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
from h5edit import edit_config, layer_weights, set_layer_weights, set_versions

# The runtime's own walk over a config tree; it imports no Keras, so this tf-keras process can use it.
from lstmserve.server.loading.compat.configs import layer_nodes

# What Keras 2.0 kept of a compiled model: `lr`, and metrics as bare function names.
KERAS20_TRAINING = {
    "optimizer_config": {"class_name": "Adam", "config": {
        "lr": 0.001, "beta_1": 0.9, "beta_2": 0.999, "decay": 0.0, "epsilon": 1e-08}},
    "loss": "mse", "metrics": ["mse"], "sample_weight_mode": None, "loss_weights": None,
}
CUDNN_KEYS = {
    "name", "trainable", "dtype", "batch_input_shape", "units", "kernel_initializer",
    "recurrent_initializer", "bias_initializer", "unit_forget_bias", "kernel_regularizer",
    "recurrent_regularizer", "bias_regularizer", "activity_regularizer", "kernel_constraint",
    "recurrent_constraint", "bias_constraint", "return_sequences", "return_state",
    "go_backwards", "stateful",
}


def as_keras20(path: Path) -> None:
    """Bare-list Sequential config, no InputLayer, no `module`, Keras 2.0 argument names."""
    def change(config: dict) -> dict:
        layers = [layer for layer in config["config"]["layers"] if layer["class_name"] != "InputLayer"]
        for node in layer_nodes(layers):
            node.pop("module", None)
            node.pop("registered_name", None)
            node["config"].pop("time_major", None)
            node["config"].pop("reset_after", None)
            if node["class_name"] in ("LSTM", "GRU"):
                node["config"]["implementation"] = 0
            if node["class_name"] == "GlorotUniform":
                node.update(class_name="VarianceScaling", config={
                    "scale": 1.0, "mode": "fan_avg", "distribution": "uniform", "seed": None})
        return {"class_name": "Sequential", "config": layers}
    edit_config(path, change)
    set_versions(path, "2.0.8", KERAS20_TRAINING)


def as_keras20_embedding(path: Path) -> None:
    """Keras 2.0's Embedding forced its own dtype to int32 (the dtype of its input)."""
    as_keras20(path)
    edit_config(path, lambda c: c["config"][0]["config"].update(dtype="int32"))


def without_wrapped_module(path: Path) -> None:
    def change(config: dict) -> None:
        for node in layer_nodes(config):
            if node["class_name"] in ("Bidirectional", "TimeDistributed"):
                node["config"]["layer"].pop("module", None)
                node["config"]["layer"].pop("registered_name", None)
    edit_config(path, change)


def as_cudnn(path: Path) -> None:
    """LSTM -> CuDNNLSTM and the wrapped GRU -> CuDNNGRU, with cuDNN's weight layout."""
    def change(config: dict) -> None:
        lstm, bidirectional = config["config"]["layers"][1], config["config"]["layers"][2]
        _to_cudnn(lstm, "CuDNNLSTM")
        _to_cudnn(bidirectional["config"]["layer"], "CuDNNGRU")
    edit_config(path, change)
    lstm = _cudnn_weights(layer_weights(path, "lstm"), 4, split_bias=True)
    set_layer_weights(path, "lstm", _names("cu_dnnlstm_1"), lstm)
    forward_backward = layer_weights(path, "bidirectional")
    gru = [*_cudnn_weights(forward_backward[:3], 3, split_bias=False),
           *_cudnn_weights(forward_backward[3:], 3, split_bias=False)]
    names = [*_names("bidirectional/forward_cu_dnngru_1"), *_names("bidirectional/backward_cu_dnngru_1")]
    set_layer_weights(path, "bidirectional", names, gru)
    set_versions(path, "2.2.4")


def _to_cudnn(node: dict, class_name: str) -> None:
    node["class_name"] = class_name
    node.pop("module", None)
    node["config"] = {key: value for key, value in node["config"].items() if key in CUDNN_KEYS}


def _cudnn_weights(weights: list[np.ndarray], gates: int, split_bias: bool) -> list[np.ndarray]:
    """Keras 2's own conversion (hdf5_format._convert_rnn_weights), run from LSTM/GRU to cuDNN."""
    kernel, recurrent, bias = weights
    kernel = np.hstack([k.T.reshape(k.shape, order="C") for k in np.hsplit(kernel, gates)])
    recurrent = np.hstack([k.T for k in np.hsplit(recurrent, gates)])
    bias = np.tile(0.5 * bias, 2) if split_bias else bias.reshape(-1)
    return [kernel, recurrent, bias]


def _names(prefix: str) -> list[str]:
    return [f"{prefix}/{suffix}" for suffix in ("kernel:0", "recurrent_kernel:0", "bias:0")]


# Names Keras 2.10 and older let models and layers carry, and TensorFlow graphs refuse.
ODD_NAMES = {"inner_seq": "BiLSTM Model v0.2.0>bilstm_model_64", "inner_fn": "GRU:encoder",
             "series_in": "series (scaled)", "out_layer": "next value", "outer": "my model"}


def with_odd_names(path: Path) -> None:
    """Rename layers in the config (every reference is the name as a JSON string) and their weight groups."""
    with h5py.File(path, "a") as h5:
        text = h5.attrs["model_config"]
        for old, new in ODD_NAMES.items():
            text = text.replace(json.dumps(old), json.dumps(new))
        h5.attrs["model_config"] = text
        weights = h5["model_weights"]
        names = [n.decode() if isinstance(n, bytes) else n for n in weights.attrs["layer_names"]]
        for old in names:
            if old in ODD_NAMES:
                weights.move(old, ODD_NAMES[old])
        weights.attrs["layer_names"] = [ODD_NAMES.get(n, n).encode() for n in names]
    set_versions(path, "2.10.0")


def as_tf1_keras(path: Path) -> None:
    """tf.keras under TensorFlow 1.x stored each initializer's dtype."""
    def change(config: dict) -> None:
        for node in layer_nodes(config):
            if node.get("module") == "keras.initializers":
                node["config"]["dtype"] = "float32"
    edit_config(path, change)
    set_versions(path, "2.2.4-tf")


EDITS = {
    "keras20_sequential": as_keras20,
    "keras20_embedding": as_keras20_embedding,
    "wrapped_without_module": without_wrapped_module,
    "cudnn": as_cudnn,
    "keras215_stateful_gru": lambda path: set_versions(path, "2.15.0"),
    "keras2_nested_odd_names": with_odd_names,
    "keras2_layer_arguments": as_tf1_keras,
}
