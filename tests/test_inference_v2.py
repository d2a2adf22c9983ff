"""The Open Inference Protocol (KServe V2) through a real server: the same answers as lstmserve.v1,
readiness and metadata, classification strings, and the same clear statuses for bad requests."""

import struct

import grpc
import numpy as np
import pytest
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from lstmserve.inference.v2 import grpc_predict_v2_pb2 as v2
from lstmserve.inference.v2 import grpc_predict_v2_pb2_grpc as v2_grpc
from lstmserve.trainer.demos import CLASSIFIER_LABELS, classifier_data, seed_data

pytestmark = pytest.mark.integration

SEED_SHAPE = "float32 [batch, timesteps=1, features=1]"


@pytest.fixture
def stub(demo_server):
    with grpc.insecure_channel(f"127.0.0.1:{demo_server.port}") as channel:
        yield v2_grpc.GRPCInferenceServiceStub(channel)


def infer_request(array, model="seed", datatype="FP32", name="input_layer", **fields):
    request = v2.ModelInferRequest(model_name=model, **fields)
    request.inputs.add(name=name, datatype=datatype, shape=array.shape)
    request.raw_input_contents.append(np.ascontiguousarray(array).tobytes())
    return request


def output_array(response, name):
    index = [o.name for o in response.outputs].index(name)
    tensor = response.outputs[index]
    if tensor.datatype == "BYTES":
        return np.array(read_bytes_tensor(response.raw_output_contents[index]),
                        dtype=object).reshape(tensor.shape)
    dtype = {"FP32": "<f4", "FP64": "<f8", "INT32": "<i4", "INT64": "<i8"}[tensor.datatype]
    return np.frombuffer(response.raw_output_contents[index], dtype).reshape(tensor.shape)


def read_bytes_tensor(raw):
    elements, offset = [], 0
    while offset < len(raw):
        (length,) = struct.unpack_from("<I", raw, offset)
        elements.append(raw[offset + 4:offset + 4 + length].decode())
        offset += 4 + length
    return elements


def test_liveness_readiness_and_server_metadata(stub):
    assert stub.ServerLive(v2.ServerLiveRequest(), timeout=30).live
    assert stub.ServerReady(v2.ServerReadyRequest(), timeout=30).ready
    metadata = stub.ServerMetadata(v2.ServerMetadataRequest(), timeout=30)
    assert metadata.name == "lstmserve" and list(metadata.extensions) == ["classification"]


def test_server_is_live_but_not_ready_until_health_says_serving(start_server, loaded_seed):
    running = start_server(loaded_seed, serving=False)
    with grpc.insecure_channel(f"127.0.0.1:{running.port}") as channel:
        stub = v2_grpc.GRPCInferenceServiceStub(channel)
        assert stub.ServerLive(v2.ServerLiveRequest(), timeout=30).live
        assert not stub.ServerReady(v2.ServerReadyRequest(), timeout=30).ready
        running.set_serving(True)
        assert stub.ServerReady(v2.ServerReadyRequest(), timeout=30).ready


@pytest.mark.parametrize("name,version,ready", [("seed", "", True), ("seed", "1", True),
                                                ("classifier", "", True), ("seed", "7", False),
                                                ("airline", "", False)])
def test_model_ready_is_what_the_registry_holds(stub, name, version, ready):
    assert stub.ModelReady(v2.ModelReadyRequest(name=name, version=version), timeout=30).ready is ready


def test_model_metadata_in_v2_datatypes_with_free_dimensions(stub):
    seed = stub.ModelMetadata(v2.ModelMetadataRequest(name="seed"), timeout=30)
    assert (seed.name, list(seed.versions), seed.platform) == ("seed", ["1"], "keras_h5")
    assert [(t.name, t.datatype, list(t.shape)) for t in seed.inputs] == [
        ("input_layer", "FP32", [-1, 1, 1])]
    assert [(t.name, t.datatype, list(t.shape)) for t in seed.outputs] == [("dense", "FP32", [-1, 1])]
    classifier = stub.ModelMetadata(v2.ModelMetadataRequest(name="classifier"), timeout=30)
    assert [list(t.shape) for t in classifier.outputs] == [[-1, len(CLASSIFIER_LABELS)]]


def test_seed_infer_equals_lstmserve_v1_predict(stub, client):
    X, _ = seed_data()
    expected = client.predict(X, model="seed")
    response = stub.ModelInfer(infer_request(X, id="call-1"), timeout=30)
    assert (response.model_name, response.model_version, response.id) == ("seed", "1", "call-1")
    assert [(o.name, o.datatype, list(o.shape)) for o in response.outputs] == [("dense", "FP32", [5, 1])]
    np.testing.assert_array_equal(output_array(response, "dense"), expected)


def test_typed_contents_and_fp64_inputs_give_the_same_answer(stub, client):
    X, _ = seed_data()
    expected = client.predict(X, model="seed")
    typed = v2.ModelInferRequest(model_name="seed")
    typed.inputs.add(name="input_layer", datatype="FP32", shape=X.shape).contents.fp32_contents.extend(
        X.ravel().tolist())
    np.testing.assert_array_equal(output_array(stub.ModelInfer(typed, timeout=30), "dense"), expected)
    wide = stub.ModelInfer(infer_request(X.astype("<f8"), datatype="FP64"), timeout=30)
    np.testing.assert_allclose(output_array(wide, "dense"), expected, rtol=1e-6)


def test_classifier_infer_equals_v1_probabilities_and_classification_gives_top_2(stub, client):
    X, _ = classifier_data(rows=8, seed=3)
    metadata = stub.ModelMetadata(v2.ModelMetadataRequest(name="classifier"), timeout=30)
    name, output = metadata.inputs[0].name, metadata.outputs[0].name
    probabilities = client.predict_proba(X, model="classifier")
    labels = client.predict_classes(X, model="classifier", labels=True)

    values = stub.ModelInfer(infer_request(X, "classifier", name=name), timeout=30)
    np.testing.assert_array_equal(output_array(values, output), probabilities)

    request = infer_request(X, "classifier", name=name)
    request.outputs.add(name=output).parameters["classification"].int64_param = 2
    response = stub.ModelInfer(request, timeout=30)
    assert (response.outputs[0].datatype, list(response.outputs[0].shape)) == ("BYTES", [8, 2])
    top = np.argsort(-probabilities, axis=-1, kind="stable")[:, :2]
    expected = [[f"{probabilities[row, i]:f}:{i}:{CLASSIFIER_LABELS[i]}" for i in top[row]]
                for row in range(len(X))]
    assert output_array(response, output).tolist() == expected
    assert [row[0].split(":")[2] for row in expected] == list(labels)


def bad(array=None, **changes):
    """A seed request with one thing changed."""
    X, _ = seed_data()
    request = infer_request(X if array is None else array)
    for path, value in changes.items():
        if path == "model":
            request.model_name = value
        elif path == "datatype":
            request.inputs[0].datatype = value
        elif path == "shape":
            request.inputs[0].shape[:] = value
        elif path == "raw":
            request.raw_input_contents[0] = value
        elif path == "output":
            request.outputs.add(name=value[0]).parameters["classification"].int64_param = value[1]
    return request


CASES = {
    "unserved datatype": (
        bad(datatype="BYTES"), "INVALID_ARGUMENT",
        "input 'input_layer' has datatype 'BYTES'; expected one of FP32, FP64, INT32, INT64"),
    "integer datatype for a float model": (
        bad(np.zeros((5, 1, 1), "<i8"), datatype="INT64"), "INVALID_ARGUMENT",
        f"input 'input_layer' has dtype int64; model 'seed' expects {SEED_SHAPE}"),
    "wrong shape": (bad(np.zeros((5, 3, 1), "<f4")), "INVALID_ARGUMENT",
                    f"input 'input_layer' has 3 timesteps; model 'seed' expects {SEED_SHAPE}"),
    "byte size not matching the shape": (
        bad(raw=b"\0" * 12), "INVALID_ARGUMENT",
        "input 'input_layer': shape [5, 1, 1] of FP32 needs 20 bytes; raw_input_contents[0] has 12"),
    "a zero beside huge dimensions": (
        bad(shape=[0, 2**40, 2**40], raw=b""), "INVALID_ARGUMENT",
        "input 'input_layer' has shape [0, 1099511627776, 1099511627776], larger than any tensor can be"),
    "rank 65": (bad(shape=[1] * 65, raw=b"\0" * 4), "INVALID_ARGUMENT",
                "input 'input_layer' has rank 65; a tensor has at most 32 dimensions"),
    "NaN values": (bad(np.full((2, 1, 1), np.nan, "<f4")), "INVALID_ARGUMENT",
                   "input 'input_layer' contains NaN or infinity"),
    "unknown model": (bad(model="airline"), "NOT_FOUND",
                      "no model named 'airline'; this server holds ['classifier', 'seed']"),
    "no model name while two are served": (
        bad(model=""), "INVALID_ARGUMENT", "request names no model, and this server holds 2"),
    "unknown output": (bad(output=("probs", 1)), "INVALID_ARGUMENT",
                       "model 'seed' has outputs ['dense']; request asks for output 'probs'"),
    "classification of a regression output": (
        bad(output=("dense", 1)), "FAILED_PRECONDITION",
        "model 'seed' output 'dense' has a linear activation; classification needs a sigmoid or softmax"),
}


@pytest.mark.parametrize("case", CASES, ids=list(CASES))
def test_bad_v2_request_gets_a_clear_status_and_the_server_keeps_serving(stub, case):
    request, code, message = CASES[case]
    with pytest.raises(grpc.RpcError) as caught:
        stub.ModelInfer(request, timeout=30)
    assert caught.value.code().name == code
    assert message in caught.value.details()
    assert list(stub.ModelInfer(bad(), timeout=30).outputs[0].shape) == [5, 1]


def test_metadata_of_an_unknown_model_is_not_found(stub):
    with pytest.raises(grpc.RpcError) as caught:
        stub.ModelMetadata(v2.ModelMetadataRequest(name="airline"), timeout=30)
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    assert "no model named 'airline'" in caught.value.details()


def test_repository_extension_lists_the_models_and_refuses_control_without_a_repository(stub):
    index = stub.RepositoryIndex(v2.RepositoryIndexRequest(), timeout=30).models
    assert sorted((m.name, m.version, m.state) for m in index) == [("classifier", "1", "READY"),
                                                                   ("seed", "1", "READY")]
    with pytest.raises(grpc.RpcError) as caught:
        stub.RepositoryModelLoad(v2.RepositoryModelLoadRequest(model_name="seed"), timeout=30)
    assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "this server has no model repository" in caught.value.details()


def test_triton_rpcs_outside_the_contract_are_unimplemented(demo_server):
    with grpc.insecure_channel(f"127.0.0.1:{demo_server.port}") as channel:
        config = channel.unary_unary("/inference.GRPCInferenceService/ModelConfig")
        with pytest.raises(grpc.RpcError) as caught:
            config(b"", timeout=30)
    assert caught.value.code() == grpc.StatusCode.UNIMPLEMENTED


def test_reflection_lists_the_v2_service(demo_server):
    with grpc.insecure_channel(f"127.0.0.1:{demo_server.port}") as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        request = reflection_pb2.ServerReflectionRequest(list_services="")
        reply = next(stub.ServerReflectionInfo(iter([request])))
    names = {service.name for service in reply.list_services_response.service}
    assert {"inference.GRPCInferenceService", "lstmserve.v1.PredictionService"} <= names


def test_long_names_are_repeated_in_part(stub):
    for request in (bad(model="m" * 100_000), infer_request(seed_data()[0], name="i" * 100_000)):
        with pytest.raises(grpc.RpcError) as caught:
            stub.ModelInfer(request, timeout=30)
        assert caught.value.code().name in ("NOT_FOUND", "INVALID_ARGUMENT"), caught.value.details()
        assert "... (100000 characters)" in caught.value.details()
        assert len(caught.value.details()) < 1500
