"""The server's footprint: only what its models need is imported, start-up is accounted for phase by
phase, one trace serves every bucket, and compiled buckets are kept on disk for the next start."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import keras
import modelzoo
import numpy as np
import pytest

from lstmserve.server.engine.base import DEFAULT_BUCKETS, EngineConfig
from lstmserve.server.loading.load import load_model
from lstmserve.server.phases import Phases, phase, recording, since_process_start
from lstmserve.server.process import GC_THRESHOLDS, HeapKeeper, _build_tag, freeze_heap


def _compiled_only(path: Path) -> Path:
    """A stack over the twin's arithmetic budget: served by XLA, so numba has no business loading."""
    keras.utils.set_random_seed(12)
    model = keras.Sequential([keras.Input((30, 4)), keras.layers.LSTM(32), keras.layers.Dense(1)])
    return modelzoo.save(model, path)


def _tiny_stack(path: Path) -> Path:
    keras.utils.set_random_seed(13)
    model = keras.Sequential([keras.Input((3, 2)), keras.layers.LSTM(4), keras.layers.Dense(1)])
    return modelzoo.save(model, path)


@pytest.fixture(scope="module")
def compiled_only(tmp_path_factory) -> Path:
    return _compiled_only(tmp_path_factory.mktemp("footprint") / "wide.h5")


# `lstmserve serve` as its console script runs it, writing the modules it holds when it exits.
SERVE_AND_LIST = """
import atexit, json, runpy, sys
out = sys.argv.pop(1)
atexit.register(lambda: open(out, "w").write(json.dumps(sorted(sys.modules))))
runpy.run_module("lstmserve.client.cli", run_name="__main__")
"""


def _serve_and_stop(model: Path, log: Path, *flags: str) -> tuple[set[str], str]:
    """`lstmserve serve` until SERVING, then SIGTERM: the modules it had loaded and its start-up line."""
    listed = log.with_suffix(".modules.json")
    command = [sys.executable, "-c", SERVE_AND_LIST, str(listed), "serve", "--model", f"m={model}",
               "--port", "0", "--metrics-port", "0", *flags]
    with open(log, "w") as sink:
        child = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 300
            while "s after the process started" not in log.read_text():
                assert child.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
                time.sleep(0.1)
        finally:
            child.terminate()
            child.wait(timeout=60)
    (line,) = re.findall(r"SERVING [\d.]+ s after the process started: .*", log.read_text())
    return set(json.loads(listed.read_text())), line


@pytest.mark.integration
@pytest.mark.slow
def test_a_server_imports_numba_only_for_a_twin_and_never_plotting_or_the_trainer(compiled_only, tmp_path):
    modules, line = _serve_and_stop(compiled_only, tmp_path / "wide.log")
    assert "tensorflow" in modules and "keras" in modules  # the imports were seen at all
    assert "numba" not in modules and "llvmlite" not in modules
    assert not {m for m in modules if m.split(".")[0] == "matplotlib" or m.startswith("lstmserve.trainer")}
    # Where the seconds went, as the operator reads it: every phase, every bucket.
    for part in ("interpreter and command line", "import tensorflow, keras", "model 'm'"):
        assert part in line, line
    log = (tmp_path / "wide.log").read_text()
    loaded = re.search(r"model 'm' version 1 loaded from .* in [\d.]+ s \((.*)\)", log)
    assert loaded and all(f"bucket {b} " in loaded.group(1) for b in DEFAULT_BUCKETS), loaded
    assert "read " in loaded.group(1) and "build " in loaded.group(1) and "compile " in loaded.group(1)

    tiny = _tiny_stack(tmp_path / "tiny.h5")
    modules, _ = _serve_and_stop(tiny, tmp_path / "tiny.log")
    assert "numba" in modules  # the twin serves it: now numba is needed
    assert "runs as a compiled twin" in (tmp_path / "tiny.log").read_text()

    modules, _ = _serve_and_stop(tiny, tmp_path / "tiny-xla.log", "--no-twin")  # memory over speed
    assert "numba" not in modules and "llvmlite" not in modules
    log = (tmp_path / "tiny-xla.log").read_text()
    assert "compiled twin" not in log and all(f"bucket {b} " in log for b in DEFAULT_BUCKETS), log[-2000:]


def _inspect(model: Path, cache: Path) -> dict:
    done = subprocess.run([sys.executable, "-m", "lstmserve.client.cli", "inspect", "--json",
                           "--compilation-cache", str(cache), str(model)],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout)


def _entries(folder: Path) -> dict[str, tuple[int, int]]:
    return {entry.name: (entry.stat().st_ino, entry.stat().st_mtime_ns) for entry in folder.iterdir()}


@pytest.mark.integration
@pytest.mark.slow
def test_compiled_buckets_are_kept_on_disk_and_loaded_by_the_next_process(compiled_only, tmp_path):
    cache = tmp_path / "cache"
    first = _inspect(compiled_only, cache)
    folder = cache / _build_tag()
    written = _entries(folder)
    assert len(written) >= len(DEFAULT_BUCKETS), written  # an executable per bucket
    assert (folder.stat().st_mode & 0o777) == 0o700
    second = _inspect(compiled_only, cache)
    # Nothing compiled again: a compilation writes its executable anew (a new file renamed into place).
    assert _entries(folder) == written
    assert second["prediction_on_zeros"] == first["prediction_on_zeros"]


@pytest.mark.integration
def test_a_compilation_cache_others_may_write_is_refused(compiled_only, tmp_path):
    folder = tmp_path / "shared" / _build_tag()
    folder.mkdir(parents=True)
    folder.chmod(0o777)
    for command in ("inspect", "serve"):
        target = ([str(compiled_only)] if command == "inspect"
                  else ["--model", str(compiled_only), "--port", "0", "--metrics-port", "0"])
        done = subprocess.run([sys.executable, "-m", "lstmserve.client.cli", command,
                               "--compilation-cache", str(tmp_path / "shared"), *target],
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 2, done.stderr[-2000:]
        assert "writable by no one else" in done.stderr and str(folder) in done.stderr


@pytest.mark.unit
def test_one_trace_with_the_batch_open_equals_keras_at_every_bucket(tmp_path):
    # TimeDistributed is the layer that computed wrong shapes with batch AND timesteps symbolic; with
    # fixed timesteps only the batch is open.
    keras.utils.set_random_seed(14)
    inputs = keras.Input((6, 3))
    sequence = keras.layers.LSTM(8, return_sequences=True)(inputs)
    outputs = keras.layers.TimeDistributed(keras.layers.Dense(2))(sequence)
    path = modelzoo.save(keras.Model(inputs, outputs), tmp_path / "td.h5")
    model = load_model(path, "td", engine=EngineConfig(twin=False))
    runner = model.engine.engine
    assert runner.tracing_count == 1
    rng = np.random.default_rng(4)
    for rows in (1, 3, 8, 17, 64, 70):
        x = rng.normal(size=(rows, 6, 3)).astype(np.float32)
        (served,) = runner.predict([x])
        assert served.shape == (rows, 6, 2)
        np.testing.assert_allclose(served, modelzoo.reference(path, x)[0], rtol=1e-4, atol=1e-5)
    assert runner.tracing_count == 1
    model.close()


@pytest.mark.unit
def test_phases_count_only_where_recorded_and_add_up_by_name():
    with phase("outside"):
        pass  # no recorder on this thread: nothing to count, nothing fails
    with recording() as phases:
        for _ in range(2):
            with phase("step"):
                time.sleep(0.01)
        with phase("other"):
            pass
    assert list(phases.seconds) == ["step", "other"]
    assert phases.seconds["step"] >= 0.02
    assert re.fullmatch(r"step 0\.\d\d, other 0\.\d\d", phases.describe())
    assert isinstance(Phases().describe(), str)
    # The kernel's own account of this process's age, as ps reads it.
    elapsed = subprocess.run(["ps", "-o", "etimes=", "-p", str(os.getpid())], capture_output=True,
                             text=True, check=True).stdout
    assert abs(since_process_start() - int(elapsed)) < 2


ROOT = Path(__file__).resolve().parents[1]


def _pins() -> dict[str, str]:
    lines = (ROOT / "constraints.txt").read_text().splitlines()
    return dict(line.split("==") for line in lines if "==" in line and not line.startswith("#"))


def _resolve(build: str, tmp_path: Path) -> dict[str, str]:
    """What pip would install for the server with one TensorFlow build, read from the registry's
    metadata (nothing is installed)."""
    report = tmp_path / f"{build}.json"
    done = subprocess.run([sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed",
                           "--quiet", "--report", str(report), "-c", str(ROOT / "constraints.txt"),
                           str(ROOT / "client"), str(ROOT / "format"), f"{ROOT / 'server'}[{build}]"],
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    installed = json.loads(report.read_text())["install"]
    return {item["metadata"]["name"].lower().replace("_", "-"): item["metadata"]["version"]
            for item in installed}


@pytest.mark.slow
@pytest.mark.parametrize("build, wanted, unwanted", [
    ("cpu", "tensorflow-cpu", "tensorflow"),
    ("gpu", "tensorflow", "tensorflow-cpu"),
])
def test_each_extra_installs_one_tensorflow_build_at_its_pin(build, wanted, unwanted, tmp_path):
    # Both builds install the same `tensorflow` package: one must never bring the other.
    resolved = _resolve(build, tmp_path)
    assert wanted in resolved and unwanted not in resolved, sorted(resolved)
    pins = _pins()
    for name, version in resolved.items():
        if name.startswith(("tensorflow", "nvidia-", "keras")):
            assert pins.get(name) == version, f"{name} {version} is not pinned in constraints.txt"
    assert any(name.startswith("nvidia-") for name in resolved) == (build == "gpu")


def test_a_frozen_heap_is_collected_again_once_a_model_is_closed():
    import gc
    import weakref

    class Node:
        pass

    thresholds = gc.get_threshold()
    try:
        cycle = Node()
        cycle.me = cycle
        alive = weakref.ref(cycle)
        freeze_heap()  # as at SERVING: the cycle is frozen, out of every collection
        assert gc.get_threshold() == GC_THRESHOLDS and gc.get_freeze_count() > 0
        del cycle
        gc.collect()
        assert alive() is not None  # frozen garbage stays: why a closed model needs collect=True
        freeze_heap(collect=True)
        assert alive() is None
    finally:
        gc.unfreeze()
        gc.set_threshold(*thresholds)


def test_a_burst_of_closed_models_is_collected_once_and_nothing_after_stop():
    import gc
    import weakref

    class Node:
        pass

    def frozen_garbage() -> weakref.ref:
        cycle = Node()
        cycle.me = cycle
        alive = weakref.ref(cycle)
        freeze_heap()
        return alive

    full = []
    # Counted as they start: the weak reference dies during the collection, before its "stop".
    track = lambda phase, info: full.append(1) if phase == "start" and info["generation"] == 2 else None  # noqa: E731
    thresholds = gc.get_threshold()
    gc.callbacks.append(track)
    try:
        keeper = HeapKeeper()
        keeper.REFREEZE_DELAY_S = 0.2
        alive = frozen_garbage()
        for _ in range(5):  # five versions closed in a row: one collection
            keeper.model_closed()
        deadline = time.monotonic() + 10
        while alive() is not None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert alive() is None
        time.sleep(0.5)  # past the delay again: no second collection comes
        assert len(full) == 1
        alive = frozen_garbage()
        keeper.stop()
        keeper.model_closed()  # on the way out: nothing collected
        time.sleep(0.5)
        assert alive() is not None and len(full) == 1
    finally:
        gc.callbacks.remove(track)
        gc.unfreeze()
        gc.set_threshold(*thresholds)
