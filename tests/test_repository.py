"""The model repository through a real server: versions and policies, labels, swaps that drain, failed
and hostile versions that change nothing, and per-model health."""

from __future__ import annotations

import asyncio
import json
import shutil
import threading

import grpc
import modelzoo
import pytest
from repository_helpers import (
    NO_RETRIES,
    SMALL_INPUT,
    put,
    serve_repository,
    states,
    version_status,
    wait_for,
)

from lstmserve.client import AsyncClient, LstmserveError
from lstmserve.inference.v2 import grpc_predict_v2_pb2 as v2
from lstmserve.inference.v2 import grpc_predict_v2_pb2_grpc as v2_grpc
from lstmserve.server.errors import ModelNotReady
from lstmserve.server.serving.heads import Mode

pytestmark = pytest.mark.integration

MODEL_HEALTH = "lstmserve.v1.PredictionService/m"


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """Model files answering 1.0, 2.0, 3.0 and 4.0, one architecture."""
    folder = tmp_path_factory.mktemp("constants")
    return {v: modelzoo.constant(folder / f"v{v}.h5", float(v)) for v in range(1, 5)}


@pytest.fixture(scope="module")
def hostile(tmp_path_factory, small):
    folder = tmp_path_factory.mktemp("hostile")
    truncated = folder / "truncated.h5"
    truncated.write_bytes(small[2].read_bytes()[:2000])
    return {"truncated": truncated, "lambda": modelzoo.lambda_layer(folder / "lambda.h5")}


@pytest.fixture
def serve():
    started = []

    def start(*args, **kwargs):
        started.append(serve_repository(*args, **kwargs))
        return started[-1]

    yield start
    for served in started:
        served.stop()


def answer(client, **spec) -> float:
    return float(client.predict(SMALL_INPUT, model="m", **spec)[0, 0])


def test_serves_the_highest_version_and_says_why_the_others_are_not(serve, small, tmp_path):
    put(tmp_path, "m", 1, small[1])
    put(tmp_path, "m", 2, small[2])
    served = serve(tmp_path)
    assert served.failures == []
    with served.client() as client:
        assert answer(client) == 2.0
        assert states(client, "m") == {"2": "AVAILABLE", "1": "UNLOADED"}
        assert version_status(client, "m", "1").reason == "outside the version policy latest:1"
        assert version_status(client, "m", "2").is_default
        assert version_status(client, "m", "2").file == "2/model.h5"
        with pytest.raises(LstmserveError) as caught:
            answer(client, version="1")
        assert caught.value.code == grpc.StatusCode.NOT_FOUND
        assert "model 'm' version '1' is UNLOADED; loaded versions: ['2']" in caught.value.message
        assert client.health(MODEL_HEALTH) == "SERVING"
        with pytest.raises(LstmserveError) as unknown:
            client.health("lstmserve.v1.PredictionService/nope")
        assert unknown.value.code == grpc.StatusCode.NOT_FOUND


def test_version_policy_and_labels_come_from_the_model_config(serve, small, tmp_path):
    for version in (1, 2, 3):
        put(tmp_path, "m", version, small[version])
    config = {"version_policy": "specific:1,3", "labels": {"stable": 1, "canary": 3}}
    (tmp_path / "m" / "config.json").write_text(json.dumps(config))
    served = serve(tmp_path)
    with served.client() as client:
        assert answer(client) == 3.0
        assert answer(client, label="stable") == 1.0
        assert answer(client, label="canary") == 3.0
        assert answer(client, version=1) == 1.0
        assert states(client, "m") == {"3": "AVAILABLE", "2": "UNLOADED", "1": "AVAILABLE"}
        assert list(version_status(client, "m", "1").labels) == ["stable"]
        (status,) = client.model_status("m")
        assert status.version_policy == "specific:1,3"
        with pytest.raises(LstmserveError) as caught:
            answer(client, label="beta")
        assert caught.value.code == grpc.StatusCode.NOT_FOUND
        assert "model 'm' has no label 'beta'; its labels: ['canary', 'stable']" in caught.value.message
        with pytest.raises(LstmserveError) as both:
            answer(client, version=1, label="stable")
        assert both.value.code == grpc.StatusCode.INVALID_ARGUMENT
    with grpc.insecure_channel(served.address) as channel:  # V2: a version that is no number is a label
        stub = v2_grpc.GRPCInferenceServiceStub(channel)
        assert stub.ModelMetadata(v2.ModelMetadataRequest(name="m", version="stable")).versions == ["1"]


def test_a_new_version_is_swapped_in_and_the_old_one_closed_after_its_calls(serve, small, tmp_path):
    put(tmp_path, "m", 1, small[1])
    served = serve(tmp_path)
    closed = []
    served.registry.on_closed = lambda: closed.append(True)  # serve thaws and collects the heap here
    with served.client() as client:
        # A call accepted on version 1 holds it, as a call in flight or a session does.
        lease = served.registry.lease("m")
        put(tmp_path, "m", 2, small[2], age=0)  # just landed: not loaded before it has settled
        served.repository.rescan().result(60)
        assert version_status(client, "m", "2").reason == "waiting for its file to stop changing"
        wait_for(lambda: states(client, "m")["2"] == "AVAILABLE", what="version 2")
        assert answer(client) == 2.0
        assert states(client, "m")["1"] == "UNLOADING" and lease.draining
        assert lease.model.predict({"": SMALL_INPUT}, Mode.VALUES).outputs["out"][0, 0] == 1.0
        assert _batcher_threads("m") == 2
        lease.release()
        wait_for(lambda: states(client, "m")["1"] == "UNLOADED", what="version 1 closed")
        assert _batcher_threads("m") == 1  # version 1's thread has stopped
        assert answer(client) == 2.0
        assert closed == [True]


def test_a_corrupt_or_hostile_version_changes_nothing_until_it_is_fixed(serve, small, hostile, tmp_path):
    put(tmp_path, "m", 1, small[1])
    served = serve(tmp_path)
    with served.client() as client:
        put(tmp_path, "m", 2, hostile["truncated"])
        put(tmp_path, "m", 3, hostile["lambda"])
        served.repository.rescan().result(120)
        wait_for(lambda: states(client, "m") == {"3": "FAILED", "2": "FAILED", "1": "AVAILABLE"},
                 what="both new versions failed")
        assert "m/2/model.h5 is not a readable HDF5 file" in version_status(client, "m", "2").reason
        lambda_reason = version_status(client, "m", "3").reason
        assert "Lambda 'double' is a Lambda, which carries Python" in lambda_reason
        assert str(tmp_path) not in lambda_reason  # paths as the repository sees them
        assert answer(client) == 1.0 and client.health(MODEL_HEALTH) == "SERVING"
        served.repository.rescan().result(60)  # unchanged: not tried again
        assert version_status(client, "m", "3").reason == lambda_reason
        put(tmp_path, "m", 3, small[3])  # fixed
        served.repository.rescan().result(120)
        wait_for(lambda: states(client, "m")["3"] == "AVAILABLE", what="the fixed version")
        assert answer(client) == 3.0
        assert states(client, "m")["2"] == "FAILED"


def test_a_bad_config_is_reported_and_what_is_served_stays(serve, small, tmp_path):
    put(tmp_path, "m", 1, small[1])
    served = serve(tmp_path)
    with served.client() as client:
        (tmp_path / "m" / "config.json").write_text('{"version_polcy": "all"}')
        served.repository.rescan().result(60)
        (status,) = client.model_status("m")
        assert status.problem == ("m/config.json: unknown key 'version_polcy' in the top level; expected "
                                  "['version_policy', 'labels', 'batching', 'custom_objects', 'allow_code']")
        assert answer(client) == 1.0
        (tmp_path / "m" / "config.json").write_text('{"allow_code": true}')
        served.repository.rescan().result(60)
        assert "started with --trust-model-config" in client.model_status("m")[0].problem
        (tmp_path / "m" / "config.json").unlink()
        served.repository.rescan().result(60)
        assert client.model_status("m")[0].problem == ""


def test_model_control_loads_and_unloads_versions_of_the_repository(serve, small, tmp_path):
    put(tmp_path, "m", 1, small[1])
    put(tmp_path, "m", 2, small[2])
    served = serve(tmp_path)
    with served.client() as client:
        status = client.load_model("m", 1)
        assert {v.version: v.state for v in status.versions} == {"2": 2, "1": 2}  # both AVAILABLE
        assert answer(client, version=1) == 1.0 and answer(client) == 2.0
        client.unload_model("m", 2)  # version 1 is already serving: no gap
        assert answer(client) == 1.0
        assert version_status(client, "m", "2").reason == "unloaded by UnloadModel; LoadModel serves it again"
        client.reload_repository()
        assert answer(client) == 1.0  # a rescan does not undo an unload
        client.load_model("m", 2)
        assert answer(client) == 2.0
        client.unload_model("m")
        wait_for(lambda: set(states(client, "m").values()) == {"UNLOADED"}, what="every version closed")
        with pytest.raises(LstmserveError) as caught:
            answer(client)
        assert caught.value.code == grpc.StatusCode.NOT_FOUND
        assert client.health(MODEL_HEALTH) == "NOT_SERVING"
        client.load_model("m")  # back to what the policy selects
        assert answer(client) == 2.0 and client.health(MODEL_HEALTH) == "SERVING"


@pytest.mark.parametrize("call,code,message", [
    (("load", "../etc", ""), "INVALID_ARGUMENT", "holds a path separator or '..'"),
    (("load", "m/1", ""), "INVALID_ARGUMENT", "holds a path separator or '..'"),
    (("unload", "..\\m", ""), "INVALID_ARGUMENT", "holds a path separator or '..'"),
    (("load", "", ""), "INVALID_ARGUMENT", "model name is empty"),
    (("load", "m", "x"), "INVALID_ARGUMENT", "version 'x' is not a version of the repository"),
    (("load", "m", "0"), "INVALID_ARGUMENT", "expected a positive integer"),
    (("load", "x" * 100_000, ""), "INVALID_ARGUMENT", "model name has 100000 characters; at most 128"),
    (("load", "nope", ""), "NOT_FOUND", "no model named 'nope' in the repository; models there: ['m']"),
    (("load", "m", "9"), "NOT_FOUND", "model 'm' has no version 9 in the repository; versions there: [1]"),
    (("unload", "m", "9"), "NOT_FOUND", "model 'm' version 9 is not loaded; loaded versions: [1]"),
    (("status", "nope", ""), "NOT_FOUND", "no model named 'nope'"),
    (("status", "a/../b", ""), "INVALID_ARGUMENT", "holds a path separator or '..'"),
])
def test_bad_control_input_gets_a_clear_status(serve, small, tmp_path, call, code, message):
    put(tmp_path, "m", 1, small[1])
    served = serve(tmp_path)
    action, name, version = call
    with served.client() as client:
        with pytest.raises(LstmserveError) as caught:
            if action == "status":
                client.model_status(name)
            else:
                getattr(client, f"{action}_model")(name, version or None)
        assert caught.value.code.name == code
        assert message in caught.value.message and len(caught.value.message) < 400
        assert answer(client) == 1.0


def test_control_calls_are_refused_when_model_control_is_off(serve, small, tmp_path):
    put(tmp_path, "m", 1, small[1])
    served = serve(tmp_path, control=False)
    with served.client() as client:
        for call in (lambda: client.load_model("m", 1), lambda: client.unload_model("m"),
                     client.reload_repository, lambda: client.load_model("../x")):
            with pytest.raises(LstmserveError) as caught:
                call()
            assert caught.value.code == grpc.StatusCode.PERMISSION_DENIED
            assert "model control is off on this server (--no-model-control)" in caught.value.message
        assert states(client, "m") == {"1": "AVAILABLE"}
    with grpc.insecure_channel(served.address) as channel:
        stub = v2_grpc.GRPCInferenceServiceStub(channel)
        with pytest.raises(grpc.RpcError) as refused:
            stub.RepositoryModelUnload(v2.RepositoryModelUnloadRequest(model_name="m"))
        assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert [m.state for m in stub.RepositoryIndex(v2.RepositoryIndexRequest()).models] == ["READY"]


def test_unloading_the_last_version_while_calls_arrive(serve, small, tmp_path):
    put(tmp_path, "m", 1, small[1])
    served = serve(tmp_path)
    codes: list[str] = []
    stop = threading.Event()

    def call() -> None:
        with served.client() as client:
            while not stop.is_set():
                try:
                    answer(client)
                    codes.append("OK")
                except LstmserveError as error:
                    codes.append(error.code.name)

    callers = [threading.Thread(target=call) for _ in range(8)]
    for thread in callers:
        thread.start()
    try:
        wait_for(lambda: len(codes) > 50, what="calls answered")
        with served.client() as client:
            client.unload_model("m")
        wait_for(lambda: codes.count("NOT_FOUND") > 50, what="calls after the unload")
    finally:
        stop.set()
        for thread in callers:
            thread.join(60)
    assert set(codes) <= {"OK", "NOT_FOUND", "UNAVAILABLE"}, set(codes)


def test_the_v2_repository_extension_is_the_model_service(serve, small, tmp_path):
    put(tmp_path, "m", 1, small[1])
    put(tmp_path, "m", 2, small[2])
    served = serve(tmp_path)
    with grpc.insecure_channel(served.address) as channel:
        stub = v2_grpc.GRPCInferenceServiceStub(channel)
        index = stub.RepositoryIndex(v2.RepositoryIndexRequest(), timeout=60).models
        assert [(m.name, m.version, m.state) for m in index] == [("m", "2", "READY"),
                                                                 ("m", "1", "UNAVAILABLE")]
        assert index[1].reason == "outside the version policy latest:1"
        ready = stub.RepositoryIndex(v2.RepositoryIndexRequest(ready=True), timeout=60).models
        assert [m.version for m in ready] == ["2"]
        stub.RepositoryModelUnload(v2.RepositoryModelUnloadRequest(model_name="m"), timeout=60)
        assert not stub.ModelReady(v2.ModelReadyRequest(name="m"), timeout=60).ready
        stub.RepositoryModelLoad(v2.RepositoryModelLoadRequest(model_name="m"), timeout=300)
        assert stub.ModelReady(v2.ModelReadyRequest(name="m"), timeout=60).ready
        bad = [(stub.RepositoryModelLoad, v2.RepositoryModelLoadRequest(model_name="nope"), "NOT_FOUND"),
               (stub.RepositoryModelLoad, v2.RepositoryModelLoadRequest(model_name="m/../m"),
                "INVALID_ARGUMENT"),
               (stub.RepositoryIndex, v2.RepositoryIndexRequest(repository_name="other"), "NOT_FOUND")]
        with_file = v2.RepositoryModelLoadRequest(model_name="m")
        with_file.parameters["file:1/model.h5"].bytes_param = b"\x89HDF"
        bad.append((stub.RepositoryModelLoad, with_file, "INVALID_ARGUMENT"))
        for method, request, code in bad:
            with pytest.raises(grpc.RpcError) as caught:
                method(request, timeout=60)
            assert caught.value.code().name == code, caught.value.details()
        assert "lstmserve loads only the model files already in its repository" in caught.value.details()


def test_removed_versions_and_models_leave_service(serve, small, tmp_path):
    put(tmp_path, "m", 1, small[1])
    put(tmp_path, "m", 2, small[2])
    (tmp_path / "m" / "config.json").write_text('{"version_policy": "all"}')
    served = serve(tmp_path)
    with served.client() as client:
        assert states(client, "m") == {"2": "AVAILABLE", "1": "AVAILABLE"}
        shutil.rmtree(tmp_path / "m" / "2")
        served.repository.rescan().result(60)
        assert answer(client) == 1.0
        wait_for(lambda: served.repository.rescan().result(60) and "2" not in states(client, "m"),
                 what="version 2 forgotten")
        shutil.rmtree(tmp_path / "m")
        served.repository.rescan().result(60)
        with pytest.raises(LstmserveError) as caught:
            answer(client)
        assert caught.value.code == grpc.StatusCode.NOT_FOUND
        assert client.health(MODEL_HEALTH) == "NOT_SERVING"


def _batcher_threads(name: str) -> int:
    return sum(thread.name == f"batcher-{name}" for thread in threading.enumerate())


def test_the_async_client_has_every_model_service_method(serve, small, tmp_path):
    put(tmp_path, "m", 1, small[1])
    put(tmp_path, "m", 2, small[2])
    (tmp_path / "m" / "config.json").write_text('{"labels": {"stable": 1}}')
    served = serve(tmp_path)

    async def session():
        async with AsyncClient(served.address, timeout=60, options=NO_RETRIES) as client:
            (status,) = await client.model_status("m")
            assert [(v.version, v.labels) for v in status.versions] == [("2", []), ("1", ["stable"])]
            assert (await client.predict(SMALL_INPUT, model="m", label="stable"))[0, 0] == 1.0
            assert (await client.metadata("m", label="stable")).model.version == "1"
            await client.unload_model("m", 2)
            assert (await client.predict(SMALL_INPUT, model="m"))[0, 0] == 1.0
            assert (await client.load_model("m", 2)).versions[0].is_default
            assert [s.name for s in await client.reload_repository()] == ["m"]
            assert (await client.predict(SMALL_INPUT, model="m"))[0, 0] == 2.0

    asyncio.run(session())


def test_a_version_held_past_drain_seconds_is_closed_and_its_holder_told(serve, small, tmp_path):
    put(tmp_path, "m", 1, small[1])
    put(tmp_path, "m", 2, small[2])
    served = serve(tmp_path, drain_seconds=0.5)
    with served.client() as client:
        lease = served.registry.lease("m")  # a session that never ends
        client.load_model("m", 1)
        client.unload_model("m", 2)
        assert lease.draining and lease.model.version == "2"
        wait_for(lambda: states(client, "m")["2"] == "UNLOADED", what="version 2 closed anyway")
        with pytest.raises(ModelNotReady, match="model 'm' is unloaded; retry"):
            lease.model.predict({"": SMALL_INPUT}, Mode.VALUES)
        lease.release()
        lease.release()  # once only
        assert answer(client) == 1.0
