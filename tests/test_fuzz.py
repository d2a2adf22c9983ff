"""Property-based fuzzing of every handler through a real `lstmserve serve` process: whatever a caller
sends (well-formed, nearly right, or random bytes), the answer is OK or a clear refusal, never INTERNAL,
UNKNOWN or CANCELLED, and afterwards the server answers a normal call with its memory where it was.

Hypothesis runs derandomized with no example database, so every run (and CI) draws the same cases: a
failure here is a bug to fix, never a flake. The fast suite draws 1,000 Predict cases and lighter counts
for the other handlers; the slow one 10,000 and 2,000."""

from __future__ import annotations

import fuzzing
import grpc
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from serving import rss_mb, serve

from lstmserve.client import to_tensor
from lstmserve.v1 import model_pb2 as mpb
from lstmserve.v1 import prediction_service_pb2 as pb

pytestmark = pytest.mark.integration

ALLOWED = {"OK", "INVALID_ARGUMENT", "NOT_FOUND", "FAILED_PRECONDITION", "RESOURCE_EXHAUSTED"}
# The server's resident memory may grow this much over a fuzz run (allocator caches, counters).
RSS_GROWTH_MB = 150
PREDICT = "/lstmserve.v1.PredictionService/Predict"


def fuzz_settings(examples: int) -> settings:
    return settings(max_examples=examples, derandomize=True, database=None, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


class Served:
    """The demo models in `lstmserve serve`, one channel to it, and its memory after a warm-up."""

    def __init__(self, process, address: str) -> None:
        self.process, self.address = process, address
        options = [("grpc.max_send_message_length", 64 << 20), ("grpc.max_receive_message_length", 64 << 20)]
        self.channel = grpc.insecure_channel(address, options=options)
        for _ in range(20):
            self.normal_call()
        self.rss_after_warm_up = rss_mb(process.pid)

    def call(self, method: str, payload: bytes) -> str:
        """The status name of one call whose request is these bytes."""
        try:
            self.channel.unary_unary(method)(payload, timeout=30)
        except grpc.RpcError as error:
            return error.code().name
        return "OK"

    def check(self, method: str, payload: bytes) -> None:
        code = self.call(method, payload)
        assert code in ALLOWED, f"{method} answered {code} to {payload[:200]!r}"

    def normal_call(self) -> None:
        request = pb.PredictRequest(model=mpb.ModelSpec(name="seed"), mode=mpb.PREDICTION_MODE_VALUES,
                                    inputs={"": to_tensor(np.zeros((5, 1, 1), np.float32))})
        assert self.call(PREDICT, request.SerializeToString()) == "OK"

    def still_well(self) -> None:
        self.normal_call()
        grown = rss_mb(self.process.pid) - self.rss_after_warm_up
        assert grown < RSS_GROWTH_MB, f"server memory grew {grown:.0f} MiB over the fuzz run"


@pytest.fixture(scope="module")
def served(seed_h5, classifier_h5, tmp_path_factory):
    log = tmp_path_factory.mktemp("fuzz") / "serve.log"
    process, address = serve({"seed": seed_h5, "classifier": classifier_h5}, log)
    server = Served(process, address)
    yield server
    server.channel.close()
    process.terminate()
    assert process.wait(60) == 0, log.read_text()[-3000:]
    assert "Traceback" not in log.read_text() and "internal error" not in log.read_text()


def fuzz(served: Served, method: str, requests: st.SearchStrategy, examples: int) -> None:
    """`examples` requests drawn from `requests` (messages, or raw bytes), each answered as allowed."""
    payloads = requests.map(lambda r: r if isinstance(r, bytes) else r.SerializeToString())

    @fuzz_settings(examples)
    @given(payload=payloads)
    def answered_clearly(payload: bytes) -> None:
        served.check(method, payload)

    answered_clearly()
    served.still_well()


def with_raw_bytes(requests: st.SearchStrategy) -> st.SearchStrategy:
    return st.one_of(requests, st.binary(max_size=512))


HANDLERS = {
    "Predict": (PREDICT, with_raw_bytes(fuzzing.predict_requests())),
    "GetModelMetadata": ("/lstmserve.v1.PredictionService/GetModelMetadata",
                         with_raw_bytes(fuzzing.metadata_requests())),
    "ListModels": ("/lstmserve.v1.PredictionService/ListModels", st.binary(max_size=64)),
    "GetModelStats": ("/lstmserve.v1.StatsService/GetModelStats", with_raw_bytes(fuzzing.stats_requests())),
    "ModelInfer": ("/inference.GRPCInferenceService/ModelInfer", with_raw_bytes(fuzzing.infer_requests())),
    "ModelMetadata": ("/inference.GRPCInferenceService/ModelMetadata",
                      with_raw_bytes(fuzzing.v2_metadata_requests())),
}
FAST = {"Predict": 1000, "GetModelMetadata": 200, "ListModels": 50, "GetModelStats": 200, "ModelInfer": 500,
        "ModelMetadata": 200}


@pytest.mark.parametrize("handler", HANDLERS)
def test_every_request_gets_a_clear_answer(served, handler):
    method, requests = HANDLERS[handler]
    fuzz(served, method, requests, FAST[handler])


@pytest.mark.slow
@pytest.mark.parametrize("handler", HANDLERS)
def test_every_request_gets_a_clear_answer_at_length(served, handler):
    method, requests = HANDLERS[handler]
    fuzz(served, method, requests, 10_000 if handler == "Predict" else 2_000)
