"""Forecasting models for session tests: random weights, a fitted preparation and a forecast declaration,
saved as the trainer saves (the numbers need not be good, only served exactly)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import keras
import numpy as np

from lstmserve.format.metadata import write_serving_metadata
from lstmserve.format.preparation import fit_preparation

SERIES = (100 + 10 * np.sin(np.arange(200) / 3) + np.arange(200) * 0.5).astype(np.float32)


def series(features: int = 1) -> np.ndarray:
    """[rows, features]: a trending seasonal series, and for more features, shifted copies of it."""
    return np.stack([SERIES * (1 + 0.1 * i) + i for i in range(features)], axis=1)


def forecaster(path: Path, timesteps: int | None = 6, horizon: int = 1, features: int = 1, lag: int = 3,
               seed: int = 21, declare: bool = True) -> Path:
    """LSTM(5) -> Dense(horizon) on prepared steps (difference at `lag`, standard scaling)."""
    keras.utils.set_random_seed(seed)
    model = keras.Sequential([keras.Input((timesteps, features), name="input_layer"),
                              keras.layers.LSTM(5, name="lstm"), keras.layers.Dense(horizon, name="dense")])
    model.save(path)
    names = ["y"] + [f"x{i}" for i in range(1, features)]
    prep = fit_preparation(series(features)[:120], names, "y", lags=(lag,) if lag else ())
    if timesteps is not None:
        prep = replace(prep, extra={"timesteps": timesteps, "horizon": horizon})
    metadata = {"task": "regression", "preparation": prep.to_metadata()}
    if declare:
        metadata["forecast"] = {"feature": "y", "horizon": horizon}
    write_serving_metadata(path, metadata)
    return path
