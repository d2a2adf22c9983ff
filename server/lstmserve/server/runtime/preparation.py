"""Data preparation that travels inside the model file: applied to raw inputs, inverted on outputs.

The trainer fits it and the server applies it; both import this one module.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from lstmserve.server.runtime.errors import ModelLoadError
from lstmserve.server.runtime.signature import TensorSpec


@dataclass(frozen=True)
class Preparation:
    """The identity unless the model file carries steps."""

    input_steps: tuple[dict[str, Any], ...] = ()
    output_steps: tuple[dict[str, Any], ...] = ()
    raw_features: tuple[str, ...] = ()
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def is_identity(self) -> bool:
        return not self.input_steps and not self.output_steps

    @classmethod
    def from_metadata(cls, metadata: dict[str, Any] | None) -> "Preparation":
        if not metadata:
            return cls()
        if metadata.get("input_steps") or metadata.get("output_steps"):
            raise ModelLoadError("this server does not yet apply stored preparation steps")
        return cls(raw_features=tuple(metadata.get("raw_features", ())))

    def to_metadata(self) -> dict[str, Any]:
        return {"input_steps": list(self.input_steps), "output_steps": list(self.output_steps),
                "raw_features": list(self.raw_features)}

    def describe(self) -> str:
        return "none" if self.is_identity else f"{len(self.input_steps)} input steps"

    def raw_input_specs(self, model_inputs: Sequence[TensorSpec]) -> list[TensorSpec]:
        """What a client sends when it sends raw observations."""
        return list(model_inputs)

    def raw_timesteps(self, model_inputs: Sequence[TensorSpec]) -> int | None:
        shape = model_inputs[0].shape if model_inputs else ()
        return shape[1] if len(shape) == 3 else None

    def prepare(self, arrays: list[np.ndarray]) -> list[np.ndarray]:
        """Raw observations -> the model's input space."""
        return arrays

    def restore(self, outputs: list[np.ndarray], raw_inputs: list[np.ndarray]) -> list[np.ndarray]:
        """Model outputs -> the client's units (raw inputs are needed to undo differencing)."""
        return outputs
