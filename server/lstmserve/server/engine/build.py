"""build_engine: the one place that decides how a built Keras model runs."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np

from lstmserve.server.engine.base import Engine, EngineConfig
from lstmserve.server.engine.batcher import Batcher
from lstmserve.server.engine.compiled import CompiledEngine
from lstmserve.server.engine.twin_layout import twin_layout
from lstmserve.server.phases import phase
from lstmserve.server.specs import TensorSpec

log = logging.getLogger(__name__)


def build_engine(keras_model, inputs: Sequence[TensorSpec], config: EngineConfig, name: str) -> Engine:
    """A tiny plain stack runs as its twin where that equals Keras; anything else is compiled, every
    bucket warmed. The batcher goes in front. Nothing compiles after this returns."""
    engine = _twin(keras_model, inputs, config, name) or _compiled(keras_model, inputs, config)
    return Batcher(engine, config.batching, name)


def _twin(keras_model, inputs: Sequence[TensorSpec], config: EngineConfig, name: str) -> Engine | None:
    if not config.twin:
        return None
    max_batch = max(config.buckets)
    layout = twin_layout(keras_model, inputs, max_batch)
    if layout is None:
        return None
    # Imported only now: numba (about 80 MB resident and a few tenths of a second) is loaded only in
    # a server that has a model the twin can run.
    with phase("import numba"):
        from lstmserve.server.engine.twin import twin_from_layout
    # Checked against Keras itself, called eagerly: no XLA compilation for a model that will not
    # use it (compiling every bucket took most of the seed model's start).
    with phase("twin"):
        twin = twin_from_layout(layout, KerasReference(keras_model), max_batch)
    if twin is not None:
        log.info("model '%s' runs as a compiled twin (a plain recurrent stack, equal to Keras)", name)
    return twin


def _compiled(keras_model, inputs: Sequence[TensorSpec], config: EngineConfig) -> Engine:
    compiled = CompiledEngine(keras_model, inputs, config.buckets, config.jit_compile)
    compiled.warm()
    return compiled


class KerasReference:
    """The model's own Keras call (eager, inference mode): what a twin must equal."""

    def __init__(self, keras_model) -> None:
        self._model = keras_model

    def predict(self, arrays: Sequence[np.ndarray]) -> list[np.ndarray]:
        outputs = self._model(list(arrays) if len(arrays) > 1 else arrays[0], training=False)
        outputs = outputs if isinstance(outputs, (list, tuple)) else [outputs]
        return [np.asarray(output) for output in outputs]
