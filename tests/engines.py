"""Engines for tests: the Engine protocol spelled out once, around a model's real engine."""

from __future__ import annotations

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
