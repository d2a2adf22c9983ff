"""LoopBatcher: steps of many sessions gathered within one turn of the event loop, run together in place.

For a step function whose whole batch costs about a millisecond, the hand-off to a worker thread and
back (a queue, a condition, a wake-up of the loop from another thread, and both threads contending for
the interpreter lock) cost more than the model. Here the first step of a turn schedules one run after
every callback already due, so the steps that arrived together run as one batch on the loop itself.
Only for engines whose full batch of one step is bounded (see stepping.INLINE_BUDGET_FLOPS), as the
compiled twin; messages of several steps, which may take many calls, run on a thread.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Sequence

import numpy as np

from lstmserve.server.engine.base import EngineStats
from lstmserve.server.errors import ModelFailed, ModelNotReady

log = logging.getLogger(__name__)


class LoopBatcher:
    """An Engine in front of another, batching coroutine callers on their event loop."""

    inline = True

    def __init__(self, engine, name: str = "model") -> None:
        self.engine = engine
        self.max_batch = engine.max_batch
        self.name = name
        self._pending: list[tuple[Sequence[np.ndarray], asyncio.Future]] = []
        self._stats = EngineStats()
        self._closed = False

    def predict(self, arrays: Sequence[np.ndarray]) -> list[np.ndarray]:
        if self._closed:
            raise ModelNotReady(f"model '{self.name}' is unloaded")
        return self.engine.predict(arrays)

    async def predict_async(self, arrays: Sequence[np.ndarray]) -> list[np.ndarray]:
        if self._closed:
            raise ModelNotReady(f"model '{self.name}' is unloaded")
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        if not self._pending:
            loop.call_soon(self._run_pending)
        self._pending.append((arrays, future))
        return await future

    def stats(self) -> EngineStats:
        return self._stats.snapshot()

    def describe(self) -> str:
        return f"{self.engine.describe()}; run in place on the event loop, batches of up to {self.max_batch}"

    def close(self) -> None:
        self._closed = True
        self.engine.close()

    def _run_pending(self) -> None:
        taken, self._pending = self._pending, []
        groups: dict[tuple, list] = {}
        for item in taken:
            # Shapes alone: each position's dtype is fixed (a step is checked and cast to its input's
            # dtype, the state is float32), and this runs once per step.
            groups.setdefault(tuple([a.shape[1:] for a in item[0]]), []).append(item)
        for group in groups.values():
            for start in range(0, len(group), self.max_batch):
                chunk = group[start:start + self.max_batch]
                if chunk[0][0][0].shape[1] == 1:
                    self._settle(chunk, *self._run(chunk))
                else:  # several steps per session: maybe many calls, never on the loop
                    asyncio.ensure_future(self._run_elsewhere(chunk))

    async def _run_elsewhere(self, chunk: list) -> None:
        self._settle(chunk, *await asyncio.to_thread(self._run, chunk))

    def _run(self, group: list) -> tuple[list[np.ndarray] | None, Exception | None]:
        try:
            if len(group) == 1:
                return self.engine.predict(group[0][0]), None
            return self.engine.predict([np.concatenate(p) for p in zip(*(g[0] for g in group))]), None
        except ModelNotReady as error:
            return None, error
        except Exception as error:  # noqa: BLE001 (answered as ModelFailed with an incident id)
            incident = uuid.uuid4().hex[:12]
            log.error("model '%s' failed on a step batch (incident %s)", self.name, incident, exc_info=error)
            self._stats.failed_batches += 1
            return None, ModelFailed(f"model '{self.name}' failed to step; see the server log "
                                     f"(incident {incident})")

    def _settle(self, group: list, outputs: list[np.ndarray] | None, error: Exception | None) -> None:
        if outputs is None:
            for _, future in group:
                _settle(future, error=error)
            return
        self._count(len(group), sum(pending[0].shape[0] for pending, _ in group))
        start = 0
        for pending, future in group:
            rows = pending[0].shape[0]
            _settle(future, [out[start:start + rows] for out in outputs])
            start += rows

    def _count(self, requests: int, rows: int) -> None:
        stats = self._stats
        stats.requests += requests
        stats.rows += rows
        stats.batches += 1
        stats.batch_rows[rows] += 1


def _settle(future: asyncio.Future, outputs=None, error: Exception | None = None) -> None:
    if future.done():  # its caller gave up
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(outputs)
