"""The one engine protocol every way of running a model satisfies, its counters and its settings."""

from __future__ import annotations

import contextvars
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

DEFAULT_BUCKETS = (1, 2, 4, 8, 16, 32, 64)
# Session steps batch across more rows: one row per session, and a state row costs little to carry.
DEFAULT_STEP_BUCKETS = (1, 4, 16, 64, 256)

# Set by a caller that wants to know where a request's time went (tracing): the batcher calls it with
# (queued, started, finished) in time.time_ns() once the request is answered. Unset, nothing is timed.
engine_timing: contextvars.ContextVar[Callable[[tuple[int, int, int]], None] | None] = \
    contextvars.ContextVar("lstmserve_engine_timing", default=None)


class Engine(Protocol):
    """Runs checked model-space arrays ([batch, ...] per input) and returns one array per output.

    `inline` says the engine answers in bounded microseconds on the caller's thread, so it may run on
    the event loop itself; any other engine is run on a thread of its own."""

    max_batch: int
    inline: bool

    def predict(self, arrays: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Blocks the calling thread until the outputs are ready."""
        ...

    async def predict_async(self, arrays: Sequence[np.ndarray]) -> list[np.ndarray]:
        """The same outputs without blocking the event loop."""
        ...

    def stats(self) -> EngineStats: ...

    def describe(self) -> str:
        """One line for `inspect` and logs: how this model runs."""
        ...

    def close(self) -> None:
        """Release threads and memory; calls after it raise ModelNotReady."""
        ...


@dataclass
class EngineStats:
    """Counters since load. A batcher writes them under its lock: its worker thread and, for an inline
    engine run on the caller's thread, the event loop both count."""

    requests: int = 0
    rows: int = 0
    batches: int = 0
    rejected: int = 0
    failed_batches: int = 0
    batch_rows: Counter = field(default_factory=Counter)
    queued: int = 0  # requests waiting now (a gauge, set when the snapshot is taken)

    def snapshot(self) -> EngineStats:
        return EngineStats(self.requests, self.rows, self.batches, self.rejected,
                           self.failed_batches, Counter(self.batch_rows))


@dataclass(frozen=True)
class BatchConfig:
    """max_batch 1 turns batching off (each request runs alone, still on the model's own thread);
    max_delay_s 0 runs whatever is queued the moment the worker is free (no added latency)."""

    max_batch: int = 64
    max_delay_s: float = 0.0
    queue_capacity: int = 1024

    def __post_init__(self) -> None:
        if self.max_batch < 1 or self.max_delay_s < 0 or self.queue_capacity < 1:
            raise ValueError(f"batching needs max_batch >= 1, max_delay >= 0 and queue_capacity >= 1; "
                             f"got {self.max_batch}, {self.max_delay_s}, {self.queue_capacity}")


DEFAULT_BATCHING = BatchConfig()


@dataclass(frozen=True)
class EngineConfig:
    """How a model is run: batching, the batch sizes compiled ahead, XLA, and whether a tiny stack may
    run as its compiled twin; `step_buckets`: the session counts a state session's step function is
    compiled for (the largest is the most sessions stepped in one call)."""

    batching: BatchConfig = DEFAULT_BATCHING
    buckets: tuple[int, ...] = DEFAULT_BUCKETS
    jit_compile: bool = True
    twin: bool = True
    step_buckets: tuple[int, ...] = DEFAULT_STEP_BUCKETS


DEFAULT_ENGINE = EngineConfig()
