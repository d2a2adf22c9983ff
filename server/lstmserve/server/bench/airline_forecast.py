"""Twelve-month forecasts of the airline series through a real server's Forecast, scored by horizon.

`python -m lstmserve.server.bench.airline_forecast --out docs` (needs lstmserve-trainer): trains the
trainer's airline recipe on months 1..96, serves the file with `lstmserve serve`, asks Forecast for 12
months from every origin in months 96..132 (one call, one history row per origin), and scores each
horizon against seasonal naive (the same month a year before). Writes airline-forecast.json and .png
and prints the table the README shows.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import numpy as np

TRAIN_MONTHS = 96
ORIGINS = range(96, 133)  # forecasts of months origin+1 .. origin+12
HORIZON = 12
SEASON = 12


def train(path: Path, seed: int) -> Path:
    """The trainer's default monthly recipe on the first 96 months, saved as `lstmserve train` saves."""
    from lstmserve.trainer import datasets, forecast
    from lstmserve.trainer.data import read_csv
    from lstmserve.trainer.fitting import Recipe, deterministic
    from lstmserve.trainer.save import save_model
    deterministic()
    series = forecast.load_series(read_csv(datasets.path("airline-passengers.csv")))
    framing = forecast.Framing(lags=forecast.default_lags(series.season))
    model = forecast.train(series, framing, Recipe(seed=seed, verbose=0), rows=TRAIN_MONTHS)
    save_model(model.model, path, task="regression", preparation=model.preparation.to_metadata(),
               forecast={"feature": series.target, "horizon": framing.horizon},
               training={"rows": TRAIN_MONTHS, "seed": seed})
    return path


def passengers() -> np.ndarray:
    from lstmserve.trainer import datasets, forecast
    from lstmserve.trainer.data import read_csv
    return forecast.load_series(read_csv(datasets.path("airline-passengers.csv"))).target_values


def score(values: np.ndarray, forecasts: np.ndarray) -> dict:
    """RMSE per horizon of the model and of seasonal naive, over every origin."""
    origins = np.array(ORIGINS)
    truth = np.stack([values[o:o + HORIZON] for o in origins])
    steps = np.arange(HORIZON)
    naive = np.stack([values[o + steps - SEASON] for o in origins])
    rmse = {name: np.sqrt(((found - truth) ** 2).mean(axis=0)).round(2).tolist()
            for name, found in (("model", forecasts), ("seasonal_naive", naive))}
    return {"origins": [int(o) for o in origins], "rmse_by_horizon": rmse,
            "rmse_all": {name: float(np.sqrt(np.mean(np.square(rmse[name])))) for name in rmse}}


def plot(values: np.ndarray, forecasts: np.ndarray, result: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    figure, (left, right) = plt.subplots(1, 2, figsize=(12, 4.2))
    horizons = np.arange(1, HORIZON + 1)
    for name, style in (("model", "o-"), ("seasonal_naive", "s--")):
        left.plot(horizons, result["rmse_by_horizon"][name], style, label=name.replace("_", " "))
    left.set(xlabel="months ahead", ylabel="RMSE (thousands of passengers)",
             title=f"RMSE by horizon over {len(result['origins'])} origins (months 96..132)")
    left.legend()
    months = np.arange(1, len(values) + 1)
    right.plot(months[84:], values[84:], "k-", label="observed")
    for index, origin in enumerate(ORIGINS):
        if (origin - 96) % 12 == 0:
            right.plot(months[origin:origin + HORIZON], forecasts[index], "-", label=f"from month {origin}")
    right.axvline(TRAIN_MONTHS + 0.5, color="grey", ls=":", label="end of training")
    right.set(xlabel="month", ylabel="passengers (thousands)",
              title="12-month forecasts from every twelfth origin")
    right.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def table(result: dict) -> str:
    head = "| months ahead | " + " | ".join(str(h) for h in range(1, HORIZON + 1)) + " | all |"
    rule = "|---" * (HORIZON + 2) + "|"
    rows = [f"| {name.replace('_', ' ')} | " + " | ".join(f"{v:.1f}" for v in result["rmse_by_horizon"][name])
            + f" | {result['rmse_all'][name]:.1f} |" for name in ("model", "seasonal_naive")]
    return "\n".join([head, rule, *rows])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("bench-results"), help="JSON and PNG go here")
    parser.add_argument("--work", type=Path, default=Path("bench-results/airline-forecast"),
                        help="the trained model and the server's log go here")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    from lstmserve.client import Client
    from lstmserve.server.bench import processes
    args.out.mkdir(parents=True, exist_ok=True)
    args.work.mkdir(parents=True, exist_ok=True)
    model = train(args.work / "airline-96.h5", args.seed)
    values = passengers()
    histories = np.stack([values[o - 24:o] for o in ORIGINS]).astype(np.float32)[..., None]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    log = args.work / "server.log"
    with processes.real_server("airline", model, [], env, log) as server:
        address = server.address
        with Client(address, timeout=60) as client:
            forecasts = client.forecast(histories, HORIZON, model="airline")
    result = score(values, forecasts) | {"forecasts": forecasts.round(2).tolist()}
    (args.out / "airline-forecast.json").write_text(json.dumps(result, indent=2))
    plot(values, forecasts, result, args.out / "airline-forecast.png")
    print(table(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
