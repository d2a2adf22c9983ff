"""The unmodified tritonclient library against a real lstmserve server: readiness, metadata, inference
equal to lstmserve.v1's, classification top-2, and clear statuses for bad requests.

tritonclient pins protobuf < 7 and lstmserve runs on 7, so the client lives in a virtualenv of its own
(built once from the package registry, kept under .venv/ between sessions) and runs as a subprocess.
"""

import json
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from lstmserve.trainer.demos import CLASSIFIER_LABELS, classifier_data, seed_data

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[1]


def pinned_tritonclient() -> str:
    """The version constraints.txt pins (the file the rest of the project's versions live in)."""
    pins = re.findall(r"^tritonclient==(\S+)$", (ROOT / "constraints.txt").read_text(), re.MULTILINE)
    assert len(pins) == 1, "constraints.txt must pin tritonclient==VERSION once"
    return pins[0]


@pytest.fixture(scope="session")
def triton_python() -> Path:
    version = pinned_tritonclient()
    venv = ROOT / ".venv" / f"tritonclient-{version}"
    python, done = venv / "bin" / "python", venv / ".installed"
    if not done.exists():  # a venv whose install did not finish is rebuilt, never trusted
        shutil.rmtree(venv, ignore_errors=True)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        install = subprocess.run(
            [str(python), "-m", "pip", "install", "--quiet", f"tritonclient[grpc]=={version}"],
            capture_output=True, text=True, timeout=900)
        assert install.returncode == 0, install.stderr[-3000:]
        done.touch()
    return python


# Runs inside tritonclient's venv: reads the inputs on stdin, prints what tritonclient saw as JSON.
CLIENT_SCRIPT = textwrap.dedent("""
    import json, sys
    from importlib.metadata import version
    import numpy as np
    import tritonclient.grpc as grpcclient
    from tritonclient.utils import InferenceServerException

    given = json.load(sys.stdin)
    client = grpcclient.InferenceServerClient(given["url"])
    seed_x = np.array(given["seed_x"], dtype=np.float32)
    classifier_x = np.array(given["classifier_x"], dtype=np.float32)

    def tensor(name, array, datatype="FP32"):
        infer_input = grpcclient.InferInput(name, list(array.shape), datatype)
        infer_input.set_data_from_numpy(array)
        return infer_input

    def error(call):
        try:
            call()
        except InferenceServerException as caught:
            return [caught.status(), caught.message()]
        return None

    seed = client.get_model_metadata("seed")
    classifier = client.get_model_metadata("classifier")
    seed_in, seed_out = seed.inputs[0].name, seed.outputs[0].name
    cls_in, cls_out = classifier.inputs[0].name, classifier.outputs[0].name
    values = client.infer("seed", [tensor(seed_in, seed_x)]).as_numpy(seed_out)
    probabilities = client.infer("classifier", [tensor(cls_in, classifier_x)]).as_numpy(cls_out)
    top2 = client.infer("classifier", [tensor(cls_in, classifier_x)],
                        outputs=[grpcclient.InferRequestedOutput(cls_out, class_count=2)]).as_numpy(cls_out)
    short = tensor(seed_in, seed_x)
    short.set_shape([seed_x.shape[0] - 1, *seed_x.shape[1:]])  # public API: the bytes no longer fit
    print(json.dumps({
        "versions": [version("tritonclient"), version("protobuf")],
        "live": client.is_server_live(), "ready": client.is_server_ready(),
        "models_ready": [client.is_model_ready("seed"), client.is_model_ready("classifier"),
                         client.is_model_ready("airline")],
        "extensions": list(client.get_server_metadata().extensions),
        "seed_metadata": [[t.name, t.datatype, list(t.shape)] for t in (*seed.inputs, *seed.outputs)],
        "seed_values": values.tolist(), "seed_dtype": str(values.dtype),
        "probabilities": probabilities.tolist(),
        "top2": [[s.decode() for s in row] for row in top2],
        "errors": {
            "datatype": error(lambda: client.infer(
                "seed", [tensor(seed_in, seed_x.astype(np.int64), "INT64")])),
            "shape": error(lambda: client.infer(
                "seed", [tensor(seed_in, np.zeros((2, 3, 1), np.float32))])),
            "byte size": error(lambda: client.infer("seed", [short])),
            "model": error(lambda: client.infer("airline", [tensor(seed_in, seed_x)])),
        },
    }))
""")


# Building the venv the first time downloads tritonclient, grpcio, protobuf and numpy.
@pytest.mark.timeout(1800)
def test_tritonclient_reads_readiness_metadata_and_infers_like_lstmserve_v1(
        triton_python, demo_server, client):
    seed_x, _ = seed_data()
    classifier_x, _ = classifier_data(rows=6, seed=5)
    given = {"url": f"127.0.0.1:{demo_server.port}", "seed_x": seed_x.tolist(),
             "classifier_x": classifier_x.tolist()}
    run = subprocess.run([str(triton_python), "-c", CLIENT_SCRIPT], input=json.dumps(given),
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    seen = json.loads(run.stdout)

    assert seen["versions"][0] == pinned_tritonclient() and int(seen["versions"][1].split(".")[0]) < 7
    assert (seen["live"], seen["ready"], seen["models_ready"]) == (True, True, [True, True, False])
    assert seen["extensions"] == ["classification"]
    assert seen["seed_metadata"] == [["input_layer", "FP32", [-1, 1, 1]], ["dense", "FP32", [-1, 1]]]

    assert seen["seed_dtype"] == "float32"
    np.testing.assert_array_equal(np.array(seen["seed_values"], np.float32),
                                  client.predict(seed_x, model="seed"))
    probabilities = client.predict_proba(classifier_x, model="classifier")
    np.testing.assert_array_equal(np.array(seen["probabilities"], np.float32), probabilities)
    top = np.argsort(-probabilities, axis=-1, kind="stable")[:, :2]
    assert seen["top2"] == [[f"{probabilities[row, i]:f}:{i}:{CLASSIFIER_LABELS[i]}" for i in top[row]]
                            for row in range(len(classifier_x))]

    errors = seen["errors"]
    assert errors["datatype"][0] == "StatusCode.INVALID_ARGUMENT"
    assert "input 'input_layer' has dtype int64; model 'seed' expects float32" in errors["datatype"][1]
    assert errors["shape"][0] == "StatusCode.INVALID_ARGUMENT"
    assert "input 'input_layer' has 3 timesteps" in errors["shape"][1]
    assert errors["byte size"] == ["StatusCode.INVALID_ARGUMENT",
                                   "input 'input_layer': shape [4, 1, 1] of FP32 needs 16 bytes; "
                                   "raw_input_contents[0] has 20"]
    assert errors["model"][0] == "StatusCode.NOT_FOUND"
    assert "no model named 'airline'" in errors["model"][1]
