"""LoadedModel: one model version as served (signature, preparation, engine, heads), immutable once loaded.

The walk of one request after decoding: check the inputs against the signature, apply the file's
preparation to raw observations, run the engine, invert the preparation and shape the output heads.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lstmserve.format.errors import RawInputError
from lstmserve.format.preparation import Preparation
from lstmserve.server.engine.base import Engine, EngineStats
from lstmserve.server.errors import InvalidInput
from lstmserve.server.serving.heads import Mode, OutputHead
from lstmserve.server.serving.signature import bind_inputs
from lstmserve.server.serving.stepping import NO_SESSIONS, SessionSupport
from lstmserve.server.specs import TensorSpec


@dataclass(frozen=True)
class Prediction:
    outputs: dict[str, np.ndarray]
    labels: dict[str, list[str]] = field(default_factory=dict)


@dataclass(frozen=True)
class ModelSource:
    """Where a served model came from, as metadata and `inspect` show it (the file's bytes and weights
    are not kept: the engine holds the model)."""

    path: Path
    sha256: str
    size_bytes: int
    keras_version: str
    backend: str
    written_by: str
    file_layers: tuple[str, ...] = ()
    training: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class LoadedModel:
    name: str
    version: str
    source: ModelSource
    inputs: tuple[TensorSpec, ...]
    heads: tuple[OutputHead, ...]
    task: str
    preparation: Preparation
    compatibility_steps: tuple[str, ...]
    engine: Engine = field(repr=False)
    # The layers as served ("LSTM 'lstm'"), for inspect: the Keras model itself stays inside the engine.
    layers: tuple[str, ...] = ()
    # Streaming sessions: their kind, and the batched step engine of a state session's model.
    sessions: SessionSupport = field(default=NO_SESSIONS, repr=False)
    # The file's forecast declaration (`lstmserve.format` metadata "forecast"), checked at load.
    forecasting: Any = field(default=None, repr=False)

    @property
    def modes(self) -> tuple[Mode, ...]:
        return tuple(m for m in Mode if all(m in head.modes for head in self.heads))

    @property
    def raw_inputs(self) -> tuple[TensorSpec, ...]:
        """What a client sends by default: raw observations when the file carries a preparation."""
        if self.preparation.is_identity:
            return self.inputs
        spec = self.inputs[0]
        return (TensorSpec(spec.name, spec.dtype, self.preparation.raw_shape(spec.shape)), *self.inputs[1:])

    def stats(self) -> EngineStats:
        return self.engine.stats()

    def close(self) -> None:
        """Stop the model's thread after it has answered what is queued, and release its memory; its
        sessions' steps are answered first, later ones get SessionModelGone."""
        self.engine.close()
        self.sessions.close()

    def predict(self, inputs: Mapping[str, np.ndarray], mode: Mode,
                prepared: bool = False) -> Prediction:
        """Check, prepare, run and shape one request; domain errors name what is wrong."""
        raw, arrays, model_arrays = self._check(inputs, mode, prepared)
        return self._finish(self.engine.predict(model_arrays), arrays, raw, mode)

    async def predict_async(self, inputs: Mapping[str, np.ndarray], mode: Mode,
                            prepared: bool = False) -> Prediction:
        """`predict` for an event loop: the engine never blocks it."""
        raw, arrays, model_arrays = self._check(inputs, mode, prepared)
        return self._finish(await self.engine.predict_async(model_arrays), arrays, raw, mode)

    def _check(self, inputs: Mapping[str, np.ndarray], mode: Mode, prepared: bool):
        """Everything that can reject a request, done before it joins any queue."""
        for head in self.heads:
            head.require(mode, self.name)
        raw = not prepared and not self.preparation.is_identity
        arrays = bind_inputs(self.raw_inputs if raw else self.inputs, inputs, self.name)
        if not raw:
            return raw, arrays, arrays
        try:
            return raw, arrays, self.preparation.prepare(arrays)
        except RawInputError as error:
            raise InvalidInput(f"model '{self.name}': {error}") from None

    def _finish(self, outputs: list[np.ndarray], arrays: list[np.ndarray], raw: bool,
                mode: Mode) -> Prediction:
        if raw and mode is Mode.VALUES:
            outputs = self.preparation.restore(outputs, arrays)
        return self._shape(outputs, mode)

    def require(self, mode: Mode) -> None:
        """ModeNotSupported unless every output can answer in `mode`."""
        for head in self.heads:
            head.require(mode, self.name)

    def shape_outputs(self, outputs: list[np.ndarray], mode: Mode) -> Prediction:
        """Model outputs (already restored to raw units where asked) as the answer of `mode`."""
        return self._shape(outputs, mode)

    def _shape(self, outputs: list[np.ndarray], mode: Mode) -> Prediction:
        if mode is not Mode.CLASSES:
            return Prediction({head.name: out for head, out in zip(self.heads, outputs)})
        classes = {head.name: head.classes(out) for head, out in zip(self.heads, outputs)}
        labels = {head.name: head.label_strings(classes[head.name]) for head in self.heads}
        return Prediction(classes, {name: ls for name, ls in labels.items() if ls is not None})
