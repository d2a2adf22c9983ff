"""Data preparation that travels inside the model file: applied to raw inputs, inverted on outputs.

The trainer fits it (`fit_preparation`) and the server applies it; both import this one module, so
the arithmetic a model was trained on is, by construction, the arithmetic it is served with.

Input steps run in order over every raw feature along the time axis: `log`, `difference` (which
consumes `lag` observations, so clients send `timesteps + lag` raw rows), `standard` or `minmax`
scaling. Output steps are the same steps restricted to the target; `restore` inverts them in reverse,
taking the levels that differencing needs from the raw window the client sent.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from lstmserve.format.errors import FormatError, RawInputError

KINDS = ("log", "difference", "standard", "minmax")
SCALINGS = ("standard", "minmax", "none")
MINMAX_RANGE = (-1.0, 1.0)


@dataclass(frozen=True)
class Preparation:
    """The identity unless the model file carries steps."""

    input_steps: tuple[dict[str, Any], ...] = ()
    output_steps: tuple[dict[str, Any], ...] = ()
    raw_features: tuple[str, ...] = ()
    target: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def is_identity(self) -> bool:
        return not self.input_steps and not self.output_steps

    @property
    def lag(self) -> int:
        """Raw observations the input steps consume before the model's first timestep."""
        return sum(int(step["lag"]) for step in self.input_steps if step["kind"] == "difference")

    @classmethod
    def from_metadata(cls, metadata: dict[str, Any] | None) -> Preparation:
        """Read what `to_metadata` wrote; FormatError names a step this version cannot apply."""
        if not metadata:
            return cls()
        _check_shape(metadata)
        known = ("input_steps", "output_steps", "raw_features", "target")
        prep = cls(input_steps=tuple(metadata.get("input_steps", ())),
                   output_steps=tuple(metadata.get("output_steps", ())),
                   raw_features=tuple(metadata.get("raw_features", ())),
                   target=metadata.get("target"),
                   extra={k: v for k, v in metadata.items() if k not in known})
        prep._check()
        return prep

    def to_metadata(self) -> dict[str, Any]:
        return {"input_steps": list(self.input_steps), "output_steps": list(self.output_steps),
                "raw_features": list(self.raw_features), "target": self.target, **self.extra}

    def describe(self) -> str:
        """One line: what a client sends, and what happens to it."""
        if self.is_identity:
            return "none"
        text = f"send raw [{', '.join(self.raw_features)}]"
        if "timesteps" in self.extra:
            window = int(self.extra["timesteps"])
            text = f"window of {window} steps: {text} x {window + self.lag} timesteps"
        text += f"; inputs: {' -> '.join(_describe_step(s) for s in self.input_steps)}"
        if self.output_steps:
            inverse = " -> ".join(_describe_step(s) for s in reversed(self.output_steps))
            text += f"; outputs in {self.target} units (inverting {inverse})"
        return text

    def raw_shape(self, model_shape: tuple[int | None, ...]) -> tuple[int | None, ...]:
        """What a client sends when it sends raw observations: `lag` more timesteps than the model."""
        if self.is_identity or len(model_shape) < 3:
            return tuple(model_shape)
        timesteps = model_shape[1] + self.lag if model_shape[1] is not None else None
        return (model_shape[0], timesteps, *model_shape[2:])

    def raw_timesteps(self, model_shape: tuple[int | None, ...]) -> int | None:
        """Raw observations per request for a model input of `model_shape`; None when timesteps are free."""
        if len(model_shape) != 3 or model_shape[1] is None:
            return None
        return model_shape[1] + (0 if self.is_identity else self.lag)

    def prepare(self, arrays: list[np.ndarray]) -> list[np.ndarray]:
        """Raw observations [batch, timesteps + lag, features] -> the model's input space."""
        if self.is_identity:
            return arrays
        return [self.transform(arrays[0]).astype(arrays[0].dtype, copy=False), *arrays[1:]]

    def transform(self, raw: np.ndarray) -> np.ndarray:
        """Apply the input steps along the time axis (-2) of [..., time, features]; the trainer's path too."""
        values = np.asarray(raw, dtype=np.float64)
        for step in self.input_steps:
            values = _forward(step, values)
        return values

    def transform_target(self, raw_target: np.ndarray) -> np.ndarray:
        """The output steps applied to a raw target series [..., time] (for training labels)."""
        values = np.asarray(raw_target, dtype=np.float64)[..., None]
        for step in self.output_steps:
            values = _forward(step, values)
        return values[..., 0]

    def restore(self, outputs: list[np.ndarray], raw_inputs: list[np.ndarray]) -> list[np.ndarray]:
        """Model outputs [batch, horizon] -> the target's units (the raw window undoes differencing)."""
        if not self.output_steps:
            return outputs
        history = raw_inputs[0][..., self.raw_features.index(self.target)].astype(np.float64)
        restored = self.inverse_target(outputs[0], history)
        return [restored.astype(outputs[0].dtype, copy=False), *outputs[1:]]

    def inverse_target(self, prepared: np.ndarray, raw_history: np.ndarray) -> np.ndarray:
        """Invert the output steps on [batch, horizon], given each row's raw target history [batch, time]."""
        histories = [raw_history[..., None]]
        for step in self.output_steps[:-1]:
            histories.append(_forward(step, histories[-1]))
        values = np.asarray(prepared, dtype=np.float64)
        for step, history in zip(reversed(self.output_steps), reversed(histories)):
            values = _inverse(step, values, history[..., 0])
        return values

    def _check(self) -> None:
        """A file's preparation is untrusted: every step is checked before any arithmetic uses it."""
        if not all(isinstance(name, str) for name in self.raw_features):
            raise FormatError(
                f"preparation raw_features must be strings; got {list(self.raw_features)!r:.200}")
        for step in self.input_steps:
            _check_step(step, len(self.raw_features) or None)
        for step in self.output_steps:
            _check_step(step, 1)
        if self.output_steps and self.target not in self.raw_features:
            raise FormatError(
                f"preparation inverts outputs for target {self.target!r:.100}, which is not among the raw "
                f"features {list(self.raw_features)!r:.200}")


def _check_shape(metadata: dict[str, Any]) -> None:
    """The containers of an untrusted preparation, before any is iterated."""
    for key in ("input_steps", "output_steps", "raw_features"):
        if not isinstance(metadata.get(key, []), list):
            raise FormatError(f"preparation '{key}' must be a list; got {type(metadata[key]).__name__}")
    if not isinstance(metadata.get("target"), (str, type(None))):
        raise FormatError(f"preparation target must be a feature name; got {metadata['target']!r:.100}")
    timesteps = metadata.get("timesteps", 1)
    if type(timesteps) is not int or not 0 < timesteps <= MAX_LAG:
        raise FormatError(f"preparation timesteps must be an integer in 1..{MAX_LAG}; got {timesteps!r:.100}")


# Parameters each step kind carries, as per-feature lists of numbers; a lag is one positive integer.
STEP_LISTS = {"log": (), "difference": (), "standard": ("mean", "std"), "minmax": ("min", "max")}
MAX_LAG = 100_000


def _check_step(step: Any, features: int | None) -> None:
    if not isinstance(step, dict) or step.get("kind") not in KINDS:
        kind = step.get("kind") if isinstance(step, dict) else type(step).__name__
        raise FormatError(f"preparation step kind {kind!r:.100} is unknown; this version applies {KINDS}")
    kind = step["kind"]
    names = step.get("features", [])
    if not (isinstance(names, list) and all(isinstance(name, str) for name in names)):
        raise FormatError(f"preparation step {kind!r} names its features as a list of strings; "
                          f"got {names!r:.100}")
    if kind == "difference" and not (type(step.get("lag")) is int and 0 < step["lag"] <= MAX_LAG):
        raise FormatError(f"preparation step 'difference' needs a lag in 1..{MAX_LAG}; "
                          f"got {step.get('lag')!r:.100}")
    for key in STEP_LISTS[kind]:
        values = step.get(key)
        if not _numbers(values, features):
            raise FormatError(f"preparation step {kind!r} needs '{key}' as a list of "
                              f"{features or 'per-feature'} finite numbers; got {values!r:.100}")
    if kind == "standard" and any(v <= 0 for v in step["std"]):
        raise FormatError(f"preparation step 'standard' has a std <= 0: {step['std']!r:.100}")
    if kind == "minmax" and not (_numbers(step.get("range"), 2) and step["range"][0] < step["range"][1]
                                 and all(hi > lo for lo, hi in zip(step["min"], step["max"]))):
        raise FormatError("preparation step 'minmax' needs max > min per feature and a range [lo, hi] "
                          f"with lo < hi; got range {step.get('range')!r:.100}")


def _numbers(values: Any, count: int | None) -> bool:
    return (isinstance(values, list) and bool(values) and (count is None or len(values) == count)
            and all(type(v) in (int, float) and np.isfinite(v) for v in values))


def fit_preparation(series: np.ndarray, features: Sequence[str], target: str | None = None, *,
                    lags: Sequence[int] = (), scaling: str = "standard", log: bool = False) -> Preparation:
    """Fit on training rows only ([rows, features]): log, then each difference lag, then scaling."""
    if scaling not in SCALINGS:
        raise ValueError(f"scaling is {scaling!r}; expected one of {SCALINGS}")
    features = list(features)
    steps: list[dict[str, Any]] = [{"kind": "log", "features": features}] if log else []
    steps += [{"kind": "difference", "features": features, "lag": int(lag)} for lag in lags]
    values = Preparation(input_steps=tuple(steps)).transform(series)
    if scaling != "none":
        steps.append(_fit_scaling(scaling, features, values))
    prep = Preparation(input_steps=tuple(steps), raw_features=tuple(features), target=target)
    if target is None:
        return prep
    index = features.index(target)
    return replace(prep, output_steps=tuple(_restrict(step, index, target) for step in steps))


def _fit_scaling(kind: str, features: list[str], values: np.ndarray) -> dict[str, Any]:
    if kind == "standard":
        std = values.std(axis=0)
        return {"kind": kind, "features": features, "mean": values.mean(axis=0).tolist(),
                "std": np.where(std > 0, std, 1.0).tolist()}
    low, high = values.min(axis=0), values.max(axis=0)
    return {"kind": kind, "features": features, "min": low.tolist(),
            "max": np.where(high > low, high, low + 1.0).tolist(), "range": list(MINMAX_RANGE)}


def _restrict(step: dict[str, Any], index: int, target: str) -> dict[str, Any]:
    """The target's own copy of an input step (scalars picked out of per-feature lists)."""
    return {key: ([value[index]] if isinstance(value, list) and key not in ("features", "range")
                  else value) for key, value in step.items()} | {"features": [target]}


def _forward(step: dict[str, Any], values: np.ndarray) -> np.ndarray:
    kind = step["kind"]
    if kind == "log":
        if (values <= 0).any():
            raise RawInputError("raw inputs must be > 0: the model's preparation takes their logarithm; "
                               f"received a minimum of {values.min():g}")
        return np.log(values)
    if kind == "difference":
        lag = int(step["lag"])
        return values[..., lag:, :] - values[..., :-lag, :]
    if kind == "standard":
        return (values - np.asarray(step["mean"])) / np.asarray(step["std"])
    low, high = np.asarray(step["min"]), np.asarray(step["max"])
    lo, hi = step["range"]
    return (values - low) / (high - low) * (hi - lo) + lo


def _inverse(step: dict[str, Any], values: np.ndarray, history: np.ndarray) -> np.ndarray:
    """Undo one step on [batch, horizon]; `history` is the target's window in this step's input space."""
    kind = step["kind"]
    if kind == "log":
        return np.exp(values)
    if kind == "difference":
        return _undifference(values, history, int(step["lag"]))
    if kind == "standard":
        return values * step["std"][0] + step["mean"][0]
    lo, hi = step["range"]
    return (values - lo) / (hi - lo) * (step["max"][0] - step["min"][0]) + step["min"][0]


def _undifference(changes: np.ndarray, history: np.ndarray, lag: int) -> np.ndarray:
    """level[h] = change[h] + level[h - lag], reaching back into the window, then into the forecast."""
    levels = np.empty_like(changes)
    for h in range(changes.shape[-1]):
        base = history[..., h - lag] if h < lag else levels[..., h - lag]
        levels[..., h] = changes[..., h] + base
    return levels


def _describe_step(step: dict[str, Any]) -> str:
    if step["kind"] == "difference":
        return f"difference lag {step['lag']}"
    return {"log": "log", "standard": "standard scaling", "minmax": "min-max scaling"}[step["kind"]]
