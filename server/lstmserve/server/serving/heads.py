"""Output heads: each output with its activation and labels, answering the three prediction modes
(values, and the classes and probabilities of Keras's removed predict_classes and predict_proba)."""

from __future__ import annotations

import enum
import functools
from dataclasses import dataclass

import numpy as np

from lstmserve.server.errors import ModeNotSupported
from lstmserve.server.specs import TensorSpec

PROBABILISTIC = ("sigmoid", "softmax")


class Mode(enum.Enum):
    VALUES = "values"
    CLASSES = "classes"
    PROBABILITIES = "probabilities"


@dataclass(frozen=True)
class OutputHead:
    """One model output: its spec, the activation that produced it, and its class labels."""

    spec: TensorSpec
    activation: str
    labels: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def units(self) -> int | None:
        return self.spec.shape[-1] if len(self.spec.shape) > 1 else 1

    @functools.cached_property  # asked on every request
    def modes(self) -> tuple[Mode, ...]:
        if self.activation in PROBABILISTIC:
            return (Mode.VALUES, Mode.CLASSES, Mode.PROBABILITIES)
        return (Mode.VALUES,)

    def require(self, mode: Mode, model_name: str) -> None:
        """ModeNotSupported when this output cannot answer in `mode`, saying why."""
        if mode not in self.modes:
            raise ModeNotSupported(
                f"model '{model_name}' output '{self.name}' has a {self.activation} activation; "
                f"{mode.value} mode needs a sigmoid or softmax output (use values mode)"
            )

    def classes(self, values: np.ndarray) -> np.ndarray:
        """Keras predict_classes: argmax over the last axis, or p > 0.5 for a single unit."""
        if values.shape[-1] > 1:
            return values.argmax(axis=-1).astype(np.int64)
        return (values[..., 0] > 0.5).astype(np.int64)

    def label_strings(self, classes: np.ndarray) -> list[str] | None:
        """Labels of each class index, row-major; None when the model carries no labels."""
        if not self.labels:
            return None
        return [self.labels[i] for i in classes.ravel()]
