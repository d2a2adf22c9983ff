"""Hot reload in real `lstmserve serve` processes: versions landing under load (some copied slowly, in
pieces) fail no call; 50 load/unload cycles give back memory and threads; one bad model at start stops
the server unless --keep-going; SIGHUP and `lstmserve models` from the shell."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import threading
import time
from collections import Counter

import grpc
import modelzoo
import pytest
from repository_helpers import (
    LARGE_INPUT,
    LSTMSERVE,
    SMALL_INPUT,
    native_threads,
    put,
    rss_mb,
    serve_process,
    states,
    stop_process,
    wait_for,
)

from lstmserve.client import Client, LstmserveError
from lstmserve.client.tensors import from_tensor, to_tensor
from lstmserve.v1 import model_pb2 as mpb
from lstmserve.v1 import prediction_service_pb2 as pb
from lstmserve.v1 import prediction_service_pb2_grpc as pb_grpc

pytestmark = [pytest.mark.integration, pytest.mark.slow]

CALLERS = 16
RUN_S = 20
CYCLES = 50


@pytest.fixture(scope="module")
def large(tmp_path_factory):
    """Versions 1-6 of a model too large for the twin (XLA on its batcher's thread), answering k."""
    folder = tmp_path_factory.mktemp("large")
    return {k: modelzoo.constant(folder / f"v{k}.h5", float(k), large=True) for k in range(1, 7)}


class Callers:
    """Closed-loop callers on a channel without retries, each keeping (version, value) per answer."""

    def __init__(self, address: str, count: int) -> None:
        self.channel = grpc.insecure_channel(address, options=[("grpc.enable_retries", 0)])
        stub = pb_grpc.PredictionServiceStub(self.channel)
        self.request = pb.PredictRequest(model=mpb.ModelSpec(name="m"), mode=mpb.PREDICTION_MODE_VALUES)
        self.request.inputs[""].CopyFrom(to_tensor(LARGE_INPUT))
        self.answers: list[list[tuple[int, float]]] = [[] for _ in range(count)]
        self.failures: Counter = Counter()
        self.stopping = threading.Event()
        self.threads = [threading.Thread(target=self._call, args=(stub, i)) for i in range(count)]
        for thread in self.threads:
            thread.start()

    def seen(self) -> set[int]:
        return {version for answers in self.answers for version, _ in answers[-50:]}

    def stop(self) -> None:
        self.stopping.set()
        for thread in self.threads:
            thread.join(120)
        self.channel.close()

    def _call(self, stub, index: int) -> None:
        while not self.stopping.is_set():
            try:
                response = stub.Predict(self.request, timeout=60)
            except grpc.RpcError as error:
                self.failures[f"{error.code().name}: {error.details()}"] += 1
                continue
            value = float(from_tensor(response.outputs["out"]).ravel()[0])
            self.answers[index].append((int(response.model.version), value))


def land(root, version: int, source, pieces: int = 1, pause: float = 0.0) -> None:
    """Copy a version in as a deployment would: at once, or in pieces with pauses (a slow copy)."""
    target = root / "m" / str(version) / "model.h5"
    target.parent.mkdir(parents=True, exist_ok=True)
    data = source.read_bytes()
    step = -(-len(data) // pieces)
    with open(target, "wb") as stream:
        for start in range(0, len(data), step):
            stream.write(data[start:start + step])
            stream.flush()
            if start + step < len(data):
                time.sleep(pause)


def test_versions_landing_under_load_fail_no_call_and_leave_no_thread(tmp_path, large):
    root, log = tmp_path / "repo", tmp_path / "serve.log"
    put(root, "m", 1, large[1])
    # Model control off: the file system alone drives the reloads.
    process, address = serve_process(["--model-dir", str(root), "--poll-seconds", "0.5",
                                      "--no-model-control"], log)
    callers = Callers(address, CALLERS)
    try:
        time.sleep(3)
        baseline = native_threads(process.pid)
        started = time.monotonic()
        copies = {3: (4, 0.3), 5: (3, 1.5)}  # 5: pauses longer than the server's settling time
        for version in range(2, 7):
            wait_for(lambda v=version: v - 1 in callers.seen(), 240, f"version {version - 1} answering")
            time.sleep(max(0.0, started + 3.0 * (version - 1) - time.monotonic()))
            land(root, version, large[version], *copies.get(version, (1, 0.0)))
        wait_for(lambda: 6 in callers.seen() and time.monotonic() - started >= RUN_S, 240, "version 6")
        with Client(address, timeout=30) as client:
            wait_for(lambda: all(states(client, "m")[str(v)] == "UNLOADED" for v in range(1, 6)), 120,
                     "versions 1-5 closed")
            with pytest.raises(LstmserveError) as refused:
                client.load_model("m", 1)
            assert refused.value.code == grpc.StatusCode.PERMISSION_DENIED
        wait_for(lambda: native_threads(process.pid) <= baseline, 60, "threads back to the baseline")
    finally:
        callers.stop()
        code = stop_process(process)
    assert not callers.failures, callers.failures
    for answers in callers.answers:
        versions = [version for version, _ in answers]
        assert versions == sorted(versions), "a caller went back to an older version"
        assert all(value == float(version) for version, value in answers)
    assert {version for answers in callers.answers for version, _ in answers} == set(range(1, 7))
    text = log.read_text()
    for version in range(1, 6):
        assert f"model 'm' version {version} closed: its calls are done and its thread stopped" in text
    assert code == 0, text[-3000:]


def test_fifty_load_and_unload_cycles_give_back_memory_and_threads(tmp_path, large):
    root, log = tmp_path / "repo", tmp_path / "serve.log"
    put(root, "m", 1, large[1])
    put(root, "m", 2, large[2])
    (root / "m" / "config.json").write_text('{"version_policy": "specific:2"}')
    process, address = serve_process(["--model-dir", str(root), "--poll-seconds", "0"], log)
    measures = []
    try:
        with Client(address, timeout=60) as client:
            for _ in range(CYCLES):
                client.load_model("m", 1)
                assert client.predict(LARGE_INPUT, model="m", version=1)[0, 0] == 1.0
                client.unload_model("m", 1)
                wait_for(lambda: states(client, "m")["1"] == "UNLOADED", 60, "version 1 closed")
                assert client.predict(LARGE_INPUT, model="m")[0, 0] == 2.0
                measures.append((rss_mb(process.pid), native_threads(process.pid)))
    finally:
        code = stop_process(process)
    (first_rss, first_threads), (last_rss, last_threads) = measures[0], measures[-1]
    print(f"after cycle 1: {first_rss:.0f} MB, {first_threads} threads; after cycle {CYCLES}: "
          f"{last_rss:.0f} MB, {last_threads} threads")
    assert last_rss - first_rss < 100, measures
    assert last_threads <= first_threads, measures
    assert code == 0, log.read_text()[-3000:]


def test_one_bad_model_stops_the_start_unless_keep_going(tmp_path):
    good = modelzoo.constant(tmp_path / "good.h5", 7.0)
    hostile = modelzoo.lambda_layer(tmp_path / "hostile.h5")
    models = ["--model", f"good={good}", "--model", f"hostile={hostile}"]
    failed = subprocess.run([LSTMSERVE, "serve", "--port", "0", "--metrics-port", "0", *models],
                            capture_output=True, text=True, timeout=300)
    assert failed.returncode == 1
    assert "cannot load model 'hostile' version 1" in failed.stderr and "is a Lambda" in failed.stderr
    assert "1 model version(s) failed to load at start; stopping (--keep-going" in failed.stderr

    root, log = tmp_path / "repo", tmp_path / "serve.log"
    put(root, "m", 1, good)
    process, address = serve_process([*models, "--keep-going", "--model-dir", str(root),
                                      "--poll-seconds", "0"], log)
    try:
        with Client(address, timeout=60) as client:
            assert client.predict(SMALL_INPUT, model="good")[0, 0] == 7.0
            assert client.health("lstmserve.v1.PredictionService/good") == "SERVING"
            assert client.health("lstmserve.v1.PredictionService/hostile") == "NOT_SERVING"
            assert client.health() == "SERVING"
            report = _models(address, "status", "hostile", "--json")
            (version,) = json.loads(report.stdout)[0]["versions"]
            assert version["state"] == "VERSION_STATE_FAILED" and "is a Lambda" in version["reason"]
            put(root, "m", 2, modelzoo.constant(tmp_path / "two.h5", 2.0))  # found on SIGHUP (no polling)
            os.kill(process.pid, signal.SIGHUP)
            wait_for(lambda: states(client, "m").get("2") == "AVAILABLE", 240, "version 2 after SIGHUP")
            assert client.predict(SMALL_INPUT, model="m")[0, 0] == 2.0
            text = _models(address, "unload", "m", "2").stdout
            assert text.startswith("m  (versions: latest:1)\n")
            assert _models(address, "status", "m").stdout.splitlines()[1].split()[:2] == ["2", "UNLOADED"]
            shutil.copyfile(good, root / "m" / "2" / "model.h5")
            client.reload_repository()
            assert states(client, "m")["2"] == "UNLOADED"  # a changed file does not undo an unload
            assert "AVAILABLE" in _models(address, "load", "m", "2").stdout
            assert client.predict(SMALL_INPUT, model="m")[0, 0] == 7.0
            refused = _models(address, "load", "m", "../../etc", check=False)
            assert refused.returncode == 1 and "INVALID_ARGUMENT" in refused.stderr
    finally:
        code = stop_process(process)
    assert code == 0, log.read_text()[-3000:]


def _models(address: str, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    done = subprocess.run([LSTMSERVE, "models", args[0], "--target", address, *args[1:]],
                          capture_output=True, text=True, timeout=300)
    if check:
        assert done.returncode == 0, done.stderr
    return done
