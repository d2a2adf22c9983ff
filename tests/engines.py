"""Engines for tests: the Engine protocol spelled out once, around a model's real engine."""

from __future__ import annotations

import threading

from lstmserve.server.engine.base import EngineStats


class WrappedEngine:
    """An Engine around a model's real one (the Engine protocol, spelled out for the tests' wrappers)."""

    inline = False

    def __init__(self, engine) -> None:
        self.engine, self.max_batch = engine, engine.max_batch

    def predict(self, arrays):
        return self.engine.predict(arrays)

    async def predict_async(self, arrays):
        return self.predict(arrays)

    def stats(self) -> EngineStats:
        return EngineStats()

    def describe(self) -> str:
        return f"{type(self).__name__} around {self.engine.describe()}"

    def close(self) -> None:
        """The wrapped engine belongs to a session-wide fixture: left open."""


class ExplodingEngine(WrappedEngine):
    """Fails every call with an error whose text must never reach a caller."""

    def __init__(self) -> None:
        self.engine, self.max_batch = None, 64

    def predict(self, arrays):
        raise RuntimeError("secret path /srv/models/x.h5 in a stack trace")

    def describe(self) -> str:
        return "an engine that always fails"


class GatedEngine(WrappedEngine):
    """The model's real engine, held at its first call until released, so the rest pile up in the queue."""

    def __init__(self, engine, poison: float | None = None) -> None:
        super().__init__(engine)
        self.poison = poison
        self.entered, self.release = threading.Event(), threading.Event()
        self.batches: list[int] = []

    def predict(self, arrays):
        self.entered.set()
        assert self.release.wait(30), "test never released the engine"
        if self.poison is not None and (arrays[0] == self.poison).any():
            raise RuntimeError("poisoned row (internal detail that must not reach callers)")
        self.batches.append(arrays[0].shape[0])
        return self.engine.predict(arrays)
