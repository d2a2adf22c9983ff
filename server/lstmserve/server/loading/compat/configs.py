"""Rewrites of legacy Keras 2 model configs into what Keras 3 builds, each step naming the layers it touched.

Every rewrite keeps the computation the writing Keras performed; the weight layouts that change with a
rewrite (CuDNN layers) are listed for the weight loader in `Translation.weight_layouts`, renamed layers
in `Translation.renamed`. Layer arguments are in arguments.py, names in names.py.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from typing import Any

from lstmserve.server.errors import ModelLoadError
from lstmserve.server.loading.compat.arguments import ARGUMENT_REWRITES
from lstmserve.server.loading.compat.names import sanitize_names
from lstmserve.server.loading.compat.tree import (
    MODEL_CLASSES,
    Translation,
    functional_models,
    keras_histories,
    layer_nodes,
    legacy_refs,
    model_layers,
    nodes,
)
from lstmserve.server.loading.compat.tree import describe as _name

__all__ = ["Translation", "layer_nodes", "translate_config"]

RNN_CLASSES = {"LSTM", "GRU", "SimpleRNN", "RNN", "CuDNNLSTM", "CuDNNGRU", "Bidirectional"}
WRAPPERS = {"Bidirectional", "TimeDistributed"}
# CuDNN kernels compute LSTM/GRU with fixed activations and, for GRU, the reset gate after the matmul.
CUDNN_AS_NATIVE = {
    "CuDNNLSTM": ("LSTM", {"activation": "tanh", "recurrent_activation": "sigmoid"}),
    "CuDNNGRU": ("GRU", {"activation": "tanh", "recurrent_activation": "sigmoid", "reset_after": True}),
}
INT_DTYPES = {"int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64"}
FLOAT_DTYPES = {"float16", "bfloat16", "float32", "float64"}


def translate_config(model_config: dict[str, Any]) -> Translation:
    """Apply every config rewrite, in order; the input is left untouched."""
    translation = Translation(copy.deepcopy(model_config))
    for rewrite in REWRITES:
        rewrite(translation)
    return translation


def _sequentials(node: Any) -> Iterator[dict[str, Any]]:
    # Not layer_nodes: a Keras 2.0 Sequential's config is a list.
    return nodes(node, lambda n: n["class_name"] == "Sequential" and "config" in n)


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
    for layer in model_layers(config):
        owner = layer["config"].get("name", "")
        for node in layer_nodes(layer):
            yield owner, node


def _wrapper_names(config: dict[str, Any], inner: dict[str, Any]) -> list[str]:
    return [layer["config"].get("name", "") for layer in model_layers(config)
            if layer["class_name"] in WRAPPERS and layer["config"].get("layer") is inner]


def rnn_states_as_keywords(t: Translation) -> None:
    """Keras 2 listed an RNN's initial states as extra inbound tensors; Keras 3 takes `initial_state=`."""
    touched = []
    for layer in model_layers(t.config):
        if layer["class_name"] not in RNN_CLASSES:
            continue
        inbound = layer.get("inbound_nodes") or []
        for index, node in enumerate(inbound):
            if isinstance(node, list) and len(node) > 1:
                inbound[index] = {"args": [_tensor(node[0])],
                                "kwargs": {"initial_state": [_tensor(ref) for ref in node[1:]]}}
                touched.append(_name(layer))
    t.record(touched, "initial states passed as extra inputs turned into initial_state=")


def tensors_in_keywords(t: Translation) -> None:
    """Keras 2 wrote a tensor passed by keyword (MultiHeadAttention's value=) as a bare [layer, node,
    tensor] list, which Keras 3's legacy reader hands to the layer as a list; it needs a tensor."""
    touched = []
    for model in functional_models(t.config):
        for layer in model_layers(model):
            inbound = layer.get("inbound_nodes") or []
            for index, node in enumerate(inbound):
                if not (isinstance(node, list) and len(node) == 1 and len(node[0]) == 4
                        and isinstance(node[0][3], dict)):
                    continue
                keywords = node[0][3]
                if any(_is_ref(value) for value in keywords.values()):
                    inbound[index] = {"args": [_tensor(node[0])], "kwargs": {
                        key: _tensor(value) if _is_ref(value) else value for key, value in keywords.items()}}
                    touched.append(_name(layer))
    t.record(touched, "tensors passed by keyword (Keras 2 [layer, node, tensor] lists) made tensors")


def _is_ref(value: Any) -> bool:
    return next(legacy_refs(value), None) is value


def _tensor(ref: list) -> dict[str, Any]:
    # The shape is a placeholder: Keras 3 swaps the tensor for the named layer's real output.
    return {"class_name": "__keras_tensor__",
            "config": {"shape": [], "dtype": "float32", "keras_history": list(ref[:3])}}


def nested_model_node_indices(t: Translation) -> None:
    """Keras 2 counted a nested model's own construction as its node 0, so a file numbers the calls of
    a nested model inside another from 1 (tf-keras functional._should_skip_first_node); Keras 3 numbers
    them from 0, and subtracts the 1 itself only for outputs that are functional models."""
    touched = []
    for model in functional_models(t.config):
        layers = model_layers(model)
        if not all(isinstance(node, list) for layer in layers for node in layer.get("inbound_nodes") or []):
            continue  # written by Keras 3
        refs = [ref for layer in layers for ref in legacy_refs(layer.get("inbound_nodes"))]
        outputs = list(legacy_refs(model["config"].get("output_layers")))
        for layer in layers:
            if layer["class_name"] in MODEL_CLASSES and _shift_calls(layer, refs, outputs):
                touched.append(_name(layer))
    t.record(touched, "calls of nested models renumbered from 0 (Keras 2 counted the model's own "
             "construction as its first node)")


def _shift_calls(layer: dict[str, Any], refs: list[list], outputs: list[list]) -> bool:
    name = layer.get("name") or layer["config"].get("name")
    inbound = [ref for ref in refs if ref[0] == name]
    outbound = [ref for ref in outputs if ref[0] == name]
    if not _skips_first_node(layer, [ref[1] for ref in inbound + outbound]):
        return False
    for ref in inbound + (outbound if layer["class_name"] == "Sequential" else []):
        ref[1] -= 1
    return True


def _skips_first_node(layer: dict[str, Any], indices: list[int]) -> bool:
    """Whether the file numbered this nested model's calls from 1: certain when an index reaches past
    its calls or one is 0; otherwise Keras 2's own rule (functional models, and Sequential models built
    with an input)."""
    calls = len(layer.get("inbound_nodes") or [])
    if not indices:
        return False
    if max(indices) >= calls:
        return True
    if min(indices) == 0:
        return False
    if layer["class_name"] != "Sequential":
        return True
    first = (model_layers(layer) or [{}])[0]
    return first.get("class_name") == "InputLayer" or "batch_input_shape" in first.get("config", {})


def stateful_as_fresh_state(t: Translation) -> None:
    """A stateful RNN carries its state from one batch to the next, which no served request can own;
    built stateless, each request row starts from a zero state, as Keras predict after reset_states()."""
    touched = []
    for node in layer_nodes(t.config):
        if node["config"].get("stateful") is True:
            node["config"]["stateful"] = False
            touched.append(_name(node))
    t.stateful.extend(touched)
    t.record(touched, "stateful=True served on a fresh state for every request row (as Keras predict "
             "after reset_states())")


def integer_token_inputs(t: Translation) -> None:
    """A float input that feeds only Embedding layers carries token ids (Keras 2 gave the Input it made
    from input_shape/input_length the float32 default). Built int32, it takes the ids clients hold;
    Embedding casts to int32 either way, so the lookups are the same (exact past 2^24, where float32
    ids were not)."""
    touched = []
    for input_layer, consumers in _top_level_inputs(t.config):
        dtype = input_layer["config"].get("dtype")
        if (isinstance(dtype, str) and dtype in FLOAT_DTYPES and consumers
                and all(layer["class_name"] == "Embedding" for layer in consumers)):
            input_layer["config"]["dtype"] = "int32"
            touched.append(f"{_name(input_layer)} ({dtype} in the file) -> "
                           + ", ".join(_name(layer) for layer in consumers))
    t.record(touched, "input built int32 for integer token ids (it feeds only Embedding layers)")


def _top_level_inputs(config: dict[str, Any]) -> Iterator[tuple[dict[str, Any], list[dict[str, Any]]]]:
    """The served model's InputLayers, each with the layers that consume it."""
    layers = model_layers(config)
    if config.get("class_name") == "Sequential":
        if len(layers) > 1 and layers[0]["class_name"] == "InputLayer":
            yield layers[0], [layers[1]]
        return
    for input_layer in (layer for layer in layers if layer["class_name"] == "InputLayer"):
        name = input_layer.get("name") or input_layer["config"].get("name")
        yield input_layer, [layer for layer in layers if name in _inbound_names(layer)]


def _inbound_names(layer: dict[str, Any]) -> set[str]:
    inbound = layer.get("inbound_nodes")
    return {ref[0] for ref in [*legacy_refs(inbound), *keras_histories(inbound)]}


REWRITES: tuple[Callable[[Translation], None], ...] = (
    sequential_from_list, nested_model_node_indices, input_layer_from_batch_input_shape, drop_time_major,
    module_for_wrapped_layers, cudnn_as_native, float_embeddings, drop_embedding_input_length,
    gru_reset_before, *ARGUMENT_REWRITES, stateful_as_fresh_state, integer_token_inputs,
    rnn_states_as_keywords, tensors_in_keywords, sanitize_names,
)
