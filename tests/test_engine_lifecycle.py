"""A model that is closed gives back its thread and its memory: load and close it many times in one
process, and the process ends where it started."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import keras
import modelzoo
import pytest

pytestmark = pytest.mark.slow

CYCLES = 20


def cycle(path: Path) -> list[dict]:
    script = Path(__file__).with_name("engine_cycles.py")
    done = subprocess.run([sys.executable, str(script), str(path), str(CYCLES)], capture_output=True,
                          text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    return [json.loads(line) for line in done.stdout.splitlines()]


@pytest.fixture(scope="module")
def stacked(tmp_path_factory) -> Path:
    """Compiled with XLA (too large for the twin): the engine whose memory TensorFlow holds."""
    keras.utils.set_random_seed(8)
    model = keras.Sequential([keras.Input((20, 4)), keras.layers.LSTM(16, return_sequences=True),
                              keras.layers.LSTM(16), keras.layers.Dense(2)])
    return modelzoo.save(model, tmp_path_factory.mktemp("cycles") / "stacked.h5")


@pytest.mark.parametrize("which", ["stacked", "seed_h5"])
def test_load_and_close_twenty_times_returns_threads_and_memory(which, request):
    measures = cycle(request.getfixturevalue(which))
    assert len(measures) == CYCLES
    # After the first cycle: TensorFlow starts its own thread pools and caches once per process.
    first, last = measures[0], measures[-1]
    assert all(m["model"] == 0 for m in measures), measures  # every model thread stopped on close
    assert last["native"] <= first["native"], measures
    assert last["rss_mb"] - first["rss_mb"] < 50, measures
