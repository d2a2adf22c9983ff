"""The airline quality bar: `python -m lstmserve.trainer.airline_accuracy` prints the recipe's test RMSE.

First 96 months train; months 98..144 are the one-step-ahead targets (47 windows), as in the reference
table in datasets/README.md. The bar is half of persistence's RMSE.
"""

from __future__ import annotations

import argparse
import json

from lstmserve.trainer import datasets, forecast
from lstmserve.trainer.data import read_csv
from lstmserve.trainer.fitting import Recipe, deterministic

TRAIN_ROWS = 96
FIRST_TARGET = 97  # 0-based row of month 98


def airline(seed: int = 1, verbose: int = 0) -> dict[str, dict[str, float]]:
    """The default monthly recipe on the airline split: RMSE and MAE of model and baselines."""
    series = forecast.load_series(read_csv(datasets.path("airline-passengers.csv")))
    framing = forecast.Framing(lags=forecast.default_lags(series.season))
    recipe = Recipe(seed=seed, verbose=verbose)
    forecaster, validation = forecast.validate(series, framing, recipe, TRAIN_ROWS, FIRST_TARGET)
    figures = dict(validation.figures)
    figures["bar"] = {"rmse": figures["persistence"]["rmse"] / 2}
    figures["model"] |= {"best_epoch": forecaster.fitted.best_epoch}
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", action="store_true", help="print JSON")
    args = parser.parse_args(argv)
    deterministic()
    figures = airline(args.seed)
    if args.json:
        print(json.dumps(figures, indent=2))
    else:
        for name, values in figures.items():
            print(f"{name:15s} " + "  ".join(f"{k} {v:.2f}" if isinstance(v, float) else f"{k} {v}"
                                           for k, v in values.items()))
    passed = figures["model"]["rmse"] <= figures["bar"]["rmse"]
    print(f"test RMSE {figures['model']['rmse']:.2f} {'meets' if passed else 'MISSES'} the bar "
          f"{figures['bar']['rmse']:.2f} (half of persistence)")
    return 0 if passed else 1


if __name__ == "__main__":
    raise SystemExit(main())
