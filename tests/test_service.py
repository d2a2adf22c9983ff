"""Health, reflection, metadata and the model list, over a real server."""

import threading

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from lstmserve.client import Client
from lstmserve.server.errors import ModelLoadError, ModelNotFound, ModelNotReady
from lstmserve.server.serving.registry import ModelRegistry
from lstmserve.server.serving.repository import Repository, RepositoryOptions
from lstmserve.server.transport.server import create_server
from lstmserve.v1 import model_pb2 as mpb

pytestmark = pytest.mark.integration


def test_health_is_not_serving_until_models_are_loaded_and_warm(loaded_seed, seed_h5):
    release = threading.Event()

    def slow_loader(path, name, version, **options):
        release.wait(30)
        return loaded_seed  # session-wide: this server's registry is never closed

    registry = ModelRegistry()
    repository = Repository(registry, RepositoryOptions(files={"seed": seed_h5}), loader=slow_loader)
    running = create_server(registry, "127.0.0.1:0")
    try:
        repository.start().add_done_callback(lambda _: running.set_serving(True))
        with Client(f"127.0.0.1:{running.port}", timeout=10) as client:
            assert client.health() == "NOT_SERVING"
            assert client.health("lstmserve.v1.PredictionService") == "NOT_SERVING"
            assert client.health("lstmserve.v1.PredictionService/seed") == "NOT_SERVING"
            with pytest.raises(Exception) as caught:
                client.predict(np.zeros((1, 1, 1), np.float32))
            assert caught.value.code.name == "UNAVAILABLE"
            assert "model 'seed' is still loading" in caught.value.message
            release.set()
            for _ in range(100):
                if client.health() == "SERVING":
                    break
                threading.Event().wait(0.05)
            assert client.health() == "SERVING"
            assert client.health("lstmserve.v1.PredictionService/seed") == "SERVING"
            assert client.predict(np.zeros((1, 1, 1), np.float32)).shape == (1, 1)
    finally:
        release.set()
        repository.stop()
        running.stop(None)


def test_a_model_not_yet_reached_at_start_is_still_loading_not_unknown(loaded_seed, seed_h5):
    """Models load one after another: while the first loads, the next is not unknown."""
    release = threading.Event()

    def loader(path, name, version, **options):
        if name == "a":  # loads first (names in order), slowly, and fails
            release.wait(30)
            raise ModelLoadError("not a model")
        return loaded_seed  # session-wide: this server's registry is never closed

    registry = ModelRegistry()
    repository = Repository(registry, RepositoryOptions(files={"a": seed_h5, "seed": seed_h5}), loader=loader)
    try:
        started = repository.start()
        with pytest.raises(ModelNotReady, match="model 'seed' is still loading"):
            registry.lease("seed")
        with pytest.raises(ModelNotFound, match="no model named 'c'"):
            registry.lease("c")
        release.set()
        assert len(started.result(60)) == 1  # 'a' failed; 'seed' loaded
        with registry.lease("seed") as model:
            assert model is loaded_seed
        with pytest.raises(ModelNotFound, match="no model named 'c'"):
            registry.lease("c")
    finally:
        release.set()
        repository.stop()


def test_health_of_an_unknown_service_is_not_found(client):
    with pytest.raises(Exception) as caught:
        client.health("no.such.Service")
    assert caught.value.code.name == "NOT_FOUND"


def test_standard_health_stub_agrees(demo_server):
    with grpc.insecure_channel(f"127.0.0.1:{demo_server.port}") as channel:
        reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
    assert reply.status == health_pb2.HealthCheckResponse.SERVING


def test_reflection_lists_the_services(demo_server):
    with grpc.insecure_channel(f"127.0.0.1:{demo_server.port}") as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        request = reflection_pb2.ServerReflectionRequest(list_services="")
        reply = next(stub.ServerReflectionInfo(iter([request])))
    names = {service.name for service in reply.list_services_response.service}
    assert {"lstmserve.v1.PredictionService", "grpc.health.v1.Health"} <= names


def test_metadata_describes_signature_modes_labels_and_provenance(client, classifier_h5):
    import hashlib
    meta = client.metadata("classifier")
    assert meta.model.name == "classifier" and meta.model.version == "1"
    assert meta.task == mpb.TASK_KIND_CLASSIFICATION
    assert [list(i.shape) for i in meta.inputs] == [[-1, 20, 1]]
    (output,) = meta.outputs
    assert output.activation == "softmax"
    assert list(output.class_labels) == ["falling", "flat", "rising"]
    assert set(output.supported_modes) == {mpb.PREDICTION_MODE_VALUES, mpb.PREDICTION_MODE_CLASSES,
                                           mpb.PREDICTION_MODE_PROBABILITIES}
    assert meta.keras_version == "3.15.1"
    assert meta.sha256 == hashlib.sha256(classifier_h5.read_bytes()).hexdigest()
    assert not meta.HasField("preparation")
    assert '"demo": "classifier"' in meta.training_json


def test_metadata_of_a_regression_model(client):
    meta = client.metadata("seed")
    assert meta.task == mpb.TASK_KIND_REGRESSION
    assert list(meta.outputs[0].supported_modes) == [mpb.PREDICTION_MODE_VALUES]


def test_list_models(client):
    assert [m.model.name for m in client.models()] == ["classifier", "seed"]


def test_single_model_server_needs_no_model_name(start_server, loaded_seed):
    server = start_server(loaded_seed)
    with Client(f"127.0.0.1:{server.port}") as client:
        assert client.predict(np.zeros((2, 1, 1), np.float32)).shape == (2, 1)
        assert client.metadata().model.name == "seed"


def test_latest_version_is_served_unless_one_is_named(start_server, loaded_seed, loaded_classifier):
    from dataclasses import replace
    v2 = replace(loaded_classifier, name="seed", version="2")
    v10 = replace(loaded_seed, version="10")
    server = start_server(loaded_seed, v2, v10)
    with Client(f"127.0.0.1:{server.port}") as client:
        assert client.metadata("seed").model.version == "10"
        assert client.metadata("seed", version="2").model.version == "2"


def test_async_client_twin(demo_server):
    import asyncio

    from lstmserve.client import AsyncClient

    async def main():
        async with AsyncClient(f"127.0.0.1:{demo_server.port}", model="seed") as client:
            values = await client.predict(np.zeros((3, 1, 1), np.float32))
            health = await client.health()
            with pytest.raises(Exception) as caught:
                await client.predict_classes(np.zeros((3, 1, 1), np.float32))
            return values, health, caught.value

    values, health, error = asyncio.run(main())
    assert values.shape == (3, 1) and health == "SERVING"
    assert error.code.name == "FAILED_PRECONDITION"
