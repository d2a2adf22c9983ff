"""load_model: the walk of one model file, from bytes on disk to a LoadedModel that is compiled and warm.

read once (modelfile) -> refuse what reaches outside the file and what the allow-list does not know
(modelfile, safety) -> translate old Keras configs (compat) -> build and assign weights (build) ->
engine compiled and warmed (engine) -> LoadedModel (serving).
"""

from __future__ import annotations

import dataclasses
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
from lstmserve.server.loading.build import BuiltModel, LoadOptions, build_keras_model
from lstmserve.server.loading.compat import file_layers, written_by
from lstmserve.server.loading.modelfile import DEFAULT_LIMITS, FileLimits, ModelFile, read_model_file
from lstmserve.server.loading.reasons import one_line
from lstmserve.server.phases import phase
from lstmserve.server.serving.forecast import forecast_support
from lstmserve.server.serving.heads import PROBABILISTIC, OutputHead
from lstmserve.server.serving.model import LoadedModel, ModelSource
from lstmserve.server.serving.stepping import NO_SESSIONS, session_support
from lstmserve.server.specs import TensorSpec

log = logging.getLogger(__name__)


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
        raise ModelLoadError(f"cannot load {path}: {one_line(error)}") from None


def _load(path: Path, name: str, version: str, options: LoadOptions, engine_config: EngineConfig,
          limits: FileLimits, sessions: bool) -> LoadedModel:
    with phase("read"):
        model_file = read_model_file(path, limits)
    with phase("build"):
        built = build_keras_model(model_file, options)
    keras_model = built.keras_model
    inputs = tuple(TensorSpec(built.file_name(t.name), np.dtype(t.dtype), tuple(t.shape))
                   for t in keras_model.inputs)
    heads = tuple(_heads(built, model_file.serving.get("labels") or {}))
    preparation = _preparation(model_file, inputs)
    engine_config, engine_steps = _engine_for(built, inputs, engine_config)
    engine = build_engine(keras_model, inputs, engine_config, name)
    support = (session_support(keras_model, inputs, preparation, name, engine_config)
               if sessions else NO_SESSIONS)
    return LoadedModel(
        name=name, version=version, source=_source(model_file), inputs=inputs, heads=heads,
        task=model_file.serving.get("task") or _infer_task(heads), preparation=preparation,
        compatibility_steps=built.steps + engine_steps, engine=engine,
        layers=tuple(_describe_layer(built, layer) for layer in keras_model.layers), sessions=support,
        forecasting=forecast_support(model_file.serving.get("forecast"), inputs, heads, preparation, support),
    )


def _engine_for(built: BuiltModel, inputs: tuple[TensorSpec, ...],
                config: EngineConfig) -> tuple[EngineConfig, tuple[str, ...]]:
    """A file that fixes its batch size for stateful layers is compiled at that size only (rows run that
    many at a time, each on a fresh state); every other model keeps the configured buckets."""
    batch = inputs[0].shape[0] if inputs and inputs[0].shape else None
    if not built.stateful or batch is None:
        return config, ()
    step = (f"batch size {batch} fixed in the file (stateful layers): only batch size {batch} is "
            f"compiled, and requests run {batch} row{'s' if batch > 1 else ''} at a time")
    # The batcher gathers no more rows than one call takes (an inline twin's budget is for that many).
    batching = dataclasses.replace(config.batching, max_batch=min(batch, config.batching.max_batch))
    return dataclasses.replace(config, buckets=(batch,), batching=batching), (step,)


def _describe_layer(built: BuiltModel, layer) -> str:
    """"LSTM 'lstm'", naming the module of a class that is not Keras's own (an operator's custom layer)."""
    module = type(layer).__module__
    where = "" if module.split(".")[0] == "keras" else f" from {module}"
    return f"{type(layer).__name__} '{built.file_name(layer.name)}'{where}"


def _source(model_file: ModelFile) -> ModelSource:
    return ModelSource(
        path=model_file.path, sha256=model_file.sha256, size_bytes=model_file.size_bytes,
        keras_version=model_file.keras_version, backend=model_file.backend,
        written_by=written_by(model_file.keras_version, model_file.backend),
        file_layers=tuple(file_layers(model_file.model_config)),
        training=model_file.serving.get("training") or {},
    )


def _preparation(model_file: ModelFile, inputs: tuple[TensorSpec, ...]) -> Preparation:
    try:
        preparation = Preparation.from_metadata(model_file.serving.get("preparation"))
    except FormatError as error:
        raise ModelLoadError(f"{model_file.path}: {error}") from None
    # Every step works feature by feature: the model takes as many features as the client sends.
    features = inputs[0].shape[-1] if inputs and len(inputs[0].shape) == 3 else None
    if preparation.raw_features and len(preparation.raw_features) != features:
        raise ModelLoadError(
            f"{model_file.path}: metadata preparation names {len(preparation.raw_features)} raw features; "
            f"the model's first input takes {inputs[0].describe() if inputs else 'no input'}")
    return preparation


def _heads(built: BuiltModel, labels: Mapping[str, list[str]] | list[str]) -> list[OutputHead]:
    heads, seen = [], set()
    for index, tensor in enumerate(built.keras_model.outputs):
        layer = keras_internals.layer_of(tensor)
        file_name = built.file_name(layer.name)
        name = file_name if file_name not in seen else f"{file_name}_{index}"
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
