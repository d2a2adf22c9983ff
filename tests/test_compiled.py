"""Compiled inference equals Keras, never retraces under load, and leaves the RPC threads free."""

import threading
from concurrent.futures import ThreadPoolExecutor

import grpc
import keras
import modelzoo
import numpy as np
import pytest
from conftest import load
from engines import WrappedEngine
from grpc_health.v1 import health_pb2, health_pb2_grpc

from lstmserve.client.tensors import to_tensor
from lstmserve.server.engine.base import EngineConfig
from lstmserve.server.loading.load import load_model
from lstmserve.v1 import model_pb2 as mpb
from lstmserve.v1 import prediction_service_pb2 as pb
from lstmserve.v1 import prediction_service_pb2_grpc as pb_grpc


def _save_stack(units: int, folder):
    """Two stacked LSTM(units) over 20 steps of 4 features, then Dense(2), saved as stacked.h5."""
    keras.utils.set_random_seed(8)
    model = keras.Sequential([keras.Input((20, 4)), keras.layers.LSTM(units, return_sequences=True),
                              keras.layers.LSTM(units), keras.layers.Dense(2)])
    return modelzoo.save(model, folder / "stacked.h5")


@pytest.fixture(scope="module")
def stacked(tmp_path_factory):
    """A small version of the benchmark's heavy model."""
    path = _save_stack(16, tmp_path_factory.mktemp("compiled"))
    return path, load_model(path, "stacked", engine=EngineConfig(twin=False))  # the compiled path


@pytest.mark.unit
def test_every_bucket_size_equals_keras_within_float32_tolerance(stacked):
    path, model = stacked
    runner = model.engine.engine
    assert runner.jit_compile  # the XLA path is the one under test
    rng = np.random.default_rng(1)
    for rows in (1, 2, 3, 7, 8, 31, 64, 65, 130):  # exact buckets, padded ones, chunked ones
        x = rng.normal(size=(rows, 20, 4)).astype(np.float32)
        (served,) = runner.predict([x])
        assert served.shape == (rows, 2)
        np.testing.assert_allclose(served, modelzoo.reference(path, x)[0], rtol=1e-4, atol=1e-5)


@pytest.mark.unit
def test_no_retracing_under_concurrent_load(stacked):
    _, model = stacked
    runner = model.engine.engine
    traced = runner.tracing_count
    assert traced == 1  # fixed timesteps: one trace, batch size open, compiled by XLA per bucket
    rng = np.random.default_rng(2)
    sizes = rng.integers(1, 100, size=200)

    def call(rows: int) -> tuple:
        x = rng.normal(size=(rows, 20, 4)).astype(np.float32)
        return model.engine.predict([x])[0].shape

    with ThreadPoolExecutor(16) as pool:
        shapes = list(pool.map(call, sizes))
    assert shapes == [(rows, 2) for rows in sizes]
    assert runner.tracing_count == traced


@pytest.fixture(scope="module")
def stacked_twin(tmp_path_factory):
    """A narrower stack, served as by default: small enough for the compiled twin on the event loop."""
    path = _save_stack(6, tmp_path_factory.mktemp("twin"))
    model = load(path, "stacked")
    assert type(model.engine.engine).__name__ == "TwinEngine"
    return path, model


class HeldEngine(WrappedEngine):
    """The compiled engine, every call held until the test lets go: predictions stay in flight for as long
    as the test needs, with no clock involved."""

    def __init__(self, engine) -> None:
        super().__init__(engine)
        self.entered, self.release = threading.Event(), threading.Event()

    def predict(self, arrays):
        self.entered.set()
        assert self.release.wait(60), "test never released the engine"
        return self.engine.predict(arrays)


@pytest.mark.integration
def test_health_and_metadata_answer_while_every_prediction_waits_on_the_model(start_server, stacked):
    """Calls run on the event loop, models on their own thread: with the model busy and 32 predictions
    queued behind it, health and metadata still answer, and every prediction is answered afterwards."""
    from dataclasses import replace

    from lstmserve.server.engine.batcher import Batcher
    _, model = stacked
    held = HeldEngine(model.engine.engine)
    server = start_server(replace(model, engine=Batcher(held, name="stacked")), workers=16)
    target = f"127.0.0.1:{server.port}"
    request = pb.PredictRequest(
        model=mpb.ModelSpec(name="stacked"), mode=mpb.PREDICTION_MODE_VALUES,
        inputs={"": to_tensor(np.ones((8, 20, 4), np.float32))})
    with grpc.insecure_channel(target) as channel, grpc.insecure_channel(target) as probe:
        futures = [pb_grpc.PredictionServiceStub(channel).Predict.future(request, timeout=120)
                   for _ in range(32)]
        assert held.entered.wait(60)
        check = health_pb2_grpc.HealthStub(probe).Check
        metadata = pb_grpc.PredictionServiceStub(probe).GetModelMetadata
        for _ in range(5):
            reply = check(health_pb2.HealthCheckRequest(), timeout=30)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
            assert metadata(pb.GetModelMetadataRequest(model=mpb.ModelSpec(name="stacked")),
                            timeout=30).metadata.model.name == "stacked"
        assert not any(future.done() for future in futures)  # all still waiting on the held model
        held.release.set()
        assert [future.result().outputs[next(iter(future.result().outputs))].shape[0] for future in futures] \
            == [8] * 32
