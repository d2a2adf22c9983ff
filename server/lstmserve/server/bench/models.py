"""The benchmark models: the seed (transport-bound), a heavy stacked LSTM (compute-bound), asked 16 rows
or one row per request, and the heavy stack on free timesteps for streaming sessions."""

from __future__ import annotations

import sys
from pathlib import Path

HEAVY_TIMESTEPS, HEAVY_FEATURES = 50, 8
# "sessions": the heavy stack on free timesteps, stepped by streaming sessions; its requests carry 500.
SESSION_HISTORY = 500
# "heavy1": the heavy model asked one sequence per request, the case most callers have.
SHAPES = {"seed": (1, 1), "heavy": (HEAVY_TIMESTEPS, HEAVY_FEATURES),
          "heavy1": (HEAVY_TIMESTEPS, HEAVY_FEATURES), "sessions": (None, HEAVY_FEATURES)}


def build(name: str, path: Path) -> Path:
    """Write the model to `path` unless it is there; weights are seeded, their values do not matter."""
    if path.exists():
        return path
    import keras
    keras.utils.set_random_seed(1)
    layers = {
        "seed": [keras.layers.LSTM(10), keras.layers.Dense(1)],
        "heavy": [keras.layers.LSTM(64, return_sequences=True), keras.layers.LSTM(64),
                  keras.layers.Dense(1)],
        "heavy1": [keras.layers.LSTM(64, return_sequences=True), keras.layers.LSTM(64),
                   keras.layers.Dense(1)],
        "sessions": [keras.layers.LSTM(64, return_sequences=True), keras.layers.LSTM(64),
                     keras.layers.Dense(1)],
    }[name]
    model = keras.Sequential([keras.Input(SHAPES[name]), *layers])
    path.parent.mkdir(parents=True, exist_ok=True)
    model.save(path)
    return path


if __name__ == "__main__":
    folder = Path(sys.argv[1])
    for model_name in sys.argv[2:]:
        print(build(model_name, folder / f"{model_name}.h5"))
