"""Built-in demo models: the seed's regression example and a small three-class sequence classifier."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

# Keras through save: it sets TensorFlow's log level before TensorFlow loads.
from lstmserve.trainer.fitting import lstm_stack
from lstmserve.trainer.save import keras, save_model

SEED_PAIRS = [[0.0, 0.1], [0.1, 0.2], [0.2, 0.3], [0.3, 0.4], [0.4, 0.5]]
CLASSIFIER_LABELS = ["falling", "flat", "rising"]
CLASSIFIER_TIMESTEPS = 20


@dataclass(frozen=True)
class DemoResult:
    path: Path
    summary: str


def seed_data() -> tuple[np.ndarray, np.ndarray]:
    """The seed's training pairs: X is the first column as (5, 1, 1), y the second."""
    pairs = np.array(SEED_PAIRS, dtype=np.float32)
    return pairs[:, 0].reshape(len(pairs), 1, 1), pairs[:, 1]


def train_seed(output: Path, epochs: int = 300, seed: int = 1, verbose: int = 0) -> DemoResult:
    """The seed's final model: LSTM(10) then Dense(1, linear), mse/adam, 300 epochs, unshuffled."""
    keras.utils.set_random_seed(seed)
    X, y = seed_data()
    model = lstm_stack((1, 1), 10, 1, "linear")
    model.compile(loss="mse", optimizer="adam")
    history = model.fit(X, y, epochs=epochs, shuffle=False, verbose=verbose)
    loss = float(history.history["loss"][-1])
    save_model(model, output, task="regression", training={
        "demo": "seed", "rows": len(X), "epochs": epochs, "seed": seed, "final_loss": loss})
    return DemoResult(output, f"seed demo: {epochs} epochs, final mse {loss:.5f}")


def classifier_data(rows: int = 600, seed: int = 7) -> tuple[np.ndarray, np.ndarray]:
    """Noisy sequences that fall, stay flat or rise; y holds indices into CLASSIFIER_LABELS."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, rows)
    slopes = (y - 1) * rng.uniform(0.02, 0.06, rows)
    steps = np.arange(CLASSIFIER_TIMESTEPS)
    X = slopes[:, None] * steps + rng.normal(0.0, 0.05, (rows, CLASSIFIER_TIMESTEPS))
    return X[..., None].astype(np.float32), y


def train_classifier(output: Path, epochs: int = 25, seed: int = 1, verbose: int = 0) -> DemoResult:
    """LSTM(16) then Dense(3, softmax) over 20-step sequences, labels kept as strings."""
    keras.utils.set_random_seed(seed)
    X, y = classifier_data()
    model = lstm_stack((CLASSIFIER_TIMESTEPS, 1), 16, len(CLASSIFIER_LABELS), "softmax")
    model.compile(loss="sparse_categorical_crossentropy", optimizer="adam", metrics=["accuracy"])
    history = model.fit(X, y, epochs=epochs, batch_size=32, verbose=verbose)
    accuracy = float(history.history["accuracy"][-1])
    save_model(model, output, task="classification", labels=CLASSIFIER_LABELS, training={
        "demo": "classifier", "rows": len(X), "epochs": epochs, "seed": seed,
        "final_accuracy": accuracy})
    return DemoResult(output, f"classifier demo: {epochs} epochs, training accuracy {accuracy:.3f}")


DEMOS = {"seed": train_seed, "classifier": train_classifier}
