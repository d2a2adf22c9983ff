"""LoadedModel: everything needed to serve one model file, read once at load and then immutable."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from lstmserve.server.runtime.batcher import DEFAULT_BATCHING, BatchConfig, Batcher, BatchStats
from lstmserve.server.runtime.errors import ModelLoadError
from lstmserve.server.runtime.loader import LoadOptions, load_keras_model
from lstmserve.server.runtime.modelfile import ModelFile, read_model_file
from lstmserve.server.runtime.modes import PROBABILISTIC, Mode, OutputHead
from lstmserve.server.runtime.preparation import Preparation
from lstmserve.server.runtime.runner import DEFAULT_BUCKETS, CompiledRunner
from lstmserve.server.runtime.signature import TensorSpec, bind_inputs
from lstmserve.server.runtime.twin import build_twin

log = logging.getLogger(__name__)


class Executor(Protocol):
    """Runs checked model-space arrays; the compiled runner, or a batcher in front of it."""

    def run(self, arrays: list[np.ndarray]) -> list[np.ndarray]: ...


@dataclass(frozen=True)
class Prediction:
    outputs: dict[str, np.ndarray]
    labels: dict[str, list[str]] = field(default_factory=dict)


@dataclass(frozen=True)
class LoadedModel:
    name: str
    version: str
    file: ModelFile
    inputs: tuple[TensorSpec, ...]
    heads: tuple[OutputHead, ...]
    task: str
    preparation: Preparation
    compatibility_steps: tuple[str, ...]
    executor: Executor
    keras_model: Any = field(repr=False)

    def batch_stats(self) -> BatchStats:
        """Counters of the batcher in front of the model (zeros when it runs each request alone)."""
        stats = getattr(self.executor, "stats", None)
        return stats() if stats is not None else BatchStats()

    @property
    def modes(self) -> tuple[Mode, ...]:
        return tuple(m for m in Mode if all(m in head.modes for head in self.heads))

    def predict(self, inputs: Mapping[str, np.ndarray], mode: Mode,
                prepared: bool = False) -> Prediction:
        """Check, prepare, run and shape one request; domain errors name what is wrong."""
        raw, arrays, model_arrays = self._check(inputs, mode, prepared)
        return self._finish(self.executor.run(model_arrays), arrays, raw, mode)

    async def predict_async(self, inputs: Mapping[str, np.ndarray], mode: Mode,
                            prepared: bool = False) -> Prediction:
        """`predict` for an event loop: the model runs on the batcher's thread (a compiled twin, whose
        full batch is bounded to microseconds of work, runs in place)."""
        raw, arrays, model_arrays = self._check(inputs, mode, prepared)
        run_async = getattr(self.executor, "run_async", None)
        if run_async is not None:
            outputs = await run_async(model_arrays)
        else:
            outputs = await asyncio.to_thread(self.executor.run, model_arrays)
        return self._finish(outputs, arrays, raw, mode)

    def _check(self, inputs: Mapping[str, np.ndarray], mode: Mode, prepared: bool):
        """Everything that can reject a request, done before it joins any queue."""
        for head in self.heads:
            head.require(mode, self.name)
        raw = not prepared and not self.preparation.is_identity
        specs = self.preparation.raw_input_specs(self.inputs) if raw else self.inputs
        arrays = bind_inputs(specs, inputs, self.name)
        return raw, arrays, self.preparation.prepare(arrays) if raw else arrays

    def _finish(self, outputs: list[np.ndarray], arrays: list[np.ndarray], raw: bool,
                mode: Mode) -> Prediction:
        if raw and mode is Mode.VALUES:
            outputs = self.preparation.restore(outputs, arrays)
        return self._shape(outputs, mode)

    def _shape(self, outputs: list[np.ndarray], mode: Mode) -> Prediction:
        if mode is not Mode.CLASSES:
            return Prediction({head.name: out for head, out in zip(self.heads, outputs)})
        classes = {head.name: head.classes(out) for head, out in zip(self.heads, outputs)}
        labels = {head.name: head.label_strings(classes[head.name]) for head in self.heads}
        return Prediction(classes, {name: ls for name, ls in labels.items() if ls is not None})


def load_model(path: str | Path, name: str | None = None, version: str = "1",
               options: LoadOptions | None = None, buckets=DEFAULT_BUCKETS,
               jit_compile: bool = True, batching: BatchConfig | None = DEFAULT_BATCHING,
               twin: bool = True) -> LoadedModel:
    """Read, check, load, compile and warm one .h5 file; batching None runs each request alone."""
    model_file = read_model_file(path)
    keras_model, steps = load_keras_model(model_file, options or LoadOptions())
    inputs = tuple(_input_specs(keras_model))
    serving = model_file.serving
    heads = tuple(_heads(keras_model, serving.get("labels") or {}))
    runner = CompiledRunner(keras_model, inputs, buckets, jit_compile)
    runner.warm()
    fast = build_twin(keras_model, inputs, runner, runner.max_batch) if twin else None
    if fast is not None:
        log.info("model %s runs as a compiled twin (a plain recurrent stack, equal to the compiled model)",
                 Path(path).name)
    name = name or Path(path).stem
    executor = fast or runner
    executor = executor if batching is None else Batcher(executor, batching, name)
    return LoadedModel(
        name=name, version=version, file=model_file, inputs=inputs,
        heads=heads, task=serving.get("task") or _infer_task(heads),
        preparation=Preparation.from_metadata(serving.get("preparation")),
        compatibility_steps=tuple(steps), executor=executor, keras_model=keras_model,
    )


def _input_specs(keras_model) -> list[TensorSpec]:
    return [TensorSpec(t.name, np.dtype(t.dtype), tuple(t.shape)) for t in keras_model.inputs]


def _heads(keras_model, labels: Mapping[str, list[str]] | list[str]) -> list[OutputHead]:
    heads, seen = [], set()
    for index, tensor in enumerate(keras_model.outputs):
        layer = tensor._keras_history.operation
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
