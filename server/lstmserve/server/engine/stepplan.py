"""Whether a model can be stepped, and how: its graph split into the part along time and the part per step.

A stateful session runs only the new timesteps of a sequence. That is exact for a graph whose layers,
along the time axis, either act on each timestep alone (Dense, Embedding, Masking, TimeDistributed, ...)
or carry state forward from the past only (LSTM, GRU, SimpleRNN). A recurrent layer without
return_sequences ends the time axis: what follows it sees one value per prefix, so it runs once per
new step, whatever it is (a RepeatVector and a decoder included). Anything else on the time axis
(Bidirectional, Flatten, pooling, attention, convolutions) needs the whole sequence, and the plan
names it.
"""

from __future__ import annotations

from dataclasses import dataclass

import keras
import numpy as np

from lstmserve.server import keras_internals

TIME, STEP = "time", "step"  # a tensor [batch, time, ...] along the sequence, or one value per step

RECURRENT = (keras.layers.LSTM, keras.layers.GRU, keras.layers.SimpleRNN, keras.layers.RNN)
STOCK_CELLS = (keras.layers.LSTMCell, keras.layers.GRUCell, keras.layers.SimpleRNNCell)
# Layers that compute each timestep from that timestep alone (at inference: dropout is off).
PER_TIMESTEP = (
    keras.layers.Dense, keras.layers.Activation, keras.layers.ReLU, keras.layers.LeakyReLU,
    keras.layers.ELU, keras.layers.PReLU, keras.layers.Dropout, keras.layers.SpatialDropout1D,
    keras.layers.GaussianNoise, keras.layers.GaussianDropout, keras.layers.AlphaDropout,
    keras.layers.ActivityRegularization, keras.layers.Masking, keras.layers.Embedding,
    keras.layers.TimeDistributed, keras.layers.Rescaling, keras.layers.Identity,
    keras.layers.Add, keras.layers.Subtract, keras.layers.Multiply, keras.layers.Average,
    keras.layers.Maximum, keras.layers.Minimum,
)
# Per timestep unless their axis is the time axis.
AXIS_LAYERS = (keras.layers.Softmax, keras.layers.Concatenate, keras.layers.LayerNormalization,
               keras.layers.BatchNormalization, keras.layers.UnitNormalization)
# Keras operations a functional graph records between layers (the masks of Masking and Embedding).
ELEMENTWISE_OPS = {"NotEqual", "Equal", "Greater", "GreaterEqual", "Less", "LessEqual", "LogicalAnd",
                   "LogicalOr", "LogicalNot", "Cast", "Add", "Subtract", "Multiply", "Divide", "Where",
                   "Maximum", "Minimum", "Abs", "Negative", "Sqrt", "Square", "Exp", "Log", "Tanh", "Sigmoid"}
REDUCING_OPS = {"Any", "All", "Sum", "Mean", "Max", "Min", "Prod"}
WHY = {  # what a layer on the time axis needs from the whole sequence
    "Bidirectional": "reads the sequence backwards from its end, so each new step changes every output",
    "Flatten": "flattens the time axis", "Reshape": "reshapes across the time axis",
    "Permute": "permutes the time axis", "RepeatVector": "repeats along a second time axis",
    "Attention": "attends over the whole sequence", "MultiHeadAttention": "attends over the whole sequence",
    "AdditiveAttention": "attends over the whole sequence",
    "GlobalAveragePooling1D": "pools over time", "GlobalMaxPooling1D": "pools over time",
    "AveragePooling1D": "pools over time", "MaxPooling1D": "pools over time",
    "Conv1D": "convolves across timesteps", "SeparableConv1D": "convolves across timesteps",
    "DepthwiseConv1D": "convolves across timesteps", "Cropping1D": "crops the time axis",
    "ZeroPadding1D": "pads the time axis", "UpSampling1D": "resamples the time axis",
}


class NotSteppable(Exception):
    """The model's graph needs whole sequences; the message names the layer and why."""


@dataclass(frozen=True)
class StateSlot:
    """One recurrent layer's states inside a session's flat state vector."""

    layer: str
    shapes: tuple[tuple[int, ...], ...]
    offset: int

    @property
    def size(self) -> int:
        return sum(int(np.prod(shape)) for shape in self.shapes)


@dataclass(frozen=True)
class PlanNode:
    node: keras_internals.GraphNode
    layer: object
    region: str  # TIME: run on [batch, k, ...]; STEP: run on [batch * k, ...]
    slot: StateSlot | None = None  # recurrent layers on the time axis


@dataclass(frozen=True)
class StepPlan:
    """The model's nodes in order with the region each runs in, and the state each session keeps."""

    graph: object  # the Functional graph the nodes belong to
    nodes: tuple[PlanNode, ...]
    slots: tuple[StateSlot, ...]
    output_regions: tuple[str, ...]
    stateful: bool

    @property
    def state_size(self) -> int:
        """Floats of state per session: every recurrent layer's (h, c)."""
        return sum(slot.size for slot in self.slots)


def plan_steps(keras_model) -> StepPlan:
    """The plan for stepping `keras_model`; NotSteppable names the first layer that prevents it."""
    graph = keras_internals.functional_graph(keras_model)
    regions: dict[int, str] = {}
    for tensor in graph.inputs:
        _require_time_axis(tensor)
        regions[id(tensor)] = TIME
    nodes, slots, offset = [], [], 0
    for node in keras_internals.graph_nodes(graph):
        layer = node.layer
        region = _region_of(node, layer, regions)
        slot = None
        if region == TIME and isinstance(layer, RECURRENT):
            slot = StateSlot(layer.name, _state_shapes(layer), offset)
            offset += slot.size
            slots.append(slot)
        for index, tensor in enumerate(node.outputs):
            regions[id(tensor)] = _output_region(layer, region, index)
        nodes.append(PlanNode(node, layer, region, slot))
    outputs = tuple(regions[id(tensor)] for tensor in graph.outputs)
    stateful = any(getattr(layer, "stateful", False) for layer in _all_layers(keras_model))
    return StepPlan(graph, tuple(nodes), tuple(slots), outputs, stateful)


def _require_time_axis(tensor) -> None:
    shape, dtype = tuple(tensor.shape), np.dtype(tensor.dtype)
    if len(shape) >= 3 or (len(shape) == 2 and dtype.kind in "iu"):
        return
    raise NotSteppable(f"input '{tensor.name}' of shape {list(shape)} has no time axis "
                       "([batch, timesteps, features], or [batch, timesteps] of token ids)")


def _region_of(node, layer, regions: dict[int, str]) -> str:
    inputs = {regions[id(tensor)] for tensor in node.inputs}
    if inputs == {STEP} or not inputs:
        return STEP  # one value per step: any layer runs on it as on a batch of samples
    if inputs == {TIME, STEP}:
        raise NotSteppable(f"{_named(layer)} combines the sequence with values computed once per sequence "
                           "(as attention over the whole sequence does)")
    _check_time_layer(layer, len(node.inputs[0].shape))
    return TIME


def _check_time_layer(layer, rank: int) -> None:
    name = type(layer).__name__
    if type(layer).__module__.startswith("keras.src.ops.") and name in ELEMENTWISE_OPS | REDUCING_OPS:
        axis = getattr(layer, "axis", None)
        if name in REDUCING_OPS and (axis is None or 1 in _axes(layer, rank)):
            raise NotSteppable(f"operation {name} '{layer.name}' reduces over the time axis")
    elif isinstance(layer, RECURRENT):
        _check_recurrent(layer)
    elif type(layer) in AXIS_LAYERS:
        if 1 in _axes(layer, rank):
            raise NotSteppable(f"{_named(layer)} works along the time axis (axis 1)")
    elif type(layer) not in PER_TIMESTEP:
        why = WHY.get(type(layer).__name__, "is not known to compute each timestep from that timestep alone")
        raise NotSteppable(f"{_named(layer)} {why}")


def _check_recurrent(layer) -> None:
    if type(layer) not in RECURRENT or not isinstance(layer.cell, STOCK_CELLS):
        raise NotSteppable(f"{_named(layer)} is a recurrent layer of a kind lstmserve does not step "
                           "(LSTM, GRU and SimpleRNN, or RNN of their cells, are)")
    if layer.go_backwards:
        raise NotSteppable(f"{_named(layer)} runs backwards (go_backwards=True), from the sequence's end")
    if layer.return_state:
        raise NotSteppable(f"{_named(layer)} returns its states as outputs (return_state=True)")


def _output_region(layer, region: str, index: int) -> str:
    if region == TIME and isinstance(layer, RECURRENT) and not layer.return_sequences:
        return STEP  # the last output of each prefix: one value per step from here on
    return region


def _axes(layer, rank: int = 3) -> set[int]:
    axis = getattr(layer, "axis", -1)
    axes = axis if isinstance(axis, (list, tuple)) else [axis]
    return {a % rank for a in axes}


def _state_shapes(layer) -> tuple[tuple[int, ...], ...]:
    sizes = layer.cell.state_size
    sizes = sizes if isinstance(sizes, (list, tuple)) else [sizes]
    return tuple((int(size),) if np.isscalar(size) else tuple(size) for size in sizes)


def _all_layers(keras_model):
    for layer in keras_model.layers:
        yield layer
        yield from getattr(layer, "layers", ())
        inner = getattr(layer, "layer", None)
        if inner is not None:
            yield inner


def _named(layer) -> str:
    return f"{type(layer).__name__} '{layer.name}'"
