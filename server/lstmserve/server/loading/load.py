"""load_model: the walk of one model file, from bytes on disk to a LoadedModel that is compiled and warm.

read once (modelfile) -> refuse what reaches outside the file and what the allow-list does not know
(modelfile, safety) -> translate old Keras configs (compat) -> build and assign weights (build) ->
engine compiled and warmed (engine) -> LoadedModel (serving).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from lstmserve.format.errors import FormatError
from lstmserve.format.preparation import Preparation
from lstmserve.server import keras_internals
from lstmserve.server.engine.base import DEFAULT_ENGINE, EngineConfig
from lstmserve.server.engine.build import build_engine
from lstmserve.server.errors import ModelLoadError
from lstmserve.server.loading.build import LoadOptions, build_keras_model
from lstmserve.server.loading.compat import file_layers, written_by
from lstmserve.server.loading.modelfile import DEFAULT_LIMITS, FileLimits, ModelFile, read_model_file
from lstmserve.server.serving.forecast import forecast_support
from lstmserve.server.serving.heads import PROBABILISTIC, OutputHead
from lstmserve.server.serving.model import LoadedModel, ModelSource
from lstmserve.server.serving.stepping import NO_SESSIONS, session_support
from lstmserve.server.specs import TensorSpec

log = logging.getLogger(__name__)

MAX_REASON_CHARS = 500


def load_model(path: str | Path, name: str | None = None, version: str = "1",
               options: LoadOptions | None = None, engine: EngineConfig = DEFAULT_ENGINE,
               limits: FileLimits = DEFAULT_LIMITS, sessions: bool = True) -> LoadedModel:
    """Read, check, build, compile and warm one .h5 file. Every failure is a ModelLoadError with a reason:
    a hostile or broken file must never kill the thread that loads it. `sessions` False skips the
    step function (state sessions compile one at load)."""
    path = Path(path)
    try:
        return _load(path, name or path.stem, version, options or LoadOptions(), engine, limits, sessions)
    except ModelLoadError:
        raise
    except Exception as error:  # noqa: BLE001 (Keras, h5py and TensorFlow raise any type on bad files)
        log.debug("loading %s failed", path, exc_info=error)
        text = str(error)
        reason = text if len(text) <= MAX_REASON_CHARS else text[:MAX_REASON_CHARS] + "..."
        raise ModelLoadError(f"cannot load {path}: {type(error).__name__}: {reason}") from None


def _load(path: Path, name: str, version: str, options: LoadOptions, engine_config: EngineConfig,
          limits: FileLimits, sessions: bool) -> LoadedModel:
    model_file = read_model_file(path, limits)
    keras_model, steps = build_keras_model(model_file, options)
    inputs = tuple(TensorSpec(t.name, np.dtype(t.dtype), tuple(t.shape)) for t in keras_model.inputs)
    heads = tuple(_heads(keras_model, model_file.serving.get("labels") or {}))
    preparation = _preparation(model_file)
    engine = build_engine(keras_model, inputs, engine_config, name)
    support = (session_support(keras_model, inputs, preparation, name, engine_config)
               if sessions else NO_SESSIONS)
    return LoadedModel(
        name=name, version=version, source=_source(model_file), inputs=inputs, heads=heads,
        task=model_file.serving.get("task") or _infer_task(heads), preparation=preparation,
        compatibility_steps=tuple(steps), engine=engine,
        layers=tuple(_describe_layer(layer) for layer in keras_model.layers), sessions=support,
        forecasting=forecast_support(model_file.serving.get("forecast"), inputs, heads, preparation, support),
    )


def _describe_layer(layer) -> str:
    """"LSTM 'lstm'", naming the module of a class that is not Keras's own (an operator's custom layer)."""
    module = type(layer).__module__
    where = "" if module.split(".")[0] == "keras" else f" from {module}"
    return f"{type(layer).__name__} '{layer.name}'{where}"


def _source(model_file: ModelFile) -> ModelSource:
    return ModelSource(
        path=model_file.path, sha256=model_file.sha256, size_bytes=model_file.size_bytes,
        keras_version=model_file.keras_version, backend=model_file.backend,
        written_by=written_by(model_file.keras_version, model_file.backend),
        file_layers=tuple(file_layers(model_file.model_config)),
        training=model_file.serving.get("training") or {},
    )


def _preparation(model_file: ModelFile) -> Preparation:
    try:
        return Preparation.from_metadata(model_file.serving.get("preparation"))
    except FormatError as error:
        raise ModelLoadError(f"{model_file.path}: {error}") from None


def _heads(keras_model, labels: Mapping[str, list[str]] | list[str]) -> list[OutputHead]:
    heads, seen = [], set()
    for index, tensor in enumerate(keras_model.outputs):
        layer = keras_internals.layer_of(tensor)
        name = layer.name if layer.name not in seen else f"{layer.name}_{index}"
        seen.add(name)
        spec = TensorSpec(name, np.dtype(tensor.dtype), tuple(tensor.shape))
        head_labels = labels if isinstance(labels, list) else labels.get(name, [])
        heads.append(OutputHead(spec, _activation_of(layer), tuple(head_labels)))
        _check_labels(heads[-1])
    return heads


def _activation_of(layer) -> str:
    """The activation that produced a layer's output, looking inside wrappers."""
    class_name = type(layer).__name__
    if class_name == "Softmax":
        return "softmax"
    inner = getattr(layer, "layer", None) if class_name in ("TimeDistributed", "Bidirectional") else None
    activation = getattr(inner or layer, "activation", None)
    return getattr(activation, "__name__", "linear") if activation is not None else "linear"


def _check_labels(head: OutputHead) -> None:
    if not head.labels:
        return
    needed = 2 if head.units == 1 and head.activation == "sigmoid" else head.units
    if head.activation not in PROBABILISTIC or len(head.labels) != needed:
        raise ModelLoadError(
            f"output '{head.name}' ({head.activation}, {head.units} units) carries "
            f"{len(head.labels)} class labels; expected {needed} for a sigmoid/softmax output"
        )


def _infer_task(heads: tuple[OutputHead, ...]) -> str:
    return "classification" if any(h.activation in PROBABILISTIC for h in heads) else "regression"
