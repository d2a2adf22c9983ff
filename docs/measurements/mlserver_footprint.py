"""Issue 17: lstmserve beside MLServer on the same model file: time from process start to SERVING (to
the first answered request for MLServer), CPU seconds by then, and resident memory after 50 requests.

MLServer 1.7.1 runs a minimal Keras runtime (keras.models.load_model, then the model called eagerly:
it compiles nothing ahead) on tensorflow-cpu, in one process (parallel_workers 0), from a virtualenv of
its own (its pins clash with lstmserve's). Both get one TensorFlow thread; rounds are interleaved.

Usage: .venv/bin/python docs/measurements/mlserver_footprint.py MLSERVER_VENV MODEL.h5 OUT [ROUNDS]
         [-- LSTMSERVE FLAGS...]
MLSERVER_VENV: python -m venv V && V/bin/pip install mlserver==1.7.1 tensorflow-cpu==2.21.0
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from statistics import median

import numpy as np

from lstmserve.client import Client
from lstmserve.server.bench import processes
from lstmserve.server.bench.footprint import cpu_seconds, memory_mb

RUNTIME = '''
import keras
import numpy as np
from mlserver import MLModel
from mlserver.codecs import NumpyCodec
from mlserver.types import InferenceResponse


class KerasRuntime(MLModel):
    async def load(self) -> bool:
        self._model = keras.models.load_model(self.settings.parameters.uri, compile=False)
        return True

    async def predict(self, payload):
        x = NumpyCodec.decode_input(payload.inputs[0])
        y = np.asarray(self._model(x, training=False))
        return InferenceResponse(model_name=self.name, outputs=[NumpyCodec.encode_output("output", y)])
'''
REQUESTS = 50


def model_input(path: Path) -> np.ndarray:
    import h5py
    config = json.loads(h5py.File(path, "r").attrs["model_config"])
    layers = config["config"]["layers"]
    shape = layers[0]["config"].get("batch_shape") or layers[0]["config"]["batch_input_shape"]
    return np.zeros([1, *[d or 1 for d in shape[1:]]], np.float32)


def mlserver(venv: Path, model: Path, folder: Path, x: np.ndarray, env: dict) -> tuple[float, float, float]:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "runtime.py").write_text(RUNTIME)
    http, grpc_port, metrics_port = (processes.free_port() for _ in range(3))
    (folder / "settings.json").write_text(json.dumps({
        "http_port": http, "grpc_port": grpc_port, "metrics_port": metrics_port, "parallel_workers": 0,
        "load_models_at_startup": True}))
    (folder / "model-settings.json").write_text(json.dumps({
        "name": "m", "implementation": "runtime.KerasRuntime", "parameters": {"uri": str(model)}}))
    body = json.dumps({"inputs": [{"name": "x", "shape": list(x.shape), "datatype": "FP32",
                                   "data": x.ravel().tolist()}]}).encode()
    started = time.monotonic()
    with open(folder / "mlserver.log", "w") as log:
        child = subprocess.Popen([str(venv / "bin" / "mlserver"), "start", str(folder)], cwd=folder, env=env,
                                 stdout=log, stderr=subprocess.STDOUT)
    try:
        while True:
            if child.poll() is not None or time.monotonic() - started > 300:
                raise RuntimeError(f"MLServer did not answer: see {folder / 'mlserver.log'}")
            try:
                infer(http, body)
                break
            except OSError:
                time.sleep(0.05)
        first, cpu = time.monotonic() - started, cpu_seconds(child.pid)
        for _ in range(REQUESTS):
            infer(http, body)
        return first, cpu, memory_mb(child.pid)["rss_mb"]
    finally:
        child.terminate()
        child.wait(60)


def infer(port: int, body: bytes) -> None:
    request = urllib.request.Request(f"http://127.0.0.1:{port}/v2/models/m/infer", data=body,
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as answer:
        answer.read()


def lstmserve(model: Path, folder: Path, x: np.ndarray, env: dict,
              flags: list[str]) -> tuple[float, float, float]:
    folder.mkdir(parents=True, exist_ok=True)
    with processes.real_server("m", model, flags, env, folder / "lstmserve.log") as server:
        with Client(server.address) as client:
            for _ in range(REQUESTS):
                client.predict(x, model="m")
        return server.serving_s, server.serving_cpu_s, memory_mb(server.pid)["rss_mb"]


def main(venv: Path, model: Path, out: Path, rounds: int, flags: list[str]) -> None:
    env = {**os.environ, "TF_NUM_INTRAOP_THREADS": "1", "TF_NUM_INTEROP_THREADS": "1",
           "TF_CPP_MIN_LOG_LEVEL": "3"}
    x = model_input(model)
    results: dict[str, list] = {"lstmserve " + " ".join(flags): [], "MLServer 1.7.1": []}
    for round_ in range(rounds):
        for name in results:
            folder = out / f"round{round_}"
            figures = (mlserver(venv, model, folder / "mlserver", x, env) if name.startswith("MLServer")
                       else lstmserve(model, folder / "lstmserve", x, env, flags))
            results[name].append(figures)
            print(f"round {round_} {name}: {figures[0]:.2f} s to answer, {figures[1]:.2f} CPU s, "
                  f"{figures[2]:.0f} MB", flush=True)
    for name, runs in results.items():
        seconds, cpu, rss = (median(r[i] for r in runs) for i in range(3))
        print(f"{name:28s} median {seconds:.2f} s, {cpu:.2f} CPU s, {rss:.0f} MB resident after {REQUESTS} "
              "requests")


if __name__ == "__main__":
    args = sys.argv[1:]
    extra = args[args.index("--") + 1:] if "--" in args else []
    args = args[:args.index("--")] if "--" in args else args
    main(Path(args[0]), Path(args[1]), Path(args[2]), int(args[3]) if len(args) > 3 else 3, extra)
