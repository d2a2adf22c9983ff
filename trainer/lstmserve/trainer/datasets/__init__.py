"""Example data shipped with the trainer: the airline series, and machine runs this project generates."""

from __future__ import annotations

import csv
from importlib import resources
from pathlib import Path

import numpy as np

MACHINE_STATES = ("normal", "imbalance", "overheating")
MACHINE_TIMESTEPS = 24


def path(name: str) -> Path:
    """A shipped dataset's file: 'airline-passengers.csv' or 'machine-runs.csv'."""
    return Path(str(resources.files(__name__).joinpath(name)))


def machine_runs(runs: int = 150, seed: int = 3) -> list[dict[str, str]]:
    """Rows of simulated machine runs (24 readings each) labelled by state, for sequence classification.

    Imbalance shakes harder at the same rhythm; overheating drifts warmer while shaking like normal.
    Amplitudes and drifts overlap a little, so a model has to read the whole run.
    """
    rng = np.random.default_rng(seed)
    steps = np.arange(MACHINE_TIMESTEPS)
    rows = []
    for run in range(runs):
        state = MACHINE_STATES[run % len(MACHINE_STATES)]
        amplitude = rng.uniform(1.4, 2.2) if state == "imbalance" else rng.uniform(0.8, 1.5)
        drift = rng.uniform(0.15, 0.35) if state == "overheating" else rng.uniform(-0.05, 0.12)
        vibration = amplitude * np.sin(steps * rng.uniform(0.7, 0.9) + rng.uniform(0, 6.3))
        vibration += rng.normal(0, 0.3, MACHINE_TIMESTEPS)
        temperature = rng.uniform(55, 65) + drift * steps + rng.normal(0, 0.4, MACHINE_TIMESTEPS)
        rows += [{"run": f"run-{run:03d}", "vibration": f"{v:.3f}", "temperature": f"{t:.2f}",
                  "state": state} for v, t in zip(vibration, temperature)]
    return rows


def write_machine_runs(target: str | Path, **options) -> Path:
    """Write `machine_runs(**options)` as CSV (how the shipped machine-runs.csv was made)."""
    rows = machine_runs(**options)
    with Path(target).open("w", newline="") as stream:
        writer = csv.DictWriter(stream, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return Path(target)
