"""Writes a fitted model as one .h5 file that plain Keras can open and lstmserve can serve."""

from __future__ import annotations

import platform
from pathlib import Path
from typing import Any

import keras
import tensorflow as tf

from lstmserve.format.metadata import write_serving_metadata


def save_model(model: keras.Model, path: str | Path, *, task: str, labels: list[str] | None = None,
               preparation: dict[str, Any] | None = None, training: dict[str, Any] | None = None,
               forecast: dict[str, Any] | None = None) -> Path:
    """model.save() to .h5, then lstmserve's metadata as a root attribute beside Keras's own. `forecast`
    ({"feature", "horizon"}) says the output is the next values of that input feature."""
    path = Path(path)
    if path.suffix != ".h5":
        raise ValueError(f"output must end in .h5; got {path.name}")
    path.parent.mkdir(parents=True, exist_ok=True)
    model.save(path)
    write_serving_metadata(path, {
        "task": task,
        "labels": labels or [],
        "preparation": preparation or {},
        "training": {**(training or {}), "versions": versions()},
        **({"forecast": forecast} if forecast else {}),
    })
    return path


def versions() -> dict[str, str]:
    return {"keras": keras.__version__, "tensorflow": tf.__version__,
            "python": platform.python_version()}
