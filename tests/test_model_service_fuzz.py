"""Property-based fuzzing of ModelService and the V2 repository extension through a real server: any
name, version, label and parameters get a clear status (never INTERNAL or UNKNOWN), and the server
keeps answering."""

from __future__ import annotations

import grpc
import modelzoo
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from repository_helpers import SMALL_INPUT, put, serve_repository

from lstmserve.inference.v2 import grpc_predict_v2_pb2 as v2
from lstmserve.inference.v2 import grpc_predict_v2_pb2_grpc as v2_grpc
from lstmserve.v1 import model_pb2 as mpb
from lstmserve.v1 import model_service_pb2 as msp
from lstmserve.v1 import model_service_pb2_grpc as msp_grpc
from lstmserve.v1 import prediction_service_pb2 as pb
from lstmserve.v1 import prediction_service_pb2_grpc as pb_grpc

pytestmark = pytest.mark.integration

CLEAR = {"OK", "INVALID_ARGUMENT", "NOT_FOUND", "FAILED_PRECONDITION", "PERMISSION_DENIED",
         "RESOURCE_EXHAUSTED", "UNAVAILABLE"}
EXAMPLES = 400

text = st.text(st.characters(exclude_categories=["Cs"]), max_size=40) | st.sampled_from(
    ["m", "", "..", "../m", "m/1", "m\\1", ".m", "-1", "0", "1", "2", "x" * 200, "m\x00", "stable"])
parameter = st.builds(v2.ModelRepositoryParameter, bool_param=st.booleans()) | st.builds(
    v2.ModelRepositoryParameter, string_param=text) | st.builds(v2.ModelRepositoryParameter,
                                                                bytes_param=st.binary(max_size=20))


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    folder = tmp_path_factory.mktemp("fuzz")
    put(folder / "repo", "m", 1, modelzoo.constant(folder / "v1.h5", 1.0))
    served = serve_repository(folder / "repo")
    with grpc.insecure_channel(served.address) as channel:
        yield (msp_grpc.ModelServiceStub(channel), v2_grpc.GRPCInferenceServiceStub(channel),
               pb_grpc.PredictionServiceStub(channel))
    served.stop()


def code_of(call, request) -> str:
    try:
        call(request, timeout=120)
    except grpc.RpcError as error:
        assert error.code().name in CLEAR, (error.code(), error.details())
        assert len(error.details()) < 1000
        return error.code().name
    return "OK"


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=text, version=text)
def test_model_service_answers_every_name_and_version_clearly(server, name, version):
    models, _, _ = server
    assume(name != "m")  # unloading the served model would only slow the next examples down
    code_of(models.GetModelStatus, msp.GetModelStatusRequest(name=name))
    code_of(models.LoadModel, msp.LoadModelRequest(name=name, version=version))
    code_of(models.UnloadModel, msp.UnloadModelRequest(name=name, version=version))


@settings(max_examples=EXAMPLES // 4, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(version=text)
def test_loading_any_version_of_a_served_model_is_clear(server, version):
    models, _, _ = server
    code = code_of(models.LoadModel, msp.LoadModelRequest(name="m", version=version))
    assert code in ({"OK"} if version in ("", "1") else {"INVALID_ARGUMENT", "NOT_FOUND"})


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(repository=text, name=text, ready=st.booleans(),
       parameters=st.dictionaries(text, parameter, max_size=3))
def test_the_v2_repository_extension_answers_everything_clearly(server, repository, name, ready, parameters):
    _, stub, _ = server
    assume(name != "m")
    code_of(stub.RepositoryIndex, v2.RepositoryIndexRequest(repository_name=repository, ready=ready))
    load = v2.RepositoryModelLoadRequest(repository_name=repository, model_name=name)
    unload = v2.RepositoryModelUnloadRequest(repository_name=repository, model_name=name)
    for request in (load, unload):
        for key, value in parameters.items():
            request.parameters[key].CopyFrom(value)
    code_of(stub.RepositoryModelLoad, load)
    code_of(stub.RepositoryModelUnload, unload)


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=text, version=text, label=text)
def test_predictions_by_any_version_and_label_are_clear(server, name, version, label):
    _, _, predictions = server
    request = pb.PredictRequest(model=mpb.ModelSpec(name=name, version=version, version_label=label),
                                mode=mpb.PREDICTION_MODE_VALUES)
    request.inputs[""].dtype = 1
    request.inputs[""].shape.extend(SMALL_INPUT.shape)
    request.inputs[""].content = SMALL_INPUT.tobytes()
    code = code_of(predictions.Predict, request)
    if code == "OK":
        assert name in ("m", "") and version in ("", "1") and not label


def test_the_server_still_answers_after_the_fuzzing(server):
    models, _, _ = server
    (status,) = models.GetModelStatus(msp.GetModelStatusRequest(name="m"), timeout=60).models
    assert [(v.version, v.state) for v in status.versions] == [("1", msp.VERSION_STATE_AVAILABLE)]
