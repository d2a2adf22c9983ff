"""Rewrites of legacy Keras 2 model configs into what Keras 3 builds, each step naming the layers it touched.

Every rewrite keeps the computation the writing Keras performed; the weight layouts that change with a
rewrite (CuDNN layers) are listed for the weight loader in `Translation.weight_layouts`.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from lstmserve.server.errors import ModelLoadError

RNN_CLASSES = {"LSTM", "GRU", "SimpleRNN", "RNN", "CuDNNLSTM", "CuDNNGRU", "Bidirectional"}
WRAPPERS = {"Bidirectional", "TimeDistributed"}
# CuDNN kernels compute LSTM/GRU with fixed activations and, for GRU, the reset gate after the matmul.
CUDNN_AS_NATIVE = {
    "CuDNNLSTM": ("LSTM", {"activation": "tanh", "recurrent_activation": "sigmoid"}),
    "CuDNNGRU": ("GRU", {"activation": "tanh", "recurrent_activation": "sigmoid", "reset_after": True}),
}
INT_DTYPES = {"int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64"}


@dataclass
class Translation:
    """A config Keras 3 can build, the steps applied, and file layers whose weights need converting."""

    config: dict[str, Any]
    steps: list[str] = field(default_factory=list)
    # h5 layer group name -> "CuDNNLSTM" / "CuDNNGRU": the layout its weights were saved in.
    weight_layouts: dict[str, str] = field(default_factory=dict)

    def record(self, names: list[str], what: str) -> None:
        if names:
            self.steps.append(f"{what}: {', '.join(names)}")


def translate_config(model_config: dict[str, Any]) -> Translation:
    """Apply every config rewrite, in order; the input is left untouched."""
    translation = Translation(copy.deepcopy(model_config))
    for rewrite in REWRITES:
        rewrite(translation)
    return translation


def layer_nodes(node: Any) -> Iterator[dict[str, Any]]:
    """Every {class_name, config: dict} in a config tree, outermost first (initialisers included)."""
    return _nodes(node, lambda n: isinstance(n.get("config"), dict))


def _sequentials(node: Any) -> Iterator[dict[str, Any]]:
    # Not layer_nodes: a Keras 2.0 Sequential's config is a list.
    return _nodes(node, lambda n: n["class_name"] == "Sequential" and "config" in n)


def _nodes(node: Any, keep: Callable[[dict[str, Any]], bool]) -> Iterator[dict[str, Any]]:
    if isinstance(node, dict):
        if isinstance(node.get("class_name"), str) and keep(node):
            yield node
        for value in node.values():
            yield from _nodes(value, keep)
    elif isinstance(node, list):
        for item in node:
            yield from _nodes(item, keep)


def _name(node: dict[str, Any]) -> str:
    return f"{node['class_name']} '{node['config'].get('name', '?')}'"


def sequential_from_list(t: Translation) -> None:
    """Keras 2.0/2.1 stored a Sequential's config as the bare list of its layers."""
    touched = []
    for node in _sequentials(t.config):
        if isinstance(node["config"], list):
            node["config"] = {"name": node.get("name", "sequential"), "layers": node["config"]}
            touched.append(f"Sequential '{node['config']['name']}'")
    t.record(touched, "Keras 2.0/2.1 layer-list Sequential config wrapped as {name, layers}")


def input_layer_from_batch_input_shape(t: Translation) -> None:
    """Give each Sequential an explicit InputLayer (keras issue 20106: Keras 3 reads the batch axis of
    `batch_input_shape` as a timestep axis and rebuilds the model with the wrong rank)."""
    touched = []
    for node in _sequentials(t.config):
        layers = node["config"]["layers"]
        first = layers[0]["config"] if layers else {}
        if layers and layers[0]["class_name"] != "InputLayer" and "batch_input_shape" in first:
            dtype = first.get("dtype") if isinstance(first.get("dtype"), str) else "float32"
            layers.insert(0, {"class_name": "InputLayer", "config": {
                "batch_shape": first.pop("batch_input_shape"), "dtype": dtype,
                "name": f"{first.get('name', 'layer')}_input"}})
            touched.append(_name(layers[1]))
    t.record(touched, "InputLayer made from the first layer's batch_input_shape (keras issue 20106)")
    for node in layer_nodes(t.config):
        if node["class_name"] == "InputLayer" and "batch_input_shape" in node["config"]:
            node["config"]["batch_shape"] = node["config"].pop("batch_input_shape")


def drop_time_major(t: Translation) -> None:
    """Keras <= 2.15 wrote `time_major` into every RNN config; Keras 3 has no such argument."""
    touched = []
    for node in layer_nodes(t.config):
        if "time_major" not in node["config"]:
            continue
        if node["config"].pop("time_major"):
            raise ModelLoadError(
                f"{_name(node)} was saved with time_major=True (inputs [timesteps, batch, features]); "
                "Keras 3 and lstmserve take [batch, timesteps, features]: re-save it with time_major=False"
            )
        touched.append(_name(node))
    t.record(touched, "time_major=False removed (Keras 2 RNN argument unknown to Keras 3)")


def module_for_wrapped_layers(t: Translation) -> None:
    """A wrapper's inner layer is looked up through its `module`; older files stored none."""
    touched = []
    for node in layer_nodes(t.config):
        inner = node["config"].get("layer") if node["class_name"] in WRAPPERS else None
        if isinstance(inner, dict) and "module" not in inner:
            inner["module"] = "keras.layers"
            inner.setdefault("registered_name", None)
            touched.append(f"{_name(node)} > {_name(inner)}")
    t.record(touched, "module 'keras.layers' given to wrapped layers stored without one")


def float_embeddings(t: Translation) -> None:
    """Keras 2.0 set an Embedding's dtype to its input's int32; Keras 3 would make int32 embeddings."""
    touched = []
    for node in layer_nodes(t.config):
        dtype = node["config"].get("dtype")  # Keras 3 writes a DTypePolicy dict here
        if node["class_name"] == "Embedding" and isinstance(dtype, str) and dtype in INT_DTYPES:
            node["config"]["dtype"] = "float32"
            touched.append(_name(node))
    t.record(touched, "Embedding dtype int32 set to float32 (the input stays integer)")


def drop_embedding_input_length(t: Translation) -> None:
    """Keras 2's `input_length` only fed the first layer's batch_input_shape; Keras 3 warns and ignores it."""
    touched = [_name(node) for node in layer_nodes(t.config)
               if node["class_name"] == "Embedding" and node["config"].pop("input_length", None) is not None]
    t.record(touched, "Embedding input_length removed (the input shape already carries it)")


def gru_reset_before(t: Translation) -> None:
    """Keras 2.0 GRUs stored no `reset_after`: they applied the reset gate before the matmul."""
    touched = []
    for node in layer_nodes(t.config):
        if node["class_name"] in ("GRU", "GRUCell") and "reset_after" not in node["config"]:
            node["config"]["reset_after"] = False
            touched.append(_name(node))
    t.record(touched, "GRU without reset_after built as reset_after=False (Keras 2.0 GRU, bias 3*units)")


def cudnn_as_native(t: Translation) -> None:
    """CuDNNLSTM/CuDNNGRU compute a plain LSTM/GRU; only their weight layout differs."""
    touched = []
    for owner, node in _layers_with_owner(t.config):
        if node["class_name"] in CUDNN_AS_NATIVE:
            if owner not in (node["config"].get("name"), *_wrapper_names(t.config, node)):
                # The weight converter reads whole (kernel, recurrent, bias) groups of one layer.
                raise ModelLoadError(f"{_name(node)} sits inside the nested model '{owner}'; "
                                     "lstmserve converts CuDNN weights of top-level layers only")
            native, fixed = CUDNN_AS_NATIVE[node["class_name"]]
            t.weight_layouts[owner] = node["class_name"]
            touched.append(f"{_name(node)} -> {native}")
            node["class_name"] = native
            node["config"].update(fixed)
    t.record(touched, "CuDNN layer built as its native twin, weights converted from cuDNN layout")


def _layers_with_owner(config: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """Each model-level layer node (the owner of an h5 weight group) and the layer nodes inside it."""
    for layer in _model_layers(config):
        owner = layer["config"].get("name", "")
        for node in layer_nodes(layer):
            yield owner, node


def _wrapper_names(config: dict[str, Any], inner: dict[str, Any]) -> list[str]:
    return [layer["config"].get("name", "") for layer in _model_layers(config)
            if layer["class_name"] in WRAPPERS and layer["config"].get("layer") is inner]


def _model_layers(config: dict[str, Any]) -> list[dict[str, Any]]:
    layers = config.get("config", {}).get("layers") if isinstance(config.get("config"), dict) else None
    return [layer for layer in layers or [] if isinstance(layer, dict)]


def rnn_states_as_keywords(t: Translation) -> None:
    """Keras 2 listed an RNN's initial states as extra inbound tensors; Keras 3 takes `initial_state=`."""
    touched = []
    for layer in _model_layers(t.config):
        if layer["class_name"] not in RNN_CLASSES:
            continue
        nodes = layer.get("inbound_nodes") or []
        for index, node in enumerate(nodes):
            if isinstance(node, list) and len(node) > 1:
                nodes[index] = {"args": [_tensor(node[0])],
                                "kwargs": {"initial_state": [_tensor(ref) for ref in node[1:]]}}
                touched.append(_name(layer))
    t.record(touched, "initial states passed as extra inputs turned into initial_state=")


def _tensor(ref: list) -> dict[str, Any]:
    # The shape is a placeholder: Keras 3 swaps the tensor for the named layer's real output.
    return {"class_name": "__keras_tensor__",
            "config": {"shape": [], "dtype": "float32", "keras_history": list(ref[:3])}}


REWRITES: tuple[Callable[[Translation], None], ...] = (
    sequential_from_list, input_layer_from_batch_input_shape, drop_time_major,
    module_for_wrapped_layers, cudnn_as_native, float_embeddings, drop_embedding_input_length,
    gru_reset_before,
    rnn_states_as_keywords,
)
