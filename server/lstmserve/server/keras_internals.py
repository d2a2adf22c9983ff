"""Every private Keras and TensorFlow API lstmserve uses, behind one door that checks the versions first.

Public Keras cannot build a model from a translated legacy .h5 config, name the layer behind an output
tensor, or call a concrete function without re-deriving its arguments. The pieces that do live here
and nowhere else, so a Keras or TensorFlow upgrade has one module to re-check, and an untested version
is refused at import with a message saying which versions were tested (LSTMSERVE_UNTESTED_KERAS=1
serves anyway, with a warning).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import Any

import keras
import tensorflow as tf

# The private uses are kept in one place; reviewers re-check each one here on an upgrade.
from keras.src.legacy.saving import saving_options, saving_utils
from keras.src.saving import serialization_lib

from lstmserve.server.errors import UntestedVersion

log = logging.getLogger(__name__)

TESTED = {"keras": ("3.15",), "tensorflow": ("2.21",)}
OVERRIDE = "LSTMSERVE_UNTESTED_KERAS"


def check_versions(installed: dict[str, str] | None = None) -> None:
    """Refuse (or, with the override set, warn about) a Keras or TensorFlow this module was not tested on."""
    installed = installed or {"keras": keras.__version__, "tensorflow": tf.__version__}
    untested = [f"{name} {version} (tested: {', '.join(v + '.x' for v in TESTED[name])})"
                for name, version in installed.items()
                if not any(version == v or version.startswith(v + ".") for v in TESTED[name])]
    if not untested:
        return
    message = (f"lstmserve uses private APIs checked only on the tested versions; installed: "
               f"{'; '.join(untested)}")
    if os.environ.get(OVERRIDE) == "1":
        log.warning("%s; serving anyway because %s=1", message, OVERRIDE)
        return
    raise UntestedVersion(f"{message}. Install the versions in constraints.txt, or set {OVERRIDE}=1 "
                          "to serve anyway (answers are checked against Keras at load only for twins)")


check_versions()


def model_from_legacy_config(config: dict[str, Any], custom_objects: dict[str, Any], safe_mode: bool) -> Any:
    """Keras 3's own .h5 builder (legacy_h5_format.load_model_from_hdf5 runs exactly this) fed a config
    lstmserve has checked and translated, where the public loader would read the file's own."""
    with saving_options.keras_option_scope(use_legacy_config=True), \
            serialization_lib.SafeModeScope(safe_mode):
        return saving_utils.model_from_config(config, custom_objects=custom_objects)


def layer_of(tensor: Any) -> Any:
    """The layer that produced a model's output tensor (Keras keeps it only in a private attribute)."""
    return tensor._keras_history.operation


def flat_call(concrete: Any) -> Callable[[list], Any] | None:
    """A concrete function's call on flat tensors, skipping the public path's per-call argument handling
    (~250 us -> ~50 us a call with TensorFlow 2.21); None where this TensorFlow has no such path."""
    atomic = getattr(concrete, "_inference_function", None)
    return getattr(atomic, "call_preflattened", None)


def replace_activation(layer: Any, attribute: str, function: Callable) -> None:
    """Swap the activation of a built layer or cell; Keras reads the attribute at call time, which it
    does not promise to keep doing (the compatibility tests check the served numbers)."""
    setattr(layer, attribute, function)


def serialization_registry() -> dict[str, dict[str, Any]]:
    """Every name Keras itself resolves when it reads a legacy config, by kind: the lookup tables
    `keras.src.<kind>.ALL_OBJECTS_DICT` (class names, snake_case names and the aliases older Keras
    wrote, such as `OrthogonalInitializer` from Keras 3.0-3.5) and, for layers, the module dictionary
    the legacy .h5 loader searches (saving_utils.model_from_config)."""
    from keras.src import activations, constraints, dtype_policies, initializers, regularizers
    from keras.src import layers as layer_modules
    registry = {kind: dict(module.ALL_OBJECTS_DICT) for kind, module in (
        ("initializers", initializers), ("regularizers", regularizers), ("constraints", constraints),
        ("activations", activations), ("dtype_policies", dtype_policies))}
    registry["layers"] = dict(vars(layer_modules))
    return registry
