"""One Keras fit shared by every recipe: seeded, early-stopped on validation loss, Keras's progress bar."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from lstmserve.trainer.save import keras


def deterministic() -> None:
    """Same seed, same weights: TensorFlow's CPU kernels may otherwise reduce in any order.

    Process-wide, so only the command-line entry points call it, not the library functions."""
    import tensorflow as tf
    tf.config.experimental.enable_op_determinism()


# Clients send inputs and read outputs by layer name, and Keras numbers default names per process
# ("input_layer_5", "dense_3" after other models): every name is given, as a fresh process names it,
# so a file does not depend on what else its process built.
INPUT_NAME = "input_layer"
OUTPUT_NAME = "dense"


def lstm_stack(input_shape: tuple[int, ...], units: int, outputs: int,
               activation: str = "linear") -> keras.Model:
    """Input -> LSTM(units) -> Dense(outputs, activation): every model the trainer writes."""
    return keras.Sequential([keras.Input(input_shape, name=INPUT_NAME), keras.layers.LSTM(units, name="lstm"),
                             keras.layers.Dense(outputs, activation=activation, name=OUTPUT_NAME)])


@dataclass(frozen=True)
class Recipe:
    """Hyperparameters of one training run; the defaults are the monthly-series recipe."""

    units: int = 16
    epochs: int = 400
    patience: int = 30
    batch_size: int = 8
    learning_rate: float = 1e-3
    seed: int = 1
    verbose: int = 1

    def record(self) -> dict:
        return {"units": self.units, "max_epochs": self.epochs, "patience": self.patience,
                "batch_size": self.batch_size, "learning_rate": self.learning_rate, "seed": self.seed}


@dataclass(frozen=True)
class Fitted:
    model: keras.Model
    epochs_run: int
    best_epoch: int
    loss: float
    val_loss: float | None


def fit(build: Callable[[], keras.Model], X: np.ndarray, y: np.ndarray, recipe: Recipe, loss: str,
        validation: tuple[np.ndarray, np.ndarray] | None = None, epochs: int | None = None) -> Fitted:
    """Seed, build, fit; with validation rows, stop when val loss stalls and keep the best weights."""
    keras.utils.set_random_seed(recipe.seed)
    model = build()
    model.compile(loss=loss, optimizer=keras.optimizers.Adam(recipe.learning_rate))
    callbacks = []
    if validation is not None:
        callbacks.append(keras.callbacks.EarlyStopping(
            monitor="val_loss", patience=recipe.patience, restore_best_weights=True))
    history = model.fit(X, y, validation_data=validation, epochs=epochs or recipe.epochs,
                        batch_size=recipe.batch_size, callbacks=callbacks, verbose=recipe.verbose)
    losses = history.history["loss"]
    val = history.history.get("val_loss")
    best = int(np.argmin(val)) if val else len(losses) - 1
    return Fitted(model, len(losses), best + 1, float(losses[best]), float(val[best]) if val else None)

