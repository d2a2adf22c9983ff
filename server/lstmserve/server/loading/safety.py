"""Checks a model config against an allow-list before anything in it is deserialised.

A Keras config names classes to instantiate; Lambda layers carry marshalled Python bytecode.
A model file is untrusted input, so every class name it mentions must be one we know is inert,
or one the operator supplied with --custom-objects.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from lstmserve.server.errors import UnsafeModelError

MODELS = {"Sequential", "Functional", "Model"}
RECURRENT = {
    "LSTM", "GRU", "SimpleRNN", "RNN", "LSTMCell", "GRUCell", "SimpleRNNCell", "StackedRNNCells",
    "Bidirectional", "TimeDistributed", "CuDNNLSTM", "CuDNNGRU", "ConvLSTM1D", "ConvLSTM2D",
}
LAYERS = {
    "InputLayer", "Dense", "Dropout", "SpatialDropout1D", "GaussianNoise", "GaussianDropout",
    "AlphaDropout", "Embedding", "Masking", "Activation", "Softmax", "ReLU", "LeakyReLU", "PReLU",
    "ELU", "Flatten", "Reshape", "Permute", "RepeatVector", "Cropping1D", "ZeroPadding1D",
    "Conv1D", "SeparableConv1D", "MaxPooling1D", "AveragePooling1D", "GlobalMaxPooling1D",
    "GlobalAveragePooling1D", "UpSampling1D", "BatchNormalization", "LayerNormalization",
    "Concatenate", "Add", "Subtract", "Multiply", "Average", "Maximum", "Minimum", "Dot",
    "Attention", "AdditiveAttention", "MultiHeadAttention", "Identity",
}
# Objects nested inside layer configs: initialisers, regularisers, constraints, dtype policies.
NESTED = {
    "GlorotUniform", "GlorotNormal", "HeUniform", "HeNormal", "LecunUniform", "LecunNormal",
    "Orthogonal", "Zeros", "Ones", "Constant", "RandomNormal", "RandomUniform",
    "TruncatedNormal", "VarianceScaling", "Identity", "IdentityInitializer",
    "L1", "L2", "L1L2", "OrthogonalRegularizer", "MaxNorm", "MinMaxNorm", "NonNeg", "UnitNorm",
    "DTypePolicy", "FloatDTypePolicy", "Policy", "__keras_tensor__", "__tensor__",
}
CODE_CARRYING = {"Lambda", "TFOpLambda", "SlicingOpLambda", "__lambda__", "function"}
ALLOWED = MODELS | RECURRENT | LAYERS | NESTED


def check_config(config: Any, custom_classes: Iterable[str] = (), allow_code: bool = False,
                 custom_modules: Iterable[str] = ()) -> None:
    """Raise UnsafeModelError naming the first class the file may not instantiate."""
    custom = set(custom_classes)
    allowed = ALLOWED | custom | (CODE_CARRYING if allow_code else set())
    modules = ("keras", *custom_modules)
    for class_name, module, where in _class_names(config, "model"):
        supplied = _bare(class_name) in custom
        if module and not supplied and module.split(".")[0] not in modules and module not in modules:
            # Keras 3 imports a config's "module" to find its class: an arbitrary module would run.
            raise UnsafeModelError(_foreign_module_message(where, class_name, module))
        if class_name in allowed or supplied:
            continue
        if class_name in CODE_CARRYING:
            raise UnsafeModelError(
                f"{where} is a {class_name}, which carries Python code that would run on load; "
                "refused (start the server with --allow-code to trust this file)"
            )
        raise UnsafeModelError(
            f"{where} uses class '{class_name}', which is neither a Keras built-in lstmserve "
            f"allows nor a custom object you supplied; if it is your own layer, pass a module that "
            f"defines class {_bare(class_name)} for Keras 3 with --custom-objects module.path"
        )


def _foreign_module_message(where: str, class_name: str, module: str) -> str:
    shadows = (f" (not Keras's own {class_name}, whose name it shares)"
               if class_name in ALLOWED else "")
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
