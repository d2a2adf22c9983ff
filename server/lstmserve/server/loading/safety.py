"""Checks a model config against an allow-list before anything in it is deserialised.

A Keras config names classes to instantiate. A model file is untrusted input, so every class name it
mentions must be one Keras itself would resolve to an inert built-in (derived from the installed Keras:
the public classes of keras.layers, initializers, regularizers, constraints, activations and dtype
policies, under every name Keras has serialised them under), and not on the deny-list of classes that
run code or read other files; or one the operator supplied with --custom-objects.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Iterable, Iterator
from typing import Any

import keras

from lstmserve.server import keras_internals
from lstmserve.server.errors import UnsafeModelError
from lstmserve.server.loading.compat import LEGACY_CLASSES

MODELS = {"Sequential", "Functional", "Model"}
# Data Keras's serialisation writes inline (tensors, arrays, bytes, slices): no class is looked up.
INLINE_DATA = {"__keras_tensor__", "__tensor__", "__numpy__", "__bytes__", "__ellipsis__", "__slice__"}
# Carry or name code; served only with --allow-code (the operator trusts the file).
CODE_CARRYING = {
    "Lambda": "carries Python code (marshalled bytecode) that would run on load",
    "TFOpLambda": "calls a TensorFlow function the file names",
    "SlicingOpLambda": "calls a TensorFlow function the file names",
    "__lambda__": "is Python bytecode that would run on load",
    "function": "names a Python function that Keras would import and call",
    "TorchModuleWrapper": "holds a pickled PyTorch module (unpickling runs code)",
    "JaxLayer": "calls Python functions (call_fn, init_fn) the file names",
    "FlaxLayer": "runs a Flax module the file names, as Python code",
}
# Reach outside the model file whatever the operator allows.
FILE_READING = {
    "TFSMLayer": "loads a TensorFlow SavedModel from a path the file names",
    "StringLookup": "may read its vocabulary from a file path the file names",
    "IntegerLookup": "may read its vocabulary from a file path the file names",
    "IndexLookup": "may read its vocabulary from a file path the file names",
    "TextVectorization": "may read its vocabulary from a file path and call Python functions "
                         "(standardize, split) the file names",
    "__typespec__": "deserialises a TensorFlow TypeSpec by registered name",
}
DENIED = {**CODE_CARRYING, **FILE_READING}
PUBLIC_MODULES = ("layers", "initializers", "regularizers", "constraints", "activations", "dtype_policies")


@functools.cache
def keras_names() -> frozenset[str]:
    """Every class (and function) name the installed Keras resolves to an inert built-in, minus the
    deny-list: public objects of its serialisable modules and every alias its registry knows."""
    tables = {kind: {name: value for name, value in vars(getattr(keras, kind)).items()
                     if not name.startswith("_")} for kind in PUBLIC_MODULES}
    for kind, table in keras_internals.serialization_registry().items():
        tables[kind].update(table)
    names = {name for kind, table in tables.items() for name, value in table.items()
             if _is_inert_object(kind, value)}
    return frozenset((names | MODELS | INLINE_DATA | LEGACY_CLASSES) - set(DENIED))


def _is_inert_object(kind: str, value: Any) -> bool:
    """Classes, and the activation functions; never helpers such as deserialize, get or Input, which a
    config naming them as a class would have Keras call."""
    if kind == "activations":
        return inspect.isfunction(value) and value.__name__ not in ("get", "serialize", "deserialize")
    if not inspect.isclass(value):
        return False
    return kind != "layers" or issubclass(value, keras.layers.Layer)


def check_config(config: Any, custom_classes: Iterable[str] = (), allow_code: bool = False,
                 custom_modules: Iterable[str] = ()) -> None:
    """Raise UnsafeModelError naming the first class the file may not instantiate, and why."""
    custom = set(custom_classes)
    allowed = keras_names() | custom | (set(CODE_CARRYING) if allow_code else set())
    modules = ("keras", *custom_modules)
    for class_name, module, where in _class_names(config, "model"):
        supplied = _bare(class_name) in custom
        if module and not supplied and module.split(".")[0] not in modules and module not in modules:
            # Keras 3 imports a config's "module" to find its class: an arbitrary module would run.
            raise UnsafeModelError(_foreign_module_message(where, class_name, module))
        if class_name in allowed or supplied:
            continue
        raise UnsafeModelError(_refusal(where, class_name))


def _refusal(where: str, class_name: str) -> str:
    if class_name in CODE_CARRYING:
        return (f"{where} is a {class_name}, which {CODE_CARRYING[class_name]}; refused (start the "
                "server with --allow-code to trust this file)")
    if class_name in FILE_READING:
        return (f"{where} is a {class_name}, which {FILE_READING[class_name]}; model files must be "
                "self-contained, so lstmserve never serves it")
    return (f"{where} uses class '{class_name}', which is neither a Keras {keras.__version__} built-in "
            f"nor a custom object you supplied; if it is your own layer, pass a module that defines "
            f"class {_bare(class_name)} for Keras 3 with --custom-objects module.path")


def _foreign_module_message(where: str, class_name: str, module: str) -> str:
    shadows = (f" (not Keras's own {class_name}, whose name it shares)"
               if class_name in keras_names() else "")
    return (f"{where} is class '{class_name}' from Python module '{module}'{shadows}; lstmserve "
            f"imports no module a file names: pass a module that defines class {_bare(class_name)} "
            "for Keras 3 with --custom-objects module.path")


def _bare(class_name: str) -> str:
    """'package>Name' is how Keras names a registered custom class; the class itself is 'Name'."""
    return class_name.rsplit(">", 1)[-1]


def _class_names(node: Any, where: str) -> Iterator[tuple[str, str, str]]:
    """Every class_name in a config tree with its module, and a readable path to it."""
    if isinstance(node, dict):
        if isinstance(node.get("class_name"), str):
            name = node.get("config", {}).get("name") if isinstance(node.get("config"), dict) else None
            where = f"{where} > {node['class_name']}" + (f" '{name}'" if name else "")
            module = node.get("module") if isinstance(node.get("module"), str) else ""
            yield node["class_name"], module, where
        for key, value in node.items():
            if key != "class_name":
                yield from _class_names(value, where)
    elif isinstance(node, list):
        for item in node:
            yield from _class_names(item, where)
