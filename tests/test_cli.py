"""The `lstmserve` program end to end: serve in its own process, predict and inspect from the shell."""

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from lstmserve.client import Client

pytestmark = [pytest.mark.integration, pytest.mark.slow]

LSTMSERVE = str(Path(sys.executable).with_name("lstmserve"))


@pytest.fixture
def served_demo(seed_h5, classifier_h5, tmp_path):
    """`lstmserve serve` on port 0 in a child process; yields its address once SERVING."""
    log = tmp_path / "serve.log"
    with log.open("w") as stream:
        process = subprocess.Popen(
            [LSTMSERVE, "serve", "--metrics-port", "0", "--model", f"seed={seed_h5}", "--model",
             f"classifier={classifier_h5}", "--port", "0"], stdout=stream, stderr=subprocess.STDOUT)
    try:
        address = _wait_until_serving(process, log)
        yield address
    finally:
        process.terminate()
        assert process.wait(30) == 0, log.read_text()[-2000:]


def _wait_until_serving(process, log: Path, timeout: float = 120) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, log.read_text()[-2000:]
        found = re.search(r"listening on (\S+):(\d+)", log.read_text())
        if found:
            address = f"{found[1]}:{found[2]}"
            with Client(address, timeout=5) as client:
                if client.health() == "SERVING":
                    return address
        time.sleep(0.3)
    raise AssertionError(f"server did not report SERVING: {log.read_text()[-2000:]}")


def run(*args, check=True):
    result = subprocess.run([LSTMSERVE, *args], capture_output=True, text=True, timeout=300)
    if check:
        assert result.returncode == 0, result.stderr[-2000:]
    return result


def test_predict_from_the_shell_in_three_modes(served_demo):
    values = run("predict", "--target", served_demo, "--model", "seed",
                 "[0.0, 0.1, 0.2, 0.3, 0.4]", "--shape", "5,1,1")
    assert np.asarray(json.loads(values.stdout)).shape == (5, 1)
    rising = json.dumps((0.05 * np.arange(20)).reshape(1, 20, 1).tolist())
    labels = run("predict", "--target", served_demo, "--model", "classifier", "--mode", "classes",
                 "--labels", rising)
    assert json.loads(labels.stdout) == ["rising"]
    proba = run("predict", "--target", served_demo, "--model", "classifier",
                "--mode", "probabilities", rising)
    assert abs(sum(json.loads(proba.stdout)[0]) - 1) < 1e-5
    refused = run("predict", "--target", served_demo, "--model", "seed", "--mode", "classes",
                  "[[[0.1]]]", check=False)
    assert refused.returncode == 1
    assert "FAILED_PRECONDITION: model 'seed' output 'dense' has a linear activation" in refused.stderr


def test_forecast_from_the_shell_says_why_a_model_cannot(served_demo):
    refused = run("forecast", "--target", served_demo, "--model", "seed", "--horizon", "3", "[0.1, 0.2]",
                  check=False)
    assert refused.returncode == 1
    assert "FAILED_PRECONDITION" in refused.stderr and "does not declare" in refused.stderr
    too_far = run("forecast", "--target", served_demo, "--model", "seed", "--horizon", "0", "[0.1]",
                  check=False)
    assert too_far.returncode == 1 and "horizon is 0; expected 1..1000" in too_far.stderr


def test_predict_reads_npy_files(served_demo, tmp_path):
    path = tmp_path / "x.npy"
    np.save(path, np.zeros((2, 1, 1), np.float32))
    result = run("predict", "--target", served_demo, "--model", "seed", "--file", str(path))
    assert np.asarray(json.loads(result.stdout)).shape == (2, 1)


def test_inspect_describes_a_model_and_predicts_on_zeros(seed_h5):
    report = json.loads(run("inspect", str(seed_h5), "--json").stdout)
    assert report["keras_version"] == "3.15.1"
    assert report["inputs"] == ["float32 [batch, timesteps=1, features=1] 'input_layer'"]
    assert report["layers"] == ["LSTM 'lstm'", "Dense 'dense'"]
    assert report["engine"].startswith("compiled twin")
    assert np.asarray(report["prediction_on_zeros"]["dense"]).shape == (1, 1)


def test_inspect_fails_clearly_on_a_file_that_is_not_a_model(tmp_path):
    bogus = tmp_path / "notes.h5"
    bogus.write_text("not hdf5")
    result = run("inspect", str(bogus), check=False)
    assert result.returncode == 1
    assert "is not a readable HDF5 file" in result.stderr
    missing = run("inspect", str(tmp_path / "nope.h5"), check=False)
    assert missing.returncode == 1 and "does not exist" in missing.stderr


def test_serve_exits_non_zero_when_a_model_cannot_load(tmp_path):
    env = {**os.environ}
    result = subprocess.run([LSTMSERVE, "serve", "--metrics-port", "0", "--model", str(tmp_path / "nope.h5"),
                             "--port", "0"], capture_output=True, text=True, timeout=120, env=env)
    assert result.returncode == 1
    assert "cannot load model 'nope'" in result.stderr and "does not exist" in result.stderr


def test_train_demo_writes_a_servable_file(tmp_path):
    out = tmp_path / "demo.h5"
    result = run("train", "--demo", "seed", "--epochs", "3", "--output", str(out), "--quiet")
    assert "wrote" in result.stdout and out.is_file()
    import keras
    assert keras.models.load_model(out, compile=False).output_shape == (None, 1)


def test_file_limits_come_from_the_flags(seed_h5):
    small = run("inspect", str(seed_h5), "--max-model-bytes", "1KiB", check=False)
    assert small.returncode == 1 and "larger than the 1,024-byte limit (--max-model-bytes)" in small.stderr
    shallow = run("inspect", str(seed_h5), "--max-config-depth", "3", check=False)
    assert shallow.returncode == 1 and "--max-config-depth" in shallow.stderr
    assert "Traceback" not in small.stderr + shallow.stderr
    served = subprocess.run([LSTMSERVE, "serve", "--model", str(seed_h5), "--port", "0",
                             "--metrics-port", "0", "--max-model-bytes", "1KiB"],
                            capture_output=True, text=True, timeout=120)
    assert served.returncode == 1 and "larger than the 1,024-byte limit" in served.stderr


@pytest.mark.parametrize("flags, message", [
    (["--max-inflight-bytes", "1MiB"], "--max-inflight-bytes (1048576) must be at least --max-message-bytes"),
    (["--max-concurrent-calls", "0"], "must be 1 or more"),
    (["--max-config-depth", "0"], "and --max-config-depth must be 1 or more"),
    (["--max-message-bytes", "lots"], "'lots' is not a size"),
])
def test_serve_refuses_limits_it_cannot_honour(seed_h5, flags, message):
    result = subprocess.run([LSTMSERVE, "serve", "--model", str(seed_h5), "--port", "0",
                             "--metrics-port", "0", *flags], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and message in result.stderr, result.stderr[-2000:]
