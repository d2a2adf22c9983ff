"""A user's own layers for Keras 3, as an operator passes them with --custom-objects custom_layers."""

from __future__ import annotations

import keras


class Attention(keras.layers.Layer):
    """Attention pooling over timesteps; its name shadows keras.layers.Attention (legacy_corpus's twin)."""

    def __init__(self, units: int = 4, **kwargs):
        super().__init__(**kwargs)
        self.units = units

    def build(self, input_shape):
        self.w = self.add_weight(name="w", shape=(input_shape[-1], self.units))
        self.v = self.add_weight(name="v", shape=(self.units, 1))

    def call(self, x):
        ops = keras.ops
        scores = ops.softmax(ops.matmul(ops.tanh(ops.matmul(x, self.w)), self.v), axis=1)
        return ops.sum(x * scores, axis=1)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], input_shape[-1])

    def get_config(self):
        return {**super().get_config(), "units": self.units}


class FailsWhenRun(keras.layers.Layer):
    """Builds (its output shape is declared), then fails when run: a model that loads and cannot warm up."""

    def call(self, x):
        raise ValueError("FailsWhenRun refuses to run")

    def compute_output_shape(self, input_shape):
        return input_shape
