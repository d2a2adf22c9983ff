"""h5py edits that turn a file written today into one written by an older Keras (or a hostile one)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import h5py
import numpy as np


def edit_config(path: Path, change: Callable[[dict], Any]) -> None:
    """Rewrite the model_config attribute in place; `change` mutates it or returns a replacement dict."""
    with h5py.File(path, "a") as h5:
        config = json.loads(h5.attrs["model_config"])
        replaced = change(config)
        h5.attrs["model_config"] = json.dumps(replaced if isinstance(replaced, dict) else config)


def set_versions(path: Path, version: str, training_config: dict | None = None) -> None:
    with h5py.File(path, "a") as h5:
        h5.attrs["keras_version"] = version
        h5["model_weights"].attrs["keras_version"] = version
        if training_config is not None:
            h5.attrs["training_config"] = json.dumps(training_config)


def layer_weights(path: Path, layer: str) -> list[np.ndarray]:
    with h5py.File(path, "r") as h5:
        group = h5["model_weights"][layer]
        return [group[name][()] for name in _names(group)]


def set_layer_weights(path: Path, layer: str, names: list[str], weights: list[np.ndarray]) -> None:
    """Replace a layer's datasets, named as the old Keras named them (shapes may change)."""
    with h5py.File(path, "a") as h5:
        group = h5["model_weights"][layer]
        for name in _names(group):
            del group[name]
        for name, value in zip(names, weights):
            group.create_dataset(name, data=value)
        group.attrs["weight_names"] = [name.encode() for name in names]


def add_external_link(path: Path, target: Path) -> None:
    with h5py.File(path, "a") as h5:
        h5["model_weights"]["elsewhere"] = h5py.ExternalLink(str(target), "/")


def add_virtual_dataset(path: Path, source: Path) -> None:
    with h5py.File(source, "w") as h5:
        h5["data"] = np.arange(4, dtype="float32")
    layout = h5py.VirtualLayout(shape=(4,), dtype="float32")
    layout[:] = h5py.VirtualSource(str(source), "data", shape=(4,))
    with h5py.File(path, "a") as h5:
        h5.create_virtual_dataset("borrowed", layout)


def _names(group: h5py.Group) -> list[str]:
    return [n.decode() if isinstance(n, bytes) else n for n in group.attrs["weight_names"]]


def read_config(path: Path) -> dict:
    with h5py.File(path, "r") as h5:
        return json.loads(h5.attrs["model_config"])
