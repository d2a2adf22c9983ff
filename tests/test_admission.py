"""Admission through a real server: undecodable bytes on every method, the concurrent-call and in-flight
byte limits, and draining; health answers throughout."""

import logging
import threading
import time
from dataclasses import replace

import grpc
import numpy as np
import pytest
from engines import GatedEngine
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2

from lstmserve.client import to_tensor
from lstmserve.inference.v2 import grpc_predict_v2_pb2 as v2
from lstmserve.server.engine.base import BatchConfig
from lstmserve.server.engine.batcher import Batcher
from lstmserve.server.transport.admission import CallLimits
from lstmserve.v1 import model_pb2 as mpb
from lstmserve.v1 import model_service_pb2 as mspb
from lstmserve.v1 import prediction_service_pb2 as pb
from lstmserve.v1 import prediction_service_pb2_grpc as pb_grpc
from lstmserve.v1 import session_service_pb2 as sspb
from lstmserve.v1 import stats_pb2 as spb

pytestmark = pytest.mark.integration

# Wire type 7 does not exist: no message of any type parses from these bytes.
UNDECODABLE = b"\xff\xff\xff"
SERVICES = [pb.DESCRIPTOR.services_by_name["PredictionService"],
            spb.DESCRIPTOR.services_by_name["StatsService"],
            mspb.DESCRIPTOR.services_by_name["ModelService"],
            sspb.DESCRIPTOR.services_by_name["SessionService"],
            health_pb2.DESCRIPTOR.services_by_name["Health"],
            v2.DESCRIPTOR.services_by_name["GRPCInferenceService"],
            reflection_pb2.DESCRIPTOR.services_by_name["ServerReflection"]]


def raw_call(channel: grpc.Channel, method, payload: bytes) -> grpc.RpcError | None:
    """`payload` sent as it is to a method of any streaming shape; the error it met, or None."""
    path = f"/{method.containing_service.full_name}/{method.name}"
    try:
        if method.client_streaming:
            list(channel.stream_stream(path)(iter([payload]), timeout=30))
        elif method.server_streaming:
            next(iter(channel.unary_stream(path)(payload, timeout=30)))
        else:
            channel.unary_unary(path)(payload, timeout=30)
    except grpc.RpcError as error:
        return error
    return None


def seed_request(rows: int = 5) -> pb.PredictRequest:
    return pb.PredictRequest(model=mpb.ModelSpec(name="seed"), mode=mpb.PREDICTION_MODE_VALUES,
                             inputs={"": to_tensor(np.zeros((rows, 1, 1), np.float32))})


def test_undecodable_bytes_get_invalid_argument_on_every_method_and_one_log_line(demo_server, caplog):
    caplog.set_level(logging.INFO)
    wrong = []
    with grpc.insecure_channel(f"127.0.0.1:{demo_server.port}") as channel:
        methods = [method for service in SERVICES for method in service.methods]
        for method in methods:
            error = raw_call(channel, method, UNDECODABLE)
            # gRPC itself decodes a client stream's messages, so no size is known there.
            size = "" if method.client_streaming else " (3 bytes)"
            expected = f"request is not a valid {method.input_type.full_name}{size}"
            if error is None or error.code() != grpc.StatusCode.INVALID_ARGUMENT or \
                    error.details() != expected:
                wrong.append((method.full_name, error and error.code(), error and error.details()))
        assert not wrong
        stub = pb_grpc.PredictionServiceStub(channel)
        assert list(stub.Predict(seed_request(), timeout=30).outputs["dense"].shape) == [5, 1]
    lines = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(methods) == len(set(methods)) > 17 and len(lines) == 1, [r.getMessage() for r in lines]
    assert "undecodable" in lines[0].getMessage() and lines[0].exc_info is None


@pytest.fixture
def gated(start_server, loaded_seed):
    """Start a server whose seed model holds its first call until `gate.release` is set."""
    made = []

    def start(limits: CallLimits):
        gate = GatedEngine(loaded_seed.engine.engine)
        model = replace(loaded_seed, engine=Batcher(gate, BatchConfig(), "seed"))
        made.append((gate, model))
        return start_server(model, limits=limits), gate, model

    yield start
    for gate, model in made:
        gate.release.set()
        model.close()


def wait_for(condition, what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.005)


def test_calls_beyond_the_limit_get_resource_exhausted_with_a_retry_hint_and_health_answers(gated):
    server, gate, _ = gated(CallLimits(max_concurrent_calls=2))
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        stub = pb_grpc.PredictionServiceStub(channel)
        held = [stub.Predict.future(seed_request(), timeout=30) for _ in range(2)]
        wait_for(lambda: server.admission.calls == 2, "two calls admitted")
        with pytest.raises(grpc.RpcError) as caught:
            stub.Predict(seed_request(), timeout=30)
        assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "server is answering 2 calls, its limit (--max-concurrent-calls 2); retry in about 100 ms" \
            in caught.value.details()
        assert ("grpc-retry-pushback-ms", "100") in caught.value.trailing_metadata()
        health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=30)
        assert health.status == health_pb2.HealthCheckResponse.SERVING
        gate.release.set()
        assert all(list(call.result().outputs["dense"].shape) == [5, 1] for call in held)
        wait_for(lambda: server.admission.calls == 0, "the calls to finish")
        assert stub.Predict(seed_request(), timeout=30).outputs["dense"].shape


def test_request_bytes_in_flight_are_bounded(gated):
    small, big = seed_request(5), seed_request(200)
    budget = small.ByteSize() + big.ByteSize() - 1
    server, gate, _ = gated(CallLimits(max_inflight_bytes=budget, max_message_bytes=budget))
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        stub = pb_grpc.PredictionServiceStub(channel)
        held = stub.Predict.future(small, timeout=30)
        wait_for(lambda: server.admission.calls == 1, "the first call admitted")
        with pytest.raises(grpc.RpcError) as caught:
            stub.Predict(big, timeout=30)
        assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert (f"server holds {small.ByteSize()} bytes of requests in flight and this one has "
                f"{big.ByteSize()} (--max-inflight-bytes {budget})") in caught.value.details()
        gate.release.set()
        held.result()
        wait_for(lambda: server.admission.bytes == 0, "the bytes to be given back")
        assert list(stub.Predict(big, timeout=30).outputs["dense"].shape) == [200, 1]


def test_limits_that_could_never_admit_a_largest_message_are_refused():
    with pytest.raises(ValueError, match="must be at least --max-message-bytes"):
        CallLimits(max_inflight_bytes=1024, max_message_bytes=2048)
    with pytest.raises(ValueError, match="1 or more"):
        CallLimits(max_concurrent_calls=0)


def test_draining_answers_admitted_calls_and_refuses_new_ones(gated):
    server, gate, _ = gated(CallLimits())
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        stub = pb_grpc.PredictionServiceStub(channel)
        held = [stub.Predict.future(seed_request(), timeout=30) for _ in range(3)]
        wait_for(lambda: server.admission.calls == 3, "three calls admitted")
        drained = []
        drain = threading.Thread(target=lambda: drained.append(server.drain(grace=20)))
        drain.start()
        wait_for(lambda: server.admission.draining, "the drain to start")
        with pytest.raises(grpc.RpcError) as caught:
            stub.Predict(seed_request(), timeout=30)
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "server is shutting down" in caught.value.details()
        health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=30)
        assert health.status == health_pb2.HealthCheckResponse.NOT_SERVING
        ready = channel.unary_unary("/inference.GRPCInferenceService/ServerReady",
                                    request_serializer=v2.ServerReadyRequest.SerializeToString,
                                    response_deserializer=v2.ServerReadyResponse.FromString)
        assert ready(v2.ServerReadyRequest(), timeout=30).ready is False
        gate.release.set()
        assert all(call.result().outputs["dense"].shape for call in held)
        drain.join(30)
    assert drained == [True]
