"""Layer and model names Keras 2 allowed but TensorFlow graphs refuse, replaced inside the served graph.

TensorFlow names every op after the layers around it and accepts only [A-Za-z0-9.][A-Za-z0-9_.>-]*;
Keras 2 let models (and older versions, layers) be named anything. The file's names stay the names
clients and metadata see: Translation.renamed maps each back.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

from lstmserve.server.loading.compat.tree import (
    Translation,
    functional_models,
    keras_histories,
    layer_nodes,
    legacy_refs,
)

VALID_NAME = re.compile(r"[A-Za-z0-9.][A-Za-z0-9_.>-]*")


def sanitize_names(t: Translation) -> None:
    """Rename every layer or model whose name TensorFlow refuses, and every reference to it."""
    names = {node["config"]["name"] for node in layer_nodes(t.config)
             if isinstance(node["config"].get("name"), str)}
    taken = set(names)
    for name in sorted(names):
        if not VALID_NAME.fullmatch(name):
            t.renamed[name] = _unique(_clean(name), taken)
    if not t.renamed:
        return
    for holder, key in _name_slots(t.config):
        holder[key] = t.renamed.get(holder[key], holder[key])
    t.record([f"'{old}' -> '{new}'" for old, new in t.renamed.items()],
             "names TensorFlow refuses replaced inside the served graph (inputs, outputs and metadata "
             "keep the file's names)")


def _clean(name: str) -> str:
    cleaned = re.sub(r"[^A-Za-z0-9_.>-]", "_", name)
    return cleaned if VALID_NAME.fullmatch(cleaned) else f"x{cleaned}"


def _unique(candidate: str, taken: set[str]) -> str:
    name, suffix = candidate, 1
    while name in taken:
        name, suffix = f"{candidate}_{suffix}", suffix + 1
    taken.add(name)
    return name


def _name_slots(config: dict[str, Any]) -> Iterator[tuple[Any, Any]]:
    """(container, key) of every place a config holds a layer's name: its own config, a functional
    model's layer entries, and every reference to a layer's output (Keras 2 lists, Keras 3 histories)."""
    for node in layer_nodes(config):
        if isinstance(node["config"].get("name"), str):
            yield node["config"], "name"
        if isinstance(node.get("name"), str):
            yield node, "name"
    for model in functional_models(config):
        for layer in model["config"]["layers"]:
            if isinstance(layer, dict):
                yield from ((ref, 0) for ref in legacy_refs(layer.get("inbound_nodes")))
        for key in ("input_layers", "output_layers"):
            yield from ((ref, 0) for ref in legacy_refs(model["config"].get(key)))
    yield from ((history, 0) for history in keras_histories(config))
