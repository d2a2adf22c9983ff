"""Builds the Keras 3 model a file describes: allow-list first, then compatibility steps, then Keras."""

from __future__ import annotations

import importlib
import inspect
import logging
import re
from dataclasses import dataclass, field
from typing import Any

import keras
import numpy as np

from lstmserve.server import keras_internals
from lstmserve.server.errors import ModelLoadError
from lstmserve.server.loading.compat import is_keras2
from lstmserve.server.loading.compat.configs import layer_nodes, translate_config
from lstmserve.server.loading.compat.semantics import restore_keras2_activations
from lstmserve.server.loading.compat.weights import SHADOW_HINT, assign_weights
from lstmserve.server.loading.modelfile import ModelFile
from lstmserve.server.loading.reasons import one_line
from lstmserve.server.loading.safety import check_config

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LoadOptions:
    """What the operator allows: modules of custom classes to import, code-carrying layers."""

    custom_modules: tuple[str, ...] = ()
    allow_code: bool = False
    custom_objects: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def create(cls, custom_modules: tuple[str, ...] = (), allow_code: bool = False) -> LoadOptions:
        """Import the operator's modules once and collect the classes and functions they define."""
        objects: dict[str, Any] = {}
        for module_name in custom_modules:
            try:
                module = importlib.import_module(module_name)
            except ImportError as error:
                raise ModelLoadError(
                    f"cannot import custom-objects module '{module_name}': {error}") from None
            objects.update({name: value for name, value in vars(module).items()
                            if (inspect.isclass(value) or inspect.isfunction(value))
                            and getattr(value, "__module__", None) == module.__name__})
        return cls(tuple(custom_modules), allow_code, objects)


@dataclass(frozen=True)
class BuiltModel:
    """A built Keras model with its file's weights, the compatibility steps taken to read it, and what
    those steps changed that serving must know."""

    keras_model: Any
    steps: tuple[str, ...]
    # Name in the built model -> name in the file, for names TensorFlow refused (clients see the file's).
    file_names: dict[str, str] = field(default_factory=dict)
    # Layers the file saved with stateful=True (built stateless: a fresh state per request row).
    stateful: tuple[str, ...] = ()

    def file_name(self, name: str) -> str:
        return self.file_names.get(name, name)


def build_keras_model(model_file: ModelFile, options: LoadOptions) -> BuiltModel:
    """The Keras model in `model_file`, and the compatibility steps applied to read it.

    The allow-list is checked on the file's own config before anything is deserialised; the
    config is then translated for Keras 3, built, and given the file's weights (converted where
    an old layout differs)."""
    check_config(model_file.model_config, options.custom_objects, options.allow_code,
                 options.custom_modules)
    translation = translate_config(model_file.model_config)
    check_declared_sizes(model_file, translation.config, set(options.custom_objects))
    model = _build(model_file, translation.config, options)
    assign_weights(model_file, model, translation.weight_layouts, translation.renamed)
    steps = list(translation.steps)
    if is_keras2(model_file.keras_version):
        changed = restore_keras2_activations(model)
        if changed:
            steps.append(f"hard_sigmoid computed as Keras 2 did (0.2x + 0.5): {', '.join(changed)}")
    if model_file.has_training_config:
        steps.append("training_config not read (optimizer, loss and metrics serve training only)")
    return BuiltModel(model, tuple(steps), {new: old for old, new in translation.renamed.items()},
                      tuple(translation.stateful))


# Layer arguments that size a weight: a layer with units=U holds at least U numbers (a bias, a kernel
# column each), so none can exceed the numbers the file saved. Keras allocates and initialises weights as
# it builds, before they could be compared with the file's.
SIZE_ARGUMENTS = ("units", "filters", "input_dim", "output_dim", "num_heads", "key_dim", "value_dim",
                  "depth_multiplier")


def check_declared_sizes(model_file: ModelFile, config: dict[str, Any], custom: set[str]) -> None:
    """Refuse a config whose Keras layers declare more weights than the file holds, before Keras builds
    them (an operator's own classes may mean something else by `units`)."""
    saved = sum(int(np.prod(weight.shape, dtype=object)) for weights in model_file.weights.values()
                for weight in weights)
    for node in layer_nodes(config):
        if node["class_name"].rsplit(">", 1)[-1] in custom:
            continue
        for argument in SIZE_ARGUMENTS:
            value = node["config"].get(argument)
            if type(value) is int and value > saved:
                raise ModelLoadError(
                    f"{model_file.path}: {node['class_name']} '{node['config'].get('name', '?')}' declares "
                    f"{argument}={value:,}, more than the {saved:,} weight values the file holds")


def _build(model_file: ModelFile, config: dict[str, Any], options: LoadOptions) -> Any:
    """Keras 3's own .h5 path (legacy_h5_format.load_model_from_hdf5), fed the translated config."""
    custom_objects = _with_registered_names(options.custom_objects, config)
    try:
        return keras_internals.model_from_legacy_config(config, custom_objects, not options.allow_code)
    except Exception as error:  # Keras raises many types; the operator needs the text.
        raise ModelLoadError(_build_error(model_file, error, options)) from error


def _build_error(model_file: ModelFile, error: Exception, options: LoadOptions) -> str:
    message = (f"Keras {keras.__version__} cannot build the model in {model_file.path} "
               f"(written by Keras {model_file.keras_version}): {one_line(error)}")
    unknown_arguments = re.search(r"Unrecognized keyword arguments passed to (\w+)", str(error))
    if unknown_arguments and unknown_arguments.group(1) not in options.custom_objects:
        message += "; " + SHADOW_HINT.format(cls=unknown_arguments.group(1))
    return message


def _with_registered_names(objects: dict[str, Any], config: dict[str, Any]) -> dict[str, Any]:
    """Files name registered custom classes 'package>Name'; the operator supplies class Name."""
    aliases = {}
    for node in layer_nodes(config):
        package, _, bare = node["class_name"].rpartition(">")
        if package and bare in objects:
            aliases[node["class_name"]] = objects[bare]
    return {**objects, **aliases}
