"""TensorSpec: the name, dtype and shape of one model input or output, as every part of the server sees it."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class TensorSpec:
    """Name, dtype and shape of one input or output; None dimensions take any size."""

    name: str
    dtype: np.dtype
    shape: tuple[int | None, ...]

    def describe(self) -> str:
        """'float32 [batch, timesteps=12, features=1]'."""
        dims = [f"{label}={dim}" if dim is not None else label
                for label, dim in zip(dimension_labels(len(self.shape)), self.shape)]
        dims[0] = "batch"
        return f"{self.dtype.name} [{', '.join(dims)}]"


def dimension_labels(rank: int) -> list[str]:
    """What each axis means to a person: the recurrent layout where the rank allows it."""
    known = {1: ["batch"], 2: ["batch", "features"], 3: ["batch", "timesteps", "features"]}
    return known.get(rank, ["batch"] + [f"dim{i}" for i in range(1, rank)])
