"""build_engine: the one place that decides how a built Keras model runs."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from lstmserve.server.engine.base import Engine, EngineConfig
from lstmserve.server.engine.batcher import Batcher
from lstmserve.server.engine.compiled import CompiledEngine
from lstmserve.server.specs import TensorSpec

log = logging.getLogger(__name__)


def build_engine(keras_model, inputs: Sequence[TensorSpec], config: EngineConfig, name: str) -> Engine:
    """Compile and warm every bucket; use the twin of a tiny plain stack where it equals the compiled
    function; put the batcher in front. Nothing compiles after this returns."""
    compiled = CompiledEngine(keras_model, inputs, config.buckets, config.jit_compile)
    compiled.warm()
    engine: Engine = compiled
    if config.twin:
        # Imported here: numba (77 MB) is loaded only for a server that may use a twin.
        from lstmserve.server.engine.twin import build_twin
        twin = build_twin(keras_model, inputs, compiled, compiled.max_batch)
        if twin is not None:
            log.info("model '%s' runs as a compiled twin (a plain recurrent stack, equal to the compiled "
                     "model)", name)
            compiled.close()  # checked equal; its traced functions are no longer needed
            engine = twin
    return Batcher(engine, config.batching, name)
