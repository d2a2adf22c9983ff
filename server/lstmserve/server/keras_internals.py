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
from dataclasses import dataclass, field
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


# --- Stepping a model (engine/stepplan.py, engine/stepper.py) ---------------------------------------
# Keras keeps a model's graph, a tensor's mask and the recurrent loop in private places; stepping a
# session walks the graph itself and runs each recurrent layer's own loop from a given state.

def functional_graph(keras_model) -> Any:
    """The Functional graph behind a model (a built Sequential keeps one inside)."""
    graph = getattr(keras_model, "_functional", None) if isinstance(keras_model, keras.Sequential) else None
    graph = graph or keras_model
    if not hasattr(graph, "_nodes_by_depth"):
        raise TypeError(f"{type(keras_model).__name__} has no graph of layers (a subclassed model?)")
    return graph


@dataclass(frozen=True)
class GraphNode:
    """One call of a layer (or operation) in a model's graph: what it reads and what it produces."""

    layer: Any
    inputs: tuple  # the symbolic tensors it reads
    outputs: tuple  # the symbolic tensors it produces
    node: Any = field(repr=False)

    def arguments(self, values: dict[int, Any]) -> tuple[tuple, dict]:
        """The call's arguments with its symbolic tensors replaced by `values` (keyed by id)."""
        return self.node.arguments.fill_in(values)


def graph_nodes(graph) -> list[GraphNode]:
    """The graph's layer calls in an order that computes every input before it is used."""
    by_depth = graph._nodes_by_depth
    return [GraphNode(node.operation, tuple(node.input_tensors), tuple(node.outputs), node)
            for depth in sorted(by_depth, reverse=True) for node in by_depth[depth]
            if node.operation is not None and not node.is_input]


def accepts_training(layer) -> bool:
    """Whether a layer's call takes `training` (Keras works it out once, privately)."""
    return bool(getattr(layer, "_call_has_training_arg", False))


def get_mask(tensor) -> Any:
    from keras.src import backend
    return backend.get_keras_mask(tensor)


def set_mask(tensor, mask) -> None:
    from keras.src import backend
    backend.set_keras_mask(tensor, mask)


def run_recurrent(layer, sequences, states: list, mask) -> tuple[Any, list]:
    """Every step's output [batch, time, units] and the final states of a recurrent layer started from
    `states`: the cell's own call in Keras's own loop (backend.rnn, as RNN.inner_loop runs it), asked for
    all outputs where a layer without return_sequences keeps only the last. A masked step keeps the
    states and repeats the last output (zeros with zero_output_for_mask), as Keras does; the mask is
    applied here because Keras's loop would repeat its own zeros, not the previous chunk's last output
    (for the stock cells it is their first state, h)."""
    from keras.src import backend, ops, tree
    cell = layer.cell
    kwargs = {"training": False} if accepts_training(cell) else {}

    def step(inputs, step_states):
        x, keep = inputs if mask is not None else (inputs, None)
        output, new_states = cell(x, step_states, **kwargs)
        new_states = list(new_states) if tree.is_nested(new_states) else [new_states]
        if keep is None:
            return output, new_states
        keep = keep > 0
        carried = ops.zeros_like(output) if layer.zero_output_for_mask else step_states[0]
        return (ops.where(keep, output, carried),
                [ops.where(keep, new, old) for new, old in zip(new_states, step_states)])

    states = [ops.cast(state, cell.compute_dtype) for state in states]
    inputs = sequences if mask is None else (sequences, ops.cast(mask, sequences.dtype)[..., None])
    _, outputs, new_states = backend.rnn(
        step, inputs, states, go_backwards=False, mask=None, unroll=False,
        input_length=sequences.shape[1], return_all_outputs=True)
    return ops.cast(outputs, layer.compute_dtype), list(tree.flatten(new_states))
