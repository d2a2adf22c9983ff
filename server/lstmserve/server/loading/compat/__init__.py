"""Compatibility steps that let Keras 3 serve .h5 files from Keras 2.0 to 2.15, tf.keras and tf-keras.

configs: legacy config -> Keras 3 config; weights: saved arrays -> the built model (cuDNN layouts
converted); semantics: Keras 2 arithmetic Keras 3 changed. This module imports no Keras.
"""

from __future__ import annotations


def written_by(keras_version: str, backend: str) -> str:
    """Which Keras line wrote a file, from the version string it stored."""
    parts = keras_version.split(".")
    major_minor = tuple(int(p) for p in parts[:2]) if all(p.isdigit() for p in parts[:2]) else None
    if keras_version.endswith("-tf"):
        line = f"tf.keras {keras_version} (TensorFlow 1.x to 2.5)"
    elif major_minor is None:
        line = f"Keras {keras_version} (unknown version)"
    elif major_minor >= (3, 0):
        line = f"Keras {keras_version}"
    elif major_minor >= (2, 16):
        line = f"tf-keras {keras_version} (the Keras 2 line for TensorFlow 2.16+)"
    elif major_minor >= (2, 4):
        line = f"Keras {keras_version} as tf.keras (TensorFlow 2.x)"
    else:
        line = f"standalone Keras {keras_version}"
    return f"{line}, {backend} backend"


def is_keras2(keras_version: str) -> bool:
    """Files without a readable major version predate Keras 3 (it always writes one)."""
    major = keras_version.split(".")[0]
    return not major.isdigit() or int(major) < 3


def file_layers(model_config: dict) -> list[str]:
    """The model-level layers as the file names them (CuDNNLSTM stays CuDNNLSTM), wrappers with
    their inner class: what the writer built, before any compatibility step."""
    config = model_config.get("config")
    layers = config if isinstance(config, list) else (config or {}).get("layers", [])
    described = []
    for layer in layers:
        inner = layer.get("config", {}).get("layer") if isinstance(layer.get("config"), dict) else None
        wrapped = f"({inner['class_name']})" if isinstance(inner, dict) and "class_name" in inner else ""
        described.append(f"{layer['class_name']}{wrapped} '{layer.get('config', {}).get('name', '?')}'")
    return described


# Classes Keras 2 wrote that Keras 3 lacks and configs.py / arguments.py translate (the allow-list
# admits them for that); "Policy" is tf.keras's mixed-precision dtype policy.
LEGACY_CLASSES = frozenset({"CuDNNLSTM", "CuDNNGRU", "ThresholdedReLU", "Policy"})
