"""Forecasting: a series framed as supervised windows, an LSTM fit on prepared rows, scored vs baselines."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from lstmserve.format.preparation import Preparation, fit_preparation
from lstmserve.trainer.data import DataError, Table, date_column, season_of
from lstmserve.trainer.fitting import Fitted, Recipe, fit, lstm_stack
from lstmserve.trainer.save import keras

# Early stopping watches the last tenth of the training windows (at least one).
VAL_FRACTION = 0.1
MIN_WINDOWS = 5


@dataclass(frozen=True)
class Series:
    """A checked series: raw values [rows, features], the target among them, and what the index says."""

    name: str
    values: np.ndarray
    features: list[str]
    target: str
    season: int | None = None
    date: str | None = None

    @property
    def target_values(self) -> np.ndarray:
        return self.values[:, self.features.index(self.target)]


@dataclass(frozen=True)
class Framing:
    """How rows become windows: `timesteps` prepared steps in, `horizon` steps out."""

    timesteps: int = 6
    horizon: int = 1
    lags: tuple[int, ...] = ()
    scaling: str = "standard"
    log: bool = False


@dataclass(frozen=True)
class Forecaster:
    """A fitted model with the preparation it was fitted with; forecasts in the target's units."""

    model: keras.Model
    preparation: Preparation
    fitted: Fitted
    rows: int

    def forecast(self, raw_windows: np.ndarray) -> np.ndarray:
        """Raw windows [n, timesteps + lag, features] -> forecasts [n, horizon], the server's arithmetic."""
        prepared = self.preparation.transform(raw_windows).astype(np.float32)
        outputs = self.model.predict(prepared, verbose=0)
        target = self.preparation.raw_features.index(self.preparation.target)
        return self.preparation.inverse_target(outputs, raw_windows[..., target])


@dataclass(frozen=True)
class Validation:
    """Holdout figures in the target's units, with the forecasts behind them (for the plot)."""

    figures: dict[str, dict[str, float]]
    truth: np.ndarray
    predictions: dict[str, np.ndarray] = field(repr=False)
    train_rows: int = 0
    first_target: int = 0


def load_series(table: Table, target: str | None = None, features: list[str] | None = None,
                date: str | None = None, season: int | None = None) -> Series:
    """Pick target and feature columns (the date column is ignored) and check every value."""
    date = date or date_column(table)
    candidates = [c for c in table.columns if c != date]
    target = target or (features[0] if features else candidates[0])
    features = list(features or candidates)
    if target not in features:
        features = [target, *features]
    table.column(target, "target")  # a missing target is named as such, before its features
    values = table.numeric(features, "feature")
    detected = season if season is not None else season_of(table, date)
    return Series(table.name, values, features, target, detected or None, date)


def default_lags(season: int | None) -> tuple[int, ...]:
    """Seasonal differencing when the index has seasons, else lag 1: both remove what an LSTM fits badly."""
    return (season,) if season else (1,)


def train(series: Series, framing: Framing, recipe: Recipe, rows: int | None = None,
          epochs: int | None = None) -> Forecaster:
    """Fit preparation and model on the first `rows` rows; early-stopped unless `epochs` is fixed."""
    rows = rows or len(series.values)
    training = series.values[:rows]
    prep = fit_preparation(training, series.features, series.target, lags=framing.lags,
                           scaling=framing.scaling, log=framing.log)
    prep = replace(prep, extra={"timesteps": framing.timesteps, "horizon": framing.horizon})
    require_rows(series, framing, rows, prep.lag, "training")
    X, y = windows(prep, training, framing)
    if epochs is None:
        held = max(1, int(len(X) * VAL_FRACTION))
        fitted = fit(lambda: build(framing, len(series.features), recipe), X[:-held], y[:-held],
                     recipe, "mse", validation=(X[-held:], y[-held:]))
    else:
        fitted = fit(lambda: build(framing, len(series.features), recipe), X, y, recipe, "mse",
                     epochs=epochs)
    return Forecaster(fitted.model, prep, fitted, rows)


def build(framing: Framing, features: int, recipe: Recipe) -> keras.Model:
    return lstm_stack((framing.timesteps, features), recipe.units, framing.horizon)


def windows(prep: Preparation, rows: np.ndarray, framing: Framing) -> tuple[np.ndarray, np.ndarray]:
    """Prepared inputs [n, timesteps, features] and prepared targets [n, horizon]."""
    inputs = prep.transform(rows)
    target = prep.transform_target(rows[:, prep.raw_features.index(prep.target)])
    n = len(inputs) - framing.timesteps - framing.horizon + 1
    X = np.stack([inputs[i:i + framing.timesteps] for i in range(n)])
    y = np.stack([target[i + framing.timesteps:i + framing.timesteps + framing.horizon] for i in range(n)])
    return X.astype(np.float32), y.astype(np.float32)


def require_rows(series: Series, framing: Framing, rows: int, lag: int, part: str,
                 minimum: int = MIN_WINDOWS) -> None:
    span = framing.timesteps + lag + framing.horizon
    if rows - span + 1 < minimum:
        raise DataError(
            f"{series.name}: {rows} {part} rows are too few for the window: {framing.timesteps} timesteps"
            f" + differencing lag {lag} + horizon {framing.horizon} = {span} rows per window, and "
            f"{part} needs at least {minimum} windows, so at least {span + minimum - 1} rows")


def holdout_windows(series: Series, framing: Framing, lag: int,
                    first_target: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Raw windows whose targets start at each row from `first_target` on: (windows, truth, starts)."""
    span = framing.timesteps + lag
    starts = np.arange(max(first_target, span), len(series.values) - framing.horizon + 1)
    if len(starts) == 0:
        raise DataError(f"{series.name}: the holdout from row {first_target + 1} leaves no complete "
                        f"window of {span} rows in and {framing.horizon} out; hold out more rows")
    raw = np.stack([series.values[s - span:s] for s in starts])
    truth = np.stack([series.target_values[s:s + framing.horizon] for s in starts])
    return raw, truth, starts


def baselines(target: np.ndarray, starts: np.ndarray, horizon: int,
              season: int | None) -> dict[str, np.ndarray]:
    """Persistence (the last value) and seasonal naive (the same season's last value), [n, horizon]."""
    steps = np.arange(horizon)
    found = {"persistence": np.stack([np.full(horizon, target[s - 1]) for s in starts])}
    if season:
        back = (steps // season + 1) * season
        found["seasonal_naive"] = np.stack([target[s + steps - back] for s in starts])
    return found


def scores(predicted: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    error = predicted - truth
    return {"rmse": float(np.sqrt(np.mean(error ** 2))), "mae": float(np.mean(np.abs(error)))}


def validate(series: Series, framing: Framing, recipe: Recipe, train_rows: int,
             first_target: int | None = None) -> tuple[Forecaster, Validation]:
    """Fit on the first `train_rows` rows; score model and baselines on the windows after them."""
    first = train_rows if first_target is None else first_target
    lag = sum(framing.lags)
    require_rows(series, framing, train_rows, lag, "training")
    raw, truth, starts = holdout_windows(series, framing, lag, first)
    forecaster = train(series, framing, recipe, rows=train_rows)
    predictions = {"model": forecaster.forecast(raw),
                   **baselines(series.target_values, starts, framing.horizon, series.season)}
    figures = {name: scores(p, truth) | {"windows": len(truth)} for name, p in predictions.items()}
    return forecaster, Validation(figures, truth, predictions, train_rows, int(starts[0]))
