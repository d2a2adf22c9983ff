"""The checks that turn a request's arrays into the model's inputs, naming what was expected and what came."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from lstmserve.server.errors import InvalidInput, shown_list
from lstmserve.server.specs import TensorSpec, dimension_labels


def bind_inputs(specs: Sequence[TensorSpec], inputs: Mapping[str, np.ndarray],
                model_name: str) -> list[np.ndarray]:
    """The request's arrays in the model's input order, checked and cast; InvalidInput otherwise."""
    named = _match_names(specs, inputs, model_name)
    arrays = [_check_array(spec, named[spec.name], model_name) for spec in specs]
    if len(arrays) > 1:
        batches = {spec.name: array.shape[0] for spec, array in zip(specs, arrays)}
        if len(set(batches.values())) > 1:
            raise InvalidInput(f"inputs of model '{model_name}' must share one batch size; got {batches}")
    return arrays


def _match_names(specs: Sequence[TensorSpec], inputs: Mapping[str, np.ndarray],
                 model_name: str) -> dict[str, np.ndarray]:
    if len(specs) == 1 and len(inputs) == 1 and "" in inputs:
        return {specs[0].name: inputs[""]}
    expected = [spec.name for spec in specs]
    unknown = sorted(set(inputs) - set(expected))
    missing = [name for name in expected if name not in inputs]
    if unknown or missing:
        raise InvalidInput(
            f"model '{model_name}' takes inputs {expected}; request has {shown_list(sorted(inputs))}"
            + (f" (missing {missing})" if missing else "")
            + (f" (unknown {shown_list(unknown)})" if unknown else "")
        )
    return dict(inputs)


def _check_array(spec: TensorSpec, array: np.ndarray, model_name: str) -> np.ndarray:
    problem = _shape_problem(spec, array) or _value_problem(spec, array)
    if problem:
        # Messages are built only for a bad request: describe() costs more than all the checks.
        suffix = " with finite values" if problem.startswith("contains NaN") else ""
        raise InvalidInput(f"input '{spec.name}' {problem}; model '{model_name}' expects "
                           f"{spec.describe()}{suffix}")
    return array if array.dtype == spec.dtype else array.astype(spec.dtype)


def _shape_problem(spec: TensorSpec, array: np.ndarray) -> str | None:
    if array.shape[1:] == spec.shape[1:] and array.shape[0] and len(spec.shape) > 1:
        return None  # the usual request, in one comparison (a free dimension never compares equal)
    if array.ndim != len(spec.shape):
        return f"has rank {array.ndim} (shape {list(array.shape)})"
    if array.shape[0] == 0:
        return f"is an empty batch (shape {list(array.shape)})"
    for axis, (got, want) in enumerate(zip(array.shape, spec.shape)):
        if axis > 0 and want is not None and got != want:
            return f"has {got} {dimension_labels(array.ndim)[axis]}"
    return None


def _value_problem(spec: TensorSpec, array: np.ndarray) -> str | None:
    # Width may differ (float64 for float32), kind may not, but for whole numbers sent to an integer
    # input (token ids a client keeps as floats, as Keras's predict takes them).
    kind = array.dtype.kind
    if kind == "f" and spec.dtype.kind == "i":
        return _whole_number_problem(spec, array)
    if kind != spec.dtype.kind:
        return f"has dtype {array.dtype.name}"
    if kind == "f" and not np.isfinite(array).all():
        return "contains NaN or infinity"
    if kind == "i" and array.dtype.itemsize > spec.dtype.itemsize:
        info = np.iinfo(spec.dtype)
        if array.min() < info.min or array.max() > info.max:
            return f"has values outside {spec.dtype.name}"
    return None


def _whole_number_problem(spec: TensorSpec, array: np.ndarray) -> str | None:
    info = np.iinfo(spec.dtype)
    with np.errstate(invalid="ignore"):
        if not (np.isfinite(array).all() and (array == np.round(array)).all()):
            return f"has {array.dtype.name} values that are not whole numbers (an integer input: token ids)"
        if array.min() < info.min or array.max() > info.max:
            return f"has values outside {spec.dtype.name}"
    return None
