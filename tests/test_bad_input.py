"""Every bad request gets INVALID_ARGUMENT / NOT_FOUND / FAILED_PRECONDITION with a clear message,
never UNKNOWN, and the server keeps answering good requests afterwards."""

import grpc
import numpy as np
import pytest

from lstmserve.client import Client, to_tensor
from lstmserve.server.serving.model import LoadedModel
from lstmserve.v1 import model_pb2 as mpb
from lstmserve.v1 import prediction_service_pb2 as pb
from lstmserve.v1 import prediction_service_pb2_grpc as pb_grpc
from lstmserve.v1 import tensor_pb2 as tpb

pytestmark = pytest.mark.integration

GOOD = np.array([0.0, 0.1, 0.2, 0.3, 0.4], np.float32).reshape(5, 1, 1)
SEED_SHAPE = "float32 [batch, timesteps=1, features=1]"


@pytest.fixture
def stub(demo_server):
    with grpc.insecure_channel(f"127.0.0.1:{demo_server.port}") as channel:
        yield pb_grpc.PredictionServiceStub(channel)


def request(inputs=None, model="seed", mode=mpb.PREDICTION_MODE_VALUES, version=""):
    tensors = {"": to_tensor(GOOD)} if inputs is None else inputs
    return pb.PredictRequest(model=mpb.ModelSpec(name=model, version=version), inputs=tensors,
                             mode=mode)


CASES = {
    "wrong rank": (
        request({"": to_tensor(GOOD.reshape(5, 1))}), "INVALID_ARGUMENT",
        f"input 'input_layer' has rank 2 (shape [5, 1]); model 'seed' expects {SEED_SHAPE}"),
    "wrong timesteps": (
        request({"": to_tensor(np.zeros((5, 3, 1), np.float32))}), "INVALID_ARGUMENT",
        f"input 'input_layer' has 3 timesteps; model 'seed' expects {SEED_SHAPE}"),
    "wrong features": (
        request({"": to_tensor(np.zeros((5, 1, 2), np.float32))}), "INVALID_ARGUMENT",
        f"input 'input_layer' has 2 features; model 'seed' expects {SEED_SHAPE}"),
    "integer dtype for a float model": (
        request({"": to_tensor(np.zeros((5, 1, 1), np.int64))}), "INVALID_ARGUMENT",
        f"input 'input_layer' has dtype int64; model 'seed' expects {SEED_SHAPE}"),
    "unspecified dtype": (
        request({"": tpb.Tensor(shape=[1, 1, 1], content=b"\0" * 4)}), "INVALID_ARGUMENT",
        "input: dtype is DATA_TYPE_UNSPECIFIED; expected one of float32, float64, int32, int64"),
    "byte length not matching the shape": (
        request({"": tpb.Tensor(dtype=tpb.DATA_TYPE_FLOAT32, shape=[5, 1, 1],
                                content=b"\0" * 12)}), "INVALID_ARGUMENT",
        "input: shape [5, 1, 1] of float32 needs 20 bytes; content has 12"),
    "a zero beside huge dimensions": (
        request({"": tpb.Tensor(dtype=tpb.DATA_TYPE_FLOAT32, shape=[0, 2**40, 2**40])}),
        "INVALID_ARGUMENT",
        "input has shape [0, 1099511627776, 1099511627776], larger than any tensor can be"),
    "rank 65": (
        request({"": tpb.Tensor(dtype=tpb.DATA_TYPE_FLOAT32, shape=[1] * 65, content=b"\0" * 4)}),
        "INVALID_ARGUMENT", "input has rank 65; a tensor has at most 32 dimensions"),
    "empty batch": (
        request({"": to_tensor(np.zeros((0, 1, 1), np.float32))}), "INVALID_ARGUMENT",
        "input 'input_layer' is an empty batch (shape [0, 1, 1]); model 'seed' expects"),
    "NaN values": (
        request({"": to_tensor(np.full((2, 1, 1), np.nan, np.float32))}), "INVALID_ARGUMENT",
        "input 'input_layer' contains NaN or infinity"),
    "unknown input name": (
        request({"prices": to_tensor(GOOD)}), "INVALID_ARGUMENT",
        "model 'seed' takes inputs ['input_layer']; request has ['prices'] (missing "
        "['input_layer']) (unknown ['prices'])"),
    "no inputs": (
        request({}), "INVALID_ARGUMENT", "request has no inputs; send one tensor per model input"),
    "unspecified mode": (
        request(mode=mpb.PREDICTION_MODE_UNSPECIFIED), "INVALID_ARGUMENT",
        "mode is PREDICTION_MODE_UNSPECIFIED; expected one of PREDICTION_MODE_VALUES, "
        "PREDICTION_MODE_CLASSES, PREDICTION_MODE_PROBABILITIES"),
    "unknown mode number": (
        request(mode=42), "INVALID_ARGUMENT", "mode is unknown PredictionMode 42"),
    "unknown model": (
        request(model="airline"), "NOT_FOUND",
        "no model named 'airline'; this server holds ['classifier', 'seed']"),
    "unknown version": (
        request(version="7"), "NOT_FOUND", "model 'seed' has no version '7'; loaded versions: ['1']"),
    "no model name while two are served": (
        request(model=""), "INVALID_ARGUMENT",
        "request names no model, and this server holds 2: ['classifier', 'seed']"),
    "classes of a regression output": (
        request(mode=mpb.PREDICTION_MODE_CLASSES), "FAILED_PRECONDITION",
        "model 'seed' output 'dense' has a linear activation; classes mode needs a sigmoid or "
        "softmax output (use values mode)"),
}


@pytest.mark.parametrize("case", CASES, ids=list(CASES))
def test_bad_request_gets_a_clear_status_and_the_server_keeps_serving(stub, case):
    bad, code, message = CASES[case]
    with pytest.raises(grpc.RpcError) as caught:
        stub.Predict(bad, timeout=30)
    assert caught.value.code().name == code
    assert message in caught.value.details()
    good = stub.Predict(request(), timeout=30)
    assert list(good.outputs["dense"].shape) == [5, 1]


def test_mismatched_batch_sizes_across_inputs(start_server, tmp_path):
    import modelzoo
    from conftest import load
    server = start_server(load(modelzoo.multi_io(tmp_path / "m.h5"), "multi"))
    inputs = {"series": np.zeros((2, 4, 3), np.float32), "static": np.zeros((3, 4), np.float32)}
    with Client(f"127.0.0.1:{server.port}") as client, pytest.raises(Exception) as caught:
        client.predict(inputs)
    assert caught.value.code.name == "INVALID_ARGUMENT"
    assert "must share one batch size; got {'series': 2, 'static': 3}" in caught.value.message


def test_unexpected_failure_is_internal_without_leaking_details(start_server, loaded_seed):
    from dataclasses import replace

    from engines import ExplodingEngine

    from lstmserve.server.engine.batcher import Batcher
    engine = Batcher(ExplodingEngine(), name="broken")
    broken: LoadedModel = replace(loaded_seed, name="broken", engine=engine)
    server = start_server(broken)
    with Client(f"127.0.0.1:{server.port}") as client, pytest.raises(Exception) as caught:
        client.predict(GOOD)
    assert caught.value.code.name == "INTERNAL"
    assert "model 'broken' failed to run inputs of shape [[5, 1, 1]]; see the server log (incident" \
        in caught.value.message
    assert "secret" not in caught.value.message and "Traceback" not in caught.value.message


def test_deadline_is_applied_per_call(client):
    with pytest.raises(Exception) as caught:
        client.predict(np.zeros((50_000, 1, 1), np.float32), model="seed", timeout=0.001)
    assert caught.value.code.name == "DEADLINE_EXCEEDED"


LONG = "m" * 100_000


@pytest.mark.parametrize("bad, code", [
    (request(model=LONG), "NOT_FOUND"),
    (request(version=LONG), "NOT_FOUND"),
    (request({LONG: to_tensor(GOOD)}), "INVALID_ARGUMENT"),
    (request({f"x{i}": to_tensor(GOOD) for i in range(1000)}), "INVALID_ARGUMENT"),
], ids=["model name", "version", "input name", "a thousand input names"])
def test_error_messages_repeat_at_most_a_bounded_part_of_the_request(stub, bad, code):
    with pytest.raises(grpc.RpcError) as caught:
        stub.Predict(bad, timeout=30)
    assert caught.value.code().name == code, caught.value.details()
    assert len(caught.value.details()) < 1500
    assert "(100000 characters)" in caught.value.details() or "and 992 more" in caught.value.details()
