"""Loads and closes one model file N times in this process; prints JSON with threads and RSS after each.

Run as its own process by test_engine_lifecycle.py, so the measures see nothing but these loads."""

from __future__ import annotations

import gc
import json
import os
import sys
import threading

from lstmserve.server.process import prepare_tensorflow

prepare_tensorflow("warning")

from lstmserve.server.loading.load import load_model  # noqa: E402


def rss_mb() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def threads() -> dict[str, int]:
    """Native threads of the process (TensorFlow's too) and the Python threads models start."""
    return {"native": len(os.listdir("/proc/self/task")),
            "model": sum(t.name.startswith("batcher-") for t in threading.enumerate())}


def main(path: str, cycles: int) -> None:
    for cycle in range(cycles):
        model = load_model(path, "cycled")
        model.close()
        del model
        gc.collect()
        print(json.dumps({"cycle": cycle, "rss_mb": rss_mb(), **threads()}), flush=True)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
