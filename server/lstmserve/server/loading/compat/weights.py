"""Sets a built Keras 3 model's weights from a file's saved arrays, by layer name, converting old layouts."""

from __future__ import annotations

from typing import Any

import numpy as np

from lstmserve.server.errors import ModelLoadError
from lstmserve.server.loading.modelfile import ModelFile

SHADOW_HINT = ("if '{cls}' is your own layer class that shares a Keras built-in's name, pass the module "
               "defining it with --custom-objects MODULE")


def assign_weights(model_file: ModelFile, model: Any, layouts: dict[str, str]) -> None:
    """Assign every saved layer's weights; `layouts` names layers saved in a CuDNN layout. Pairing by
    layer name (Keras's own loader pairs by position) gives a clear error when file and config disagree."""
    saved, path = model_file.weights, model_file.path
    layers = {layer.name: layer for layer in model.layers}
    unsaved = [name for name, layer in layers.items() if _variables(layer) and name not in saved]
    unknown = [name for name in saved if name not in layers]
    if unsaved or unknown:
        raise ModelLoadError(
            f"{path}: the file's weights and its config disagree: no saved weights for layers "
            f"{unsaved}; saved weights for layers {unknown} the config does not have"
        )
    for name, arrays in saved.items():
        if name in layouts:
            arrays = from_cudnn(arrays, layouts[name])
        # A weightless layer given weights is how a custom class built as a built-in shows.
        _assign(layers[name], arrays)


def from_cudnn(arrays: list[np.ndarray], layout: str) -> list[np.ndarray]:
    """Inverse of cuDNN's layout, as Keras 2's hdf5_format._convert_rnn_weights does it; a
    Bidirectional holds two (kernel, recurrent_kernel, bias) triples."""
    gates = 4 if layout == "CuDNNLSTM" else 3
    converted = []
    for start in range(0, len(arrays), 3):
        kernel, recurrent, bias = arrays[start:start + 3]
        converted += [
            np.hstack([k.T.reshape(k.shape, order="F") for k in np.hsplit(kernel, gates)]),
            np.hstack([k.T for k in np.hsplit(recurrent, gates)]),
            # CuDNNLSTM keeps input and recurrent biases that are only ever summed; CuDNNGRU's two
            # map onto GRU(reset_after=True)'s (2, 3*units) bias.
            np.sum(np.split(bias, 2), axis=0) if gates == 4 else bias.reshape(2, -1),
        ]
    return converted


def _assign(layer: Any, arrays: list[np.ndarray]) -> None:
    variables = _variables(layer)
    shapes = [tuple(v.shape) for v in variables]
    saved = [tuple(a.shape) for a in arrays]
    if shapes != saved:
        hint = f"; {SHADOW_HINT.format(cls=type(layer).__name__)}" if _is_builtin(layer) else ""
        raise ModelLoadError(
            f"layer '{layer.name}' ({type(layer).__name__}): the file holds weights of shapes {saved}; "
            f"the layer built from its config has {shapes}{hint}"
        )
    for variable, value in zip(variables, arrays):
        variable.assign(value)


def _variables(layer: Any) -> list[Any]:
    # The order Keras saved them in (legacy_h5_format._legacy_weights).
    return list(layer.trainable_weights) + list(layer.non_trainable_weights)


def _is_builtin(layer: Any) -> bool:
    return type(layer).__module__.startswith("keras.")
