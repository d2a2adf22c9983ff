"""Dynamic batching: requests queued for one model run together on its own worker thread.

A Keras LSTM costs nearly the same per call at batch 64 as at batch 1, so requests that arrive
together are concatenated, run once, and split back. Requests whose non-batch shapes differ (free
timesteps) are grouped by shape, never padded: padding would change an unmasked model's answer.
The worker thread keeps model work off the RPC threads, so health and metadata stay responsive; only
an inline engine (the compiled twin, microseconds on the caller's thread) skips the queue.

No request holds the model for longer than one batch: each batch takes at most max_batch rows (an
inline engine's, 64 times more), a request with more gives one chunk and goes back to the end of the
queue, so a 1-row call waits behind a chunk of each queued request, not behind whole 60 MB ones. A
request whose caller has gone (cancelled, or its deadline passed: gRPC then cancels the handler, which
cancels the future it awaits) is dropped from the queue before its next chunk runs.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import uuid
from collections import deque
from collections.abc import Sequence

import numpy as np

from lstmserve.server.engine.base import DEFAULT_BATCHING, BatchConfig, Engine, EngineStats, engine_timing
from lstmserve.server.errors import ModelFailed, ModelNotReady, Overloaded

log = logging.getLogger(__name__)

# A batch is at most max_batch rows: what a compiled engine runs in one call. An inline engine (the
# twin) runs any number, about 0.3 us a row, so a batch of 64 x max_batch rows holds the interpreter lock
# about a millisecond while the batcher's own work per batch (~0.1 ms) stays under a tenth of it.
INLINE_BATCHES_PER_CHUNK = 64


class _Pending:
    """One caller's request. A thread waits on `done` (held until answered: the cheapest one-shot
    signal); a coroutine awaits `future`, settled on its own event loop. `taken` rows have been handed
    to batches so far, `answered` of them have come back."""

    __slots__ = ("arrays", "rows", "key", "outputs", "error", "done", "loop", "future", "times", "taken",
                 "answered")

    def __init__(self, arrays: Sequence[np.ndarray], loop: asyncio.AbstractEventLoop | None = None,
                 timed: bool = False) -> None:
        self.arrays = arrays
        # [queued, started, finished] in time.time_ns(), when the caller asked (engine_timing).
        self.times = [time.time_ns(), 0, 0] if timed else None
        self.rows = arrays[0].shape[0]
        self.key = tuple((a.shape[1:], a.dtype.str) for a in arrays)
        self.outputs: list[np.ndarray] | None = None
        self.error: Exception | None = None
        self.taken = self.answered = 0
        self.loop = loop
        if loop is None:
            self.done = threading.Lock()
            self.done.acquire()
        else:
            self.future = loop.create_future()

    def gone(self) -> bool:
        """Nobody waits for the rest any more: the caller gave up, or an earlier chunk failed."""
        return self.error is not None or (self.loop is not None and self.future.cancelled())

    def deliver(self, start: int, outputs: list[np.ndarray], times: tuple[int, int]) -> bool:
        """The outputs of rows start.. (one chunk); True once every row is answered."""
        stop = start + outputs[0].shape[0]
        if start == 0 and stop == self.rows:  # the usual request, in one batch: its slices, no copy
            self.outputs = outputs
        else:
            if self.outputs is None:
                self.outputs = [np.empty((self.rows, *out.shape[1:]), out.dtype) for out in outputs]
            for whole, part in zip(self.outputs, outputs):
                whole[start:stop] = part
        if self.times is not None:
            self.times[1] = self.times[1] or times[0]
            self.times[2] = times[1]
        self.answered += stop - start
        return self.answered == self.rows

    def finish(self, outputs: list[np.ndarray] | None, error: Exception | None = None) -> None:
        self.outputs, self.error = outputs, error
        if self.loop is None:
            self.done.release()

    def result(self) -> list[np.ndarray]:
        """The answer of a finished request: its outputs, or the error it failed with."""
        if self.error is not None:
            raise self.error
        return self.outputs

    def settle(self) -> None:
        """On the caller's loop: hand the answer to the awaiting coroutine (unless it gave up)."""
        if self.future.done():
            return
        if self.error is not None:
            self.future.set_exception(self.error)
        else:
            self.future.set_result(self.outputs)


# One batch: (request, first row, rows) per part, every part's rows of the same request shapes.
Batch = list[tuple[_Pending, int, int]]


class Batcher:
    """The Engine in front of another: `predict` blocks the calling thread until the worker has run its
    rows; `predict_async` awaits them without blocking the event loop. Always present (max_batch 1 is
    batching off), so every model has exactly one thread of its own, stopped by `close`."""

    inline = False

    def __init__(self, engine: Engine, config: BatchConfig = DEFAULT_BATCHING, name: str = "model") -> None:
        self.engine = engine
        self.config = config
        self.max_batch = config.max_batch
        self.name = name
        self._stats = EngineStats()
        self._stats_lock = threading.Lock()
        self._queue: deque[_Pending] = deque()
        self._ready = threading.Condition(threading.Lock())
        self._closed = False
        # An engine that answers in microseconds on the caller's thread (the compiled twin) gains nothing
        # from a queue: the hand-off to the worker and back would cost more than the model.
        self._direct = engine.inline
        self._batch_rows = config.max_batch * (INLINE_BATCHES_PER_CHUNK if self._direct else 1)
        self._worker = threading.Thread(target=self._serve, name=f"batcher-{name}", daemon=True)
        self._worker.start()

    def predict(self, arrays: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Outputs for exactly these rows, computed in a batch with whatever else is queued."""
        pending = self._enqueue(_Pending(arrays))
        pending.done.acquire()
        return pending.result()

    async def predict_async(self, arrays: Sequence[np.ndarray]) -> list[np.ndarray]:
        """`predict` for coroutines: the event loop is woken once per batch, not once per request."""
        timing = engine_timing.get()
        if self._direct and arrays[0].shape[0] <= self.config.max_batch:
            # Requests reach the loop one per turn (measured: mean batch 1.1 at 64 callers when
            # gathered per turn), so gathering would only add a turn: run it here and now.
            if timing is None:
                return self._run_here(arrays)
            started = time.time_ns()
            outputs = self._run_here(arrays)
            timing((started, started, time.time_ns()))
            return outputs
        pending = self._enqueue(_Pending(arrays, asyncio.get_running_loop(), timed=timing is not None))
        outputs = await pending.future
        if timing is not None:
            timing(tuple(pending.times))
        return outputs

    def _enqueue(self, pending: _Pending) -> _Pending:
        with self._ready:
            if self._closed:
                raise self._unloaded()
            if len(self._queue) >= self.config.queue_capacity:
                with self._stats_lock:
                    self._stats.rejected += 1
                raise Overloaded(f"model '{self.name}' has {len(self._queue)} requests queued "
                                 f"(capacity {self.config.queue_capacity}); retry with backoff")
            self._queue.append(pending)
            self._ready.notify()
        return pending

    def _unloaded(self) -> ModelNotReady:
        return ModelNotReady(f"model '{self.name}' is unloaded; retry (another version or server answers)")

    def stats(self) -> EngineStats:
        with self._stats_lock:
            snapshot = self._stats.snapshot()
        snapshot.queued = len(self._queue)
        return snapshot

    def describe(self) -> str:
        where = "in place on the caller's thread" if self._direct else "on its own thread"
        return f"{self.engine.describe()}; run {where}, batches of up to {self.max_batch} rows"

    def close(self) -> None:
        """Stop the worker after it has answered everything already queued, then close the engine."""
        with self._ready:
            self._closed = True
            self._ready.notify()
        if self._worker is not threading.current_thread():
            self._worker.join()
        self.engine.close()

    def _serve(self) -> None:
        while True:
            batch = self._next_batch()
            if batch is None:
                return
            if batch:
                _settle_on_loops(self._run_batch(batch))

    def _next_batch(self) -> Batch | None:
        """The next batch once the first request has waited max_delay (or the batch is full); None once
        closed and empty; an empty batch when every queued request had been given up."""
        with self._ready:
            while not self._queue:
                if self._closed:
                    return None
                self._ready.wait()
            if self.config.max_delay_s > 0:
                self._wait_for_more()
            return self._cut()

    def _cut(self) -> Batch:
        """Up to a batch of rows from the front of the queue, of the first live request's shapes, in
        arrival order. A request that fits in a batch is never split (the batch ends before one that
        does not fit); a larger one fills what room is left and goes back to the end of the queue with
        its remaining rows. Requests of other shapes keep their places."""
        queue, batch, rows, key = self._queue, [], 0, None
        passed_over, unfinished = [], []
        while queue and rows < self._batch_rows:
            pending = queue.popleft()
            if pending.gone():
                continue  # its caller has the answer it will get (cancelled, or a chunk's failure)
            if key is None:
                key = pending.key
            elif pending.key != key:
                passed_over.append(pending)
                continue
            if pending.rows <= self._batch_rows and rows + pending.rows > self._batch_rows:
                passed_over.append(pending)
                break
            take = min(pending.rows - pending.taken, self._batch_rows - rows)
            batch.append((pending, pending.taken, take))
            pending.taken += take
            rows += take
            if pending.taken < pending.rows:
                unfinished.append(pending)
        queue.extendleft(reversed(passed_over))
        queue.extend(unfinished)
        return batch

    def _wait_for_more(self) -> None:
        deadline = time.monotonic() + self.config.max_delay_s
        while sum(p.rows - p.taken for p in self._queue) < self._batch_rows and not self._closed:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            self._ready.wait(remaining)

    def _run_here(self, arrays: Sequence[np.ndarray]) -> list[np.ndarray]:
        """One request on the caller's thread: no queue entry, no split (its rows are the batch)."""
        if self._closed:
            raise self._unloaded()
        try:
            outputs = self.engine.predict(arrays)
        except ModelNotReady:
            raise
        except Exception as error:  # noqa: BLE001 (answered as ModelFailed, like a queued one)
            self._count_failure()
            raise self._model_failed(arrays, error) from None
        self._count(1, arrays[0].shape[0])
        return outputs

    def _run_batch(self, batch: Batch) -> list[_Pending]:
        """Run one batch and hand each part its rows; the requests now fully answered."""
        started = time.time_ns()
        try:
            outputs = self._execute(batch)
        except Exception as error:  # noqa: BLE001 (one failed batch must not stop the worker)
            self._count_failure()
            return self._fail(batch, error)
        times, offset, answered = (started, time.time_ns()), 0, []
        for pending, first, rows in batch:
            if pending.deliver(first, [out[offset:offset + rows] for out in outputs], times):
                pending.finish(pending.outputs)
                answered.append(pending)
            offset += rows
        return answered

    def _execute(self, batch: Batch) -> list[np.ndarray]:
        parts = [p.arrays if rows == p.rows else [a[first:first + rows] for a in p.arrays]
                 for p, first, rows in batch]
        arrays = parts[0] if len(parts) == 1 else [np.concatenate(same) for same in zip(*parts)]
        outputs = self.engine.predict(arrays)
        self._count(sum(first == 0 for _, first, _ in batch), arrays[0].shape[0])
        return outputs

    def _count(self, requests: int, rows: int) -> None:
        with self._stats_lock:
            stats = self._stats
            stats.requests += requests
            stats.rows += rows
            stats.batches += 1
            stats.batch_rows[rows] += 1

    def _count_failure(self) -> None:
        with self._stats_lock:
            self._stats.failed_batches += 1

    def _fail(self, batch: Batch, error: Exception) -> list[_Pending]:
        """Rerun a failed batch's parts one by one, so only a request that fails alone is failed (and
        its remaining chunks are dropped)."""
        if len(batch) > 1:
            return [answered for part in batch for answered in self._run_batch([part])]
        pending = batch[0][0]
        pending.finish(None, self._model_failed(pending.arrays, error))
        return [pending]

    def _model_failed(self, arrays: Sequence[np.ndarray], error: Exception) -> ModelFailed:
        """The caller's error for a run that failed alone: logged in full here, named by an incident id
        there (the model's own message may hold paths or internals)."""
        incident = uuid.uuid4().hex[:12]
        log.error("model '%s' failed on a batch (incident %s)", self.name, incident, exc_info=error)
        shapes = [list(a.shape) for a in arrays]
        return ModelFailed(f"model '{self.name}' failed to run inputs of shape {shapes}; "
                           f"see the server log (incident {incident})")


def _settle_on_loops(group: list[_Pending]) -> None:
    by_loop: dict[asyncio.AbstractEventLoop, list[_Pending]] = {}
    for pending in group:
        if pending.loop is not None:
            by_loop.setdefault(pending.loop, []).append(pending)
    for loop, answered in by_loop.items():
        try:
            loop.call_soon_threadsafe(_settle_all, answered)
        except RuntimeError:  # the caller's loop has closed: nobody is waiting any more
            log.debug("dropped %d answers for a closed event loop", len(answered))


def _settle_all(answered: list[_Pending]) -> None:
    for pending in answered:
        pending.settle()
