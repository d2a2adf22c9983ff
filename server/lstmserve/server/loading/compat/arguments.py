"""Layer arguments Keras 2 wrote that Keras 3 no longer takes: each translated or dropped with a step
naming the layers, or refused where dropping it would change the answer."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from lstmserve.server.errors import ModelLoadError
from lstmserve.server.loading.compat.tree import Translation, describe, layer_nodes

ANY = object()  # drop whatever the value
INITIALIZERS = {
    "Constant", "GlorotNormal", "GlorotUniform", "HeNormal", "HeUniform", "Identity", "LecunNormal",
    "LecunUniform", "Ones", "Orthogonal", "RandomNormal", "RandomUniform", "TruncatedNormal",
    "VarianceScaling", "Zeros",
}
SPATIAL_DROPOUT = {"SpatialDropout1D", "SpatialDropout2D", "SpatialDropout3D"}
GROUPLESS_CONVOLUTIONS = {"SeparableConv1D", "SeparableConv2D", "DepthwiseConv1D", "DepthwiseConv2D",
                          "Conv1DTranspose", "Conv2DTranspose", "Conv3DTranspose"}


@dataclass(frozen=True)
class OldArgument:
    """An argument of `classes` Keras 3 refuses. Dropped when its value is `inert` (ANY: always), or
    renamed to `rename`; any other value is refused (or kept, with keep_other, where Keras 3 takes it)."""

    classes: frozenset[str]
    argument: str
    why: str
    inert: Any = ANY
    rename: str | None = None
    keep_other: bool = False


def _old(classes: set[str], argument: str, why: str, **how: Any) -> OldArgument:
    return OldArgument(frozenset(classes), argument, why, **how)


OLD_ARGUMENTS = (
    _old(SPATIAL_DROPOUT, "noise_shape",
         "Keras 3 spatial dropout derives its own; dropout is off when serving"),
    _old(SPATIAL_DROPOUT | {"Discretization"}, "trainable",
         "Keras 3's class takes none; the layer has no weights"),
    _old({"LeakyReLU"}, "alpha", "Keras 3 calls the same slope negative_slope", rename="negative_slope"),
    _old({"SeparableConv1D", "SeparableConv2D"}, "kernel_initializer",
         "a separable convolution's kernels are its depthwise and pointwise ones"),
    _old({"SeparableConv1D", "SeparableConv2D"}, "kernel_regularizer", "training only"),
    _old({"SeparableConv1D", "SeparableConv2D"}, "kernel_constraint", "training only"),
    _old(GROUPLESS_CONVOLUTIONS, "groups", "Keras 3's class has no groups; 1 is a plain convolution",
         inert=1),
    _old({"BatchNormalization"}, "fused", "a kernel choice; inference uses the moving statistics either way"),
    _old({"BatchNormalization"}, "virtual_batch_size",
         "training only: inference uses the moving statistics for every row"),
    _old({"MultiHeadAttention"}, "query_shape", "Keras 3 builds from the first call"),
    _old({"MultiHeadAttention"}, "key_shape", "Keras 3 builds from the first call"),
    _old({"MultiHeadAttention"}, "value_shape", "Keras 3 builds from the first call"),
    _old({"MultiHeadAttention"}, "softmax_robust_masking", "Keras 3 has no robust masking", inert=False),
    _old({"Softmax"}, "robust_masking", "Keras 3 has no robust masking", inert=False),
    _old({"Attention", "AdditiveAttention"}, "causal",
         "Keras 3 takes use_causal_mask at call time, not as a layer argument", inert=False),
    # Keras 3's legacy loader reads the string 'dot' as the function keras.layers.dot; 'dot' is its default.
    _old({"Attention"}, "score_mode", "'dot' is Keras 3's default", inert="dot", keep_other=True),
    _old({"Embedding"}, "sparse", "sparse gradients are a training choice"),
)


def old_layer_arguments(t: Translation) -> None:
    """Drop, rename or refuse each OLD_ARGUMENTS entry, one step per argument."""
    for old in OLD_ARGUMENTS:
        touched = []
        for node in layer_nodes(t.config):
            if node["class_name"] in old.classes and old.argument in node["config"]:
                if _apply(old, node):
                    touched.append(describe(node))
        what = f"renamed {old.rename}" if old.rename else "removed"
        t.record(touched, f"{old.argument} {what} (Keras 2 argument Keras 3 refuses: {old.why})")


def _apply(old: OldArgument, node: dict[str, Any]) -> bool:
    config = node["config"]
    value = config[old.argument]
    if old.rename:
        config.setdefault(old.rename, config.pop(old.argument))
        return True
    if old.inert is ANY or value == old.inert:
        del config[old.argument]
        return True
    if old.keep_other:
        return False
    raise ModelLoadError(
        f"{describe(node)} was saved with {old.argument}={value!r:.60}; Keras 3 has no such argument "
        f"({old.why}), and serving it without would change the answers")


def thresholded_relu_as_relu(t: Translation) -> None:
    """Keras 3 removed ThresholdedReLU; ReLU(threshold=theta) computes x if x > theta else 0, the same."""
    touched = []
    for node in layer_nodes(t.config):
        if node["class_name"] == "ThresholdedReLU":
            theta = node["config"].pop("theta", 1.0)
            node["class_name"] = "ReLU"
            node["config"].update(threshold=theta, negative_slope=0.0, max_value=None)
            touched.append(f"ThresholdedReLU '{node['config'].get('name', '?')}'")
    t.record(touched, "ThresholdedReLU built as ReLU(threshold=theta) (Keras 3 has no ThresholdedReLU)")


def initializer_dtypes(t: Translation) -> None:
    """tf.keras under TensorFlow 1.x stored a dtype in initializer configs; Keras 3's take none."""
    touched = []
    for node in layer_nodes(t.config):
        if node["class_name"] in INITIALIZERS and "dtype" in node["config"]:
            del node["config"]["dtype"]
            touched.append(node["class_name"])
    t.record(sorted(set(touched)), "dtype removed from initializer configs (TensorFlow 1.x tf.keras; "
             "initializers never run on loaded weights)")


ARGUMENT_REWRITES: tuple[Callable[[Translation], None], ...] = (
    old_layer_arguments, thresholded_relu_as_relu, initializer_dtypes,
)
