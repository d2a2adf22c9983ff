"""Fixes to a built model where Keras 3 computes something differently from the Keras 2 that wrote it."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import keras

from lstmserve.server.keras_internals import replace_activation

ACTIVATION_ATTRIBUTES = ("activation", "recurrent_activation")


def keras2_hard_sigmoid(x: Any) -> Any:
    """Keras 2's hard_sigmoid, clip(0.2x + 0.5, 0, 1); Keras 3's is relu6(x + 3) / 6, another slope."""
    return keras.ops.clip(0.2 * x + 0.5, 0.0, 1.0)


def restore_keras2_activations(model: Any) -> list[str]:
    """Swap Keras 3's hard_sigmoid for Keras 2's in every (sub)layer; the names of layers changed.
    It was the default recurrent_activation of LSTM and GRU until Keras 2.3."""
    changed = []
    for layer, owner in _sublayers(model):
        for attribute in ACTIVATION_ATTRIBUTES:
            # An RNN layer's activations are read-only views of its cell's, which are set instead.
            if isinstance(getattr(type(layer), attribute, None), property):
                continue
            if getattr(layer, attribute, None) is keras.activations.hard_sigmoid:
                replace_activation(layer, attribute, keras2_hard_sigmoid)
                changed.append(f"{owner} {attribute}")
    return sorted(set(changed))


def _sublayers(layer: Any, owner: str = "") -> Iterator[tuple[Any, str]]:
    """Every layer, cell and wrapped layer under `layer`, with the name of its model-level layer."""
    for child in getattr(layer, "layers", None) or []:
        name = owner or f"{type(child).__name__} '{child.name}'"
        yield child, name
        yield from _sublayers(child, name)
    for attribute in ("layer", "forward_layer", "backward_layer", "cell"):
        child = getattr(layer, attribute, None)
        if child is not None and child is not layer:
            yield child, owner
            yield from _sublayers(child, owner)
    for cell in getattr(layer, "cells", None) or []:
        yield cell, owner
        yield from _sublayers(cell, owner)
