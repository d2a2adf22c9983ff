"""The walk over a Keras config tree every rewrite shares, and the Translation the rewrites fill in."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

MODEL_CLASSES = {"Sequential", "Functional", "Model"}


@dataclass
class Translation:
    """A config Keras 3 can build, the steps applied, and what the loader must know of the rewrites."""

    config: dict[str, Any]
    steps: list[str] = field(default_factory=list)
    # h5 layer group name -> "CuDNNLSTM" / "CuDNNGRU": the layout its weights were saved in.
    weight_layouts: dict[str, str] = field(default_factory=dict)
    # A name as the file wrote it -> the name the built model carries (names TensorFlow refuses).
    renamed: dict[str, str] = field(default_factory=dict)
    # Layers saved with stateful=True, built stateless (each request row starts from a zero state).
    stateful: list[str] = field(default_factory=list)

    def record(self, names: list[str], what: str) -> None:
        if names:
            self.steps.append(f"{what}: {', '.join(names)}")


def layer_nodes(node: Any) -> Iterator[dict[str, Any]]:
    """Every {class_name, config: dict} in a config tree, outermost first (initialisers included)."""
    return nodes(node, lambda n: isinstance(n.get("config"), dict))


def nodes(node: Any, keep: Callable[[dict[str, Any]], bool]) -> Iterator[dict[str, Any]]:
    """Every dict with a string class_name that `keep` accepts, outermost first."""
    if isinstance(node, dict):
        if isinstance(node.get("class_name"), str) and keep(node):
            yield node
        for value in node.values():
            yield from nodes(value, keep)
    elif isinstance(node, list):
        for item in node:
            yield from nodes(item, keep)


def functional_models(config: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """The top-level model and every nested one whose config lists layers wired by inbound nodes."""
    return nodes(config, lambda n: n["class_name"] in MODEL_CLASSES and isinstance(n.get("config"), dict)
                 and isinstance(n["config"].get("layers"), list))


def model_layers(config: dict[str, Any]) -> list[dict[str, Any]]:
    """The layer entries of one model config (empty for anything else)."""
    layers = config.get("config", {}).get("layers") if isinstance(config.get("config"), dict) else None
    return [layer for layer in layers or [] if isinstance(layer, dict)]


def describe(node: dict[str, Any]) -> str:
    """"LSTM 'lstm'": a layer as a compatibility step names it."""
    return f"{node['class_name']} '{node['config'].get('name', '?')}'"


def legacy_refs(node_data: Any) -> Iterator[list]:
    """Each [layer name, node index, tensor index(, kwargs)] of a Keras 2 inbound node (a list), at
    any depth of lists; Keras 3 nodes ({"args", "kwargs"}) hold none."""
    if isinstance(node_data, list):
        if (3 <= len(node_data) <= 4 and isinstance(node_data[0], str)
                and type(node_data[1]) is int and type(node_data[2]) is int):
            yield node_data
            return
        for item in node_data:
            yield from legacy_refs(item)


def keras_histories(node: Any) -> Iterator[list]:
    """The [layer name, node index, tensor index] of each Keras 3 tensor reference under `node`."""
    for tensor in nodes(node, lambda n: n["class_name"] == "__keras_tensor__"):
        config = tensor.get("config")
        history = config.get("keras_history") if isinstance(config, dict) else None
        if isinstance(history, list) and history and isinstance(history[0], str):
            yield history
