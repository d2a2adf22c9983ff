"""Sequence classification: row groups (or wide rows) as sequences, string labels, a softmax LSTM."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from lstmserve.format.preparation import Preparation, fit_preparation
from lstmserve.trainer.data import DataError, Table, date_column, encode_labels
from lstmserve.trainer.fitting import Fitted, Recipe, fit, lstm_stack
from lstmserve.trainer.save import keras

RECIPE = Recipe(units=32, epochs=200, patience=15, batch_size=32, learning_rate=3e-3)
VAL_FRACTION = 0.15


@dataclass(frozen=True)
class Sequences:
    """Raw sequences [n, timesteps, features] with class indices into `labels`."""

    name: str
    X: np.ndarray
    y: np.ndarray
    labels: list[str]
    features: list[str]


@dataclass(frozen=True)
class Classifier:
    model: keras.Model
    preparation: Preparation
    fitted: Fitted
    rows: int

    def probabilities(self, raw: np.ndarray) -> np.ndarray:
        return self.model.predict(self.preparation.transform(raw).astype(np.float32), verbose=0)


@dataclass(frozen=True)
class ClassValidation:
    figures: dict[str, dict[str, float]]
    confusion: np.ndarray = field(repr=False)


def load_sequences(table: Table, label: str, group: str | None = None,
                   features: list[str] | None = None, ignore: str | None = None) -> Sequences:
    """Long format (one row per timestep, a group column) or wide (one row per sequence, one feature)."""
    labels_column = table.column(label, "label")
    if group is None:
        skip = (label, ignore or date_column(table))
        features = features or [c for c in table.columns if c not in skip]
        X = table.numeric(features, "timestep")[..., None]
        y, labels = encode_labels(labels_column, f"{table.name} column '{label}'")
        return Sequences(table.name, X, y, labels, ["value"])
    features = features or [c for c in table.columns if c not in (label, group, ignore)]
    values = table.numeric(features, "feature")
    groups = table.column(group, "group")
    order = list(dict.fromkeys(groups))
    index = {name: [i for i, g in enumerate(groups) if g == name] for name in order}
    _check_groups(table.name, group, label, index, labels_column)
    X = np.stack([values[rows] for rows in index.values()])
    y, labels = encode_labels([labels_column[rows[0]] for rows in index.values()],
                              f"{table.name} column '{label}'")
    return Sequences(table.name, X, y, labels, features)


def _check_groups(name: str, group: str, label: str, index: dict[str, list[int]],
                  labels: list[str]) -> None:
    lengths = {len(rows) for rows in index.values()}
    if len(lengths) > 1:
        first = next(iter(index))
        odd = next(g for g, rows in index.items() if len(rows) != len(index[first]))
        raise DataError(f"{name}: every '{group}' group must have the same number of rows; group "
                        f"{first!r} has {len(index[first])}, group {odd!r} has {len(index[odd])}")
    for g, rows in index.items():
        if len({labels[r] for r in rows}) > 1:
            raise DataError(f"{name}: group {g!r} has several '{label}' values "
                            f"{sorted({labels[r] for r in rows})}; expected one label per sequence")


def stratified_split(y: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train, holdout) indices holding out `fraction` of each class, at least one of each."""
    rng = np.random.default_rng(seed)
    held = []
    for label in np.unique(y):
        members = rng.permutation(np.flatnonzero(y == label))
        held.extend(members[:max(1, round(len(members) * fraction))])
    held = np.sort(np.array(held))
    return np.setdiff1d(np.arange(len(y)), held), held


def train(seqs: Sequences, recipe: Recipe, rows: np.ndarray | None = None,
          epochs: int | None = None) -> Classifier:
    """Fit scaling on the training sequences only, then the model; early-stopped unless `epochs` is fixed."""
    rows = np.arange(len(seqs.y)) if rows is None else rows
    X, y = seqs.X[rows], seqs.y[rows]
    prep = fit_preparation(X.reshape(-1, X.shape[-1]), seqs.features, None)
    prep = replace(prep, extra={"timesteps": X.shape[1]})
    prepared = prep.transform(X).astype(np.float32)
    build = lambda: _build(X.shape[1:], len(seqs.labels), recipe)  # noqa: E731
    loss = "sparse_categorical_crossentropy"
    if epochs is not None:
        fitted = fit(build, prepared, y, recipe, loss, epochs=epochs)
    else:
        fit_rows, val_rows = stratified_split(y, VAL_FRACTION, recipe.seed)
        fitted = fit(build, prepared[fit_rows], y[fit_rows], recipe, loss,
                     validation=(prepared[val_rows], y[val_rows]))
    return Classifier(fitted.model, prep, fitted, len(rows))


def _build(shape: tuple[int, ...], classes: int, recipe: Recipe) -> keras.Model:
    # Softmax even for two classes: PROBABILITIES then always sum to 1 over the labels.
    return lstm_stack(shape, recipe.units, classes, "softmax")


def validate(seqs: Sequences, recipe: Recipe, fraction: float) -> tuple[Classifier, ClassValidation]:
    """Fit on a stratified part; score the model and the majority class on the rest."""
    fit_rows, held = stratified_split(seqs.y, fraction, recipe.seed)
    classifier = train(seqs, recipe, fit_rows)
    truth = seqs.y[held]
    probabilities = classifier.probabilities(seqs.X[held])
    prior = np.bincount(seqs.y[fit_rows], minlength=len(seqs.labels)) / len(fit_rows)
    majority = np.tile(prior, (len(held), 1))
    figures = {"model": class_scores(probabilities, truth), "majority_class": class_scores(majority, truth)}
    return classifier, ClassValidation(figures, confusion(probabilities.argmax(-1), truth, len(seqs.labels)))


def class_scores(probabilities: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    picked = np.clip(probabilities[np.arange(len(truth)), truth], 1e-7, 1.0)
    return {"accuracy": float((probabilities.argmax(-1) == truth).mean()),
            "log_loss": float(-np.log(picked).mean()), "sequences": len(truth)}


def confusion(predicted: np.ndarray, truth: np.ndarray, classes: int) -> np.ndarray:
    """Rows are true classes, columns predicted ones."""
    matrix = np.zeros((classes, classes), dtype=np.int64)
    np.add.at(matrix, (truth, predicted), 1)
    return matrix
