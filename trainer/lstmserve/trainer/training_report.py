"""What a training run tells people: the end-of-run summary, the JSON report and the PNG plots."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np


def summary(report: dict[str, Any]) -> str:
    """A few lines a person reads at the end of a run; every figure is also in the JSON report."""
    data, window = report["data"], report["window"]
    lines = [f"data: {data['file']}, {data['rows']} rows, columns {data['columns']}",
             f"window: {window}", f"preparation: {report['preparation']}"]
    for name, figures in report.get("validation", {}).get("figures", {}).items():
        shown = ", ".join(f"{k} {v:.4g}" for k, v in figures.items() if isinstance(v, float))
        lines.append(f"validation {name}: {shown}")
    final = report["final"]
    lines.append(f"final model: fit on {final['rows']} {final['unit']}, {final['epochs']} epochs"
                 + ("" if final["refit"] else " (the validated model, not refit)"))
    return "\n".join(lines)


def write_json(path: str | Path, report: dict[str, Any]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n")
    return path


def _pyplot():
    # Agg: plots are files; a training machine usually has no display.
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def plot_forecast(path: str | Path, truth: np.ndarray, predictions: dict[str, np.ndarray],
                  first_row: int, title: str) -> Path:
    """Validation forecasts (first step of each window) against actuals, baselines dashed."""
    plt = _pyplot()
    figure, axes = plt.subplots(figsize=(9, 4.5))
    rows = np.arange(first_row, first_row + len(truth)) + 1
    axes.plot(rows, truth[:, 0], color="black", linewidth=2, label="actual")
    for name, values in predictions.items():
        style = "-" if name == "model" else "--"
        axes.plot(rows, values[:, 0], style, label=name.replace("_", " "))
    axes.set(title=title, xlabel="row of the series (1-based)", ylabel="value")
    axes.legend()
    return _save(figure, path, plt)


def plot_confusion(path: str | Path, matrix: np.ndarray, labels: list[str], title: str) -> Path:
    plt = _pyplot()
    figure, axes = plt.subplots(figsize=(5 + len(labels) * 0.4, 4 + len(labels) * 0.4))
    axes.imshow(matrix, cmap="Blues")
    for (row, column), count in np.ndenumerate(matrix):
        axes.text(column, row, str(count), ha="center", va="center")
    axes.set(title=title, xlabel="predicted", ylabel="actual", xticks=range(len(labels)),
             yticks=range(len(labels)), xticklabels=labels, yticklabels=labels)
    return _save(figure, path, plt)


def _save(figure, path: str | Path, plt) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path
