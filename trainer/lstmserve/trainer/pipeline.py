"""`lstmserve train --data`: check data, validate against baselines, refit on all rows, save, report."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from lstmserve.trainer import classify, forecast
from lstmserve.trainer.data import DataError, read_csv
from lstmserve.trainer.fitting import Recipe
from lstmserve.trainer.save import save_model, versions
from lstmserve.trainer.training_report import plot_confusion, plot_forecast

DEFAULT_HOLDOUT = 0.2


@dataclass(frozen=True)
class Options:
    """Everything `lstmserve train --data` accepts, with the defaults of the recipes."""

    data: Path
    output: Path
    target: str | None = None
    features: list[str] | None = None
    date: str | None = None
    label: str | None = None
    group: str | None = None
    timesteps: int = 6
    horizon: int = 1
    season: int | None = None
    difference: str = "auto"
    scaling: str = "standard"
    log: bool = False
    validate: bool = False
    holdout: float = DEFAULT_HOLDOUT
    refit: bool = True
    plot: Path | None = None
    epochs: int | None = None
    units: int | None = None
    seed: int = 1
    verbose: int = 1


def run(options: Options) -> dict[str, Any]:
    """Train, save the .h5 and return the report (every figure it printed)."""
    if options.plot and not options.validate:
        raise DataError("--plot draws validation forecasts; add --validate")
    table = read_csv(options.data)
    if options.label:
        return _classification(options, table)
    return _forecasting(options, table)


def _recipe(options: Options, base: Recipe) -> Recipe:
    changes = {"seed": options.seed, "verbose": options.verbose}
    changes |= {"epochs": options.epochs} if options.epochs else {}
    changes |= {"units": options.units} if options.units else {}
    return replace(base, **changes)


def lags(difference: str, season: int | None) -> tuple[int, ...]:
    """'auto' | 'none' | comma-separated lags, where 'season' stands for the series' season."""
    if difference == "auto":
        return forecast.default_lags(season)
    if difference == "none":
        return ()
    found = []
    for part in difference.split(","):
        if part.strip() == "season" and not season:
            raise DataError("--difference season needs a season: give --season N (no monthly or "
                            "quarterly date column was found)")
        found.append(season if part.strip() == "season" else int(part))
    return tuple(found)


def holdout_count(holdout: float, total: int) -> int:
    return int(holdout) if holdout >= 1 else max(1, round(total * holdout))


def _forecasting(options: Options, table) -> dict[str, Any]:
    series = forecast.load_series(table, options.target, options.features, options.date, options.season)
    framing = forecast.Framing(options.timesteps, options.horizon, lags(options.difference, series.season),
                               options.scaling, options.log)
    recipe = _recipe(options, Recipe())
    report = _data_report(table, series.features, len(series.values)) | {
        "task": "forecasting", "target": series.target, "season": series.season,
        "window": {"timesteps": framing.timesteps, "horizon": framing.horizon, "lags": list(framing.lags),
                   "raw_timesteps": framing.timesteps + sum(framing.lags)}}
    final = None
    if options.validate:
        train_rows = len(series.values) - holdout_count(options.holdout, len(series.values))
        final, validation = forecast.validate(series, framing, recipe, train_rows)
        report["validation"] = {"train_rows": train_rows, "holdout_rows": len(series.values) - train_rows,
                                "best_epoch": final.fitted.best_epoch, "figures": validation.figures}
        if options.plot:
            plot_forecast(options.plot, validation.truth, validation.predictions, validation.first_target,
                          f"{table.name}: {series.target}, holdout forecasts")
    if final is None or options.refit:
        epochs = final.fitted.best_epoch if final is not None else None
        final = forecast.train(series, framing, recipe, epochs=epochs)
    forecast_block = {"feature": series.target, "horizon": framing.horizon}
    return _save(options, report, recipe, final, "regression", None, "rows", forecast_block)


def _classification(options: Options, table) -> dict[str, Any]:
    seqs = classify.load_sequences(table, options.label, options.group, options.features, options.date)
    recipe = _recipe(options, classify.RECIPE)
    report = _data_report(table, seqs.features, len(table.rows)) | {
        "task": "classification", "label": options.label, "labels": seqs.labels, "sequences": len(seqs.y),
        "window": {"timesteps": int(seqs.X.shape[1]), "features": len(seqs.features)}}
    final = None
    if options.validate:
        final, validation = classify.validate(seqs, recipe, _fraction(options.holdout, len(seqs.y)))
        report["validation"] = {"stratified_fraction": _fraction(options.holdout, len(seqs.y)),
                                "best_epoch": final.fitted.best_epoch, "figures": validation.figures,
                                "confusion": validation.confusion.tolist()}
        if options.plot:
            plot_confusion(options.plot, validation.confusion, seqs.labels, f"{table.name}: holdout")
    if final is None or options.refit:
        epochs = final.fitted.best_epoch if final is not None else None
        final = classify.train(seqs, recipe, epochs=epochs)
    return _save(options, report, recipe, final, "classification", seqs.labels, "sequences")


def _fraction(holdout: float, total: int) -> float:
    return holdout if holdout < 1 else holdout / total


def _data_report(table, features: list[str], rows: int) -> dict[str, Any]:
    return {"data": {"file": table.name, "rows": rows, "columns": list(table.columns),
                     "features": list(features)}}


def _save(options: Options, report: dict[str, Any], recipe: Recipe, final, task: str,
          labels: list[str] | None, unit: str, forecast_block: dict | None = None) -> dict[str, Any]:
    report |= {"preparation": final.preparation.describe(), "seed": options.seed, "recipe": recipe.record(),
               "final": {"rows": final.rows, "unit": unit, "epochs": final.fitted.epochs_run,
                         "refit": options.refit or not options.validate}, "versions": versions()}
    save_model(final.model, options.output, task=task, labels=labels,
               preparation=final.preparation.to_metadata(), training=report, forecast=forecast_block)
    return report | {"output": str(options.output)}
