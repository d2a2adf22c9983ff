"""In-process baselines: the compiled model called directly, with the server's thread budget and buckets.

Run as a separate process (`python -m lstmserve.server.bench.baseline MODEL.h5 WINDOW REPEATS`) so its
TensorFlow threads see the same environment as the server's; prints one JSON object per measure.
"""

from __future__ import annotations

import json
import sys
import time

import numpy as np


def measure(runner, shape: list[int], buckets: tuple[int, ...], window_s: float, repeats: int) -> dict:
    """Per bucket: the best window's mean call time; at batch 1 also the call-latency percentiles."""
    per_batch = {batch: _best_window(runner, shape, batch, window_s, repeats) for batch in buckets}
    top = max(per_batch, key=lambda b: per_batch[b]["samples_per_s"])
    return {"batch1_p50_ms": per_batch[1]["p50_ms"], "batch1_min_ms": per_batch[1]["min_ms"],
            "best_samples_per_s": per_batch[top]["samples_per_s"], "best_batch": top,
            "per_batch": per_batch, "engine": runner.describe()}


def _best_window(runner, shape: list[int], batch: int, window_s: float, repeats: int) -> dict:
    x = np.random.default_rng(0).normal(size=(batch, *shape)).astype(np.float32)
    calls = [_window([x], runner, window_s) for _ in range(repeats)]
    best = min(calls, key=np.mean)
    return {"samples_per_s": batch / float(np.mean(best)),
            "p50_ms": float(np.median(best)) * 1e3, "min_ms": float(np.min(best)) * 1e3}


def _window(arrays, runner, window_s: float) -> list[float]:
    times, end = [], time.perf_counter() + window_s
    while True:
        started = time.perf_counter()
        runner.predict(arrays)
        now = time.perf_counter()
        times.append(now - started)
        if now > end:
            return times


def main(path: str, window_s: float, repeats: int) -> None:
    """One full measure, then, for every line on stdin, the best batch sizes again: the benchmark
    asks between concurrency levels, so the limit is sampled across the same minutes as the server."""
    from lstmserve.server.process import prepare_tensorflow
    prepare_tensorflow("warning")
    from lstmserve.server.engine.base import EngineConfig
    from lstmserve.server.loading.load import load_model
    config = EngineConfig()
    model = load_model(path, "baseline", engine=config)
    # Whatever the server runs behind its batcher: the compiled function or the compiled twin.
    runner = model.engine.engine
    shape = [d or 1 for d in model.inputs[0].shape[1:]]
    first = measure(runner, shape, config.buckets, window_s, repeats)
    print(json.dumps(first), flush=True)
    # The first measure's best batch, and the largest (where a loaded server's batches end up): one
    # noisy window in the first measure must not fix a weak reference for the whole sweep.
    candidates = sorted({first["best_batch"], max(first["per_batch"])})
    for _ in sys.stdin:
        again = {batch: _best_window(runner, shape, batch, window_s, repeats)["samples_per_s"]
                 for batch in candidates}
        batch = max(again, key=again.get)
        print(json.dumps({"samples_per_s": again[batch], "batch": batch}), flush=True)


if __name__ == "__main__":
    main(sys.argv[1], float(sys.argv[2]), int(sys.argv[3]))
