"""Turns an .h5 file into a Keras model: safety checks first, then Keras, without compile info."""

from __future__ import annotations

import importlib
import inspect
import logging
import os
from dataclasses import dataclass, field
from typing import Any

from lstmserve.server.runtime.errors import ModelLoadError
from lstmserve.server.runtime.modelfile import ModelFile
from lstmserve.server.runtime.safety import check_config

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import keras  # noqa: E402  (after quieting TensorFlow's C++ logging)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LoadOptions:
    """What the operator allows: modules of custom classes to import, code-carrying layers."""

    custom_modules: tuple[str, ...] = ()
    allow_code: bool = False
    custom_objects: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def create(cls, custom_modules: tuple[str, ...] = (), allow_code: bool = False) -> "LoadOptions":
        """Import the operator's modules once and collect the classes and functions they define."""
        objects: dict[str, Any] = {}
        for module_name in custom_modules:
            try:
                module = importlib.import_module(module_name)
            except ImportError as error:
                raise ModelLoadError(f"cannot import custom-objects module '{module_name}': {error}")
            objects.update({name: value for name, value in vars(module).items()
                            if (inspect.isclass(value) or inspect.isfunction(value))
                            and getattr(value, "__module__", None) == module.__name__})
        return cls(tuple(custom_modules), allow_code, objects)


def load_keras_model(model_file: ModelFile, options: LoadOptions) -> tuple[Any, list[str]]:
    """The Keras model in `model_file`, and the compatibility steps applied to read it."""
    check_config(model_file.model_config, options.custom_objects, options.allow_code,
                 options.custom_modules)
    steps: list[str] = ["compile information skipped (serving needs none)"]
    try:
        model = keras.models.load_model(
            model_file.path, compile=False, safe_mode=not options.allow_code,
            custom_objects=options.custom_objects or None,
        )
    except Exception as error:  # Keras raises many types; the operator needs the text.
        raise ModelLoadError(
            f"Keras {keras.__version__} cannot load {model_file.path} "
            f"(written by Keras {model_file.keras_version}): {type(error).__name__}: {error}"
        ) from error
    return model, steps
