"""Sets a built Keras 3 model's weights from a file's saved arrays, by layer name, converting old layouts.

Each dataset's declared shape is compared with the built layer's variable before its values are read,
and values are refused when not finite: a NaN weight makes every answer NaN.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from lstmserve.server.errors import ModelLoadError
from lstmserve.server.loading.modelfile import ModelFile, SavedWeight

SHADOW_HINT = ("if '{cls}' is your own layer class that shares a Keras built-in's name, pass the module "
               "defining it with --custom-objects MODULE")


def assign_weights(model_file: ModelFile, model: Any, layouts: dict[str, str],
                   renamed: dict[str, str] | None = None) -> None:
    """Assign every saved layer's weights; `layouts` names layers saved in a CuDNN layout, `renamed`
    maps a file's layer names to the built model's. Pairing by layer name (Keras's own loader pairs
    by position) gives a clear error when file and config disagree."""
    file_name = {new: old for old, new in (renamed or {}).items()}
    saved, path = model_file.weights, model_file.path
    layers = {file_name.get(layer.name, layer.name): layer for layer in model.layers}
    unsaved = [name for name, layer in layers.items() if _variables(layer) and name not in saved]
    unknown = [name for name in saved if name not in layers]
    if unsaved or unknown:
        raise ModelLoadError(
            f"{path}: the file's weights and its config disagree: no saved weights for layers "
            f"{unsaved}; saved weights for layers {unknown} the config does not have"
        )
    for name, weights in saved.items():
        _check_declared(name, layers[name], weights, name in layouts)
    with model_file.reading() as read:
        for name, weights in saved.items():
            arrays = _read(name, weights, read)
            if name in layouts:
                arrays = from_cudnn(arrays, layouts[name])
            # A weightless layer given weights is how a custom class built as a built-in shows.
            _assign(name, layers[name], arrays)


def _check_declared(name: str, layer: Any, weights: list[SavedWeight], converted: bool) -> None:
    """Before any value is read: the declared shapes are the layer's (a CuDNN layout, converted after
    reading, holds at most twice as many numbers: CuDNNLSTM keeps two biases)."""
    shapes = [tuple(v.shape) for v in _variables(layer)]
    declared = [weight.shape for weight in weights]
    if converted:
        wanted = sum(int(np.prod(shape)) for shape in shapes)
        if sum(int(np.prod(shape, dtype=object)) for shape in declared) > 2 * wanted:
            _mismatch(name, layer, declared, shapes)
    elif declared != shapes:
        _mismatch(name, layer, declared, shapes)


def _read(name: str, weights: list[SavedWeight],
          read: Callable[[SavedWeight], np.ndarray]) -> list[np.ndarray]:
    arrays = []
    for weight in weights:
        array = read(weight)
        if array.dtype.kind in "fc" and not np.isfinite(array).all():
            bad = int(array.size - np.isfinite(array).sum())
            raise ModelLoadError(
                f"layer '{name}': weight '{weight.path}' holds {bad} NaN or infinite values of "
                f"{array.size}; every answer would be NaN or infinite (repair or retrain the model)")
        arrays.append(array)
    return arrays


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


def _assign(name: str, layer: Any, arrays: list[np.ndarray]) -> None:
    variables = _variables(layer)
    shapes = [tuple(v.shape) for v in variables]
    saved = [tuple(a.shape) for a in arrays]
    if shapes != saved:
        _mismatch(name, layer, saved, shapes)
    for variable, value in zip(variables, arrays):
        variable.assign(value)


def _mismatch(name: str, layer: Any, saved: list[tuple], shapes: list[tuple]) -> None:
    hint = f"; {SHADOW_HINT.format(cls=type(layer).__name__)}" if _is_builtin(layer) else ""
    raise ModelLoadError(
        f"layer '{name}' ({type(layer).__name__}): the file holds weights of shapes {saved}; "
        f"the layer built from its config has {shapes}{hint}"
    )


def _variables(layer: Any) -> list[Any]:
    # The order Keras saved them in (legacy_h5_format._legacy_weights).
    return list(layer.trainable_weights) + list(layer.non_trainable_weights)


def _is_builtin(layer: Any) -> bool:
    return type(layer).__module__.startswith("keras.")
