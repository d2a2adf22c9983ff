"""Hypothesis against the session and forecast handlers of a real server: hostile bytes get a clear status
(never INTERNAL or UNKNOWN), and a session fuzzed in between answers exactly as one left alone."""

from __future__ import annotations

import grpc
import modelzoo
import numpy as np
import pytest
import session_models
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lstmserve.client import Client
from lstmserve.server.engine.base import EngineConfig
from lstmserve.server.loading.load import load_model
from lstmserve.server.serving.sessions import SessionLimits
from lstmserve.v1 import model_pb2 as mpb
from lstmserve.v1 import session_service_pb2 as spb
from lstmserve.v1 import session_service_pb2_grpc as spb_grpc
from lstmserve.v1 import tensor_pb2 as tpb

pytestmark = [pytest.mark.integration, pytest.mark.slow]

CLEAR = {grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND, grpc.StatusCode.FAILED_PRECONDITION,
         grpc.StatusCode.RESOURCE_EXHAUSTED}
FUZZ = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
ENGINE = EngineConfig(buckets=(1, 4), step_buckets=(1, 64))


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """A server with a state model and a window forecaster; the sessions the tests fuzz, opened once."""
    from lstmserve.server.serving.registry import ModelRegistry
    from lstmserve.server.transport.server import create_server
    folder = tmp_path_factory.mktemp("fuzz")
    models = [load_model(modelzoo.stacked_free(folder / "stacked.h5"), "stacked", engine=ENGINE),
              load_model(session_models.forecaster(folder / "window.h5"), "window", engine=ENGINE)]
    registry = ModelRegistry()
    for model in models:
        registry.add(model)
    running = create_server(registry, sessions=SessionLimits(max_sessions=50, max_horizon=40))
    running.set_serving(True)
    channel = grpc.insecure_channel(f"127.0.0.1:{running.port}")
    client = Client(f"127.0.0.1:{running.port}", timeout=30)
    sessions = {name: client.session(name, stream=False) for name in ("stacked", "window")}
    yield spb_grpc.SessionServiceStub(channel), sessions, client
    client.close()
    channel.close()
    running.stop(None)
    for model in models:
        model.close()


def tensors():
    return st.builds(
        tpb.Tensor, dtype=st.integers(-1, 6),
        shape=st.lists(st.integers(-2, 5), max_size=4),
        content=st.one_of(st.binary(max_size=64),
                          st.lists(st.floats(allow_nan=True, width=32), max_size=12).map(
                              lambda v: np.asarray(v, np.float32).tobytes())))


def step_requests(session_id):
    names = st.sampled_from(["", "input_layer", "x", "\x00"])
    return st.builds(spb.StepRequest, session_id=session_id,
                     inputs=st.dictionaries(names, tensors(), max_size=2), mode=st.integers(-1, 5))


def _status(call, request) -> grpc.StatusCode:
    try:
        call(request, timeout=30)
    except grpc.RpcError as error:
        assert error.code() in CLEAR, (error.code(), error.details())
        assert error.details()
        return error.code()
    return grpc.StatusCode.OK


@FUZZ
@given(data=st.data())
def test_fuzzed_steps_get_a_clear_status_and_leave_the_session_as_it_was(served, data):
    stub, sessions, client = served
    name = data.draw(st.sampled_from(sorted(sessions)))
    session = sessions[name]
    session_id = data.draw(st.one_of(st.just(session.id), st.text(max_size=80)))
    x = np.random.default_rng(1).normal(size=(2, 3 if name == "stacked" else 1)).astype(np.float32)
    before = session.step(x).outputs
    session.reset()
    code = _status(stub.Step, data.draw(step_requests(st.just(session_id))))
    if code == grpc.StatusCode.OK:  # a valid step was drawn: it really stepped, so start again
        session.reset()
    after = session.step(x).outputs
    session.reset()
    if before is not None:
        np.testing.assert_array_equal(before, after)


@FUZZ
@given(data=st.data())
def test_fuzzed_session_calls_and_forecasts_get_a_clear_status(served, data):
    stub, sessions, _ = served
    spec = mpb.ModelSpec(name=data.draw(st.sampled_from(["stacked", "window", "", "nope", "\x7f"])),
                         version=data.draw(st.sampled_from(["", "1", "2", "x"])))
    which = data.draw(st.sampled_from(["create", "reset", "end", "forecast"]))
    if which == "create":
        request = spb.CreateSessionRequest(model=spec, prepared=data.draw(st.booleans()))
        try:
            created = stub.CreateSession(request, timeout=30)
        except grpc.RpcError as error:
            assert error.code() in CLEAR and error.details(), (error.code(), error.details())
        else:
            stub.EndSession(spb.SessionRequest(session_id=created.session_id))
    elif which in ("reset", "end"):
        method = stub.ResetSession if which == "reset" else stub.EndSession
        _status(method, spb.SessionRequest(session_id=data.draw(st.text(max_size=100))))
    else:
        request = spb.ForecastRequest(model=spec, history=data.draw(tensors()),
                                      horizon=data.draw(st.integers(-5, 100)))
        _status(stub.Forecast, request)


@FUZZ
@given(data=st.data())
def test_fuzzed_streams_answer_in_band_or_end_with_a_clear_status(served, data):
    stub, _, _ = served
    messages = data.draw(st.lists(st.one_of(
        st.builds(spb.StreamRequest, open=st.builds(spb.CreateSessionRequest,
                                                    model=st.just(mpb.ModelSpec(name="stacked")))),
        st.builds(spb.StreamRequest, step=step_requests(st.just(""))),
        st.builds(spb.StreamRequest, reset=st.just(spb.ResetRequest())),
        st.just(spb.StreamRequest())), max_size=6))
    try:
        for answer in stub.StreamSession(iter(messages), timeout=30):
            if answer.WhichOneof("message") == "error":
                assert grpc.StatusCode(_code(answer.error.code)) in CLEAR, answer.error
    except grpc.RpcError as error:
        assert error.code() in CLEAR, (error.code(), error.details())


def _code(number: int) -> tuple:
    return next(code.value for code in grpc.StatusCode if code.value[0] == number)


def test_sessions_fuzzed_above_answer_as_fresh_ones(served):
    """Runs after the fuzzing: the fuzzed sessions still answer exactly as new ones."""
    _, sessions, client = served
    x = np.random.default_rng(0).normal(size=(6, 3)).astype(np.float32)
    sessions["stacked"].reset()
    fuzzed = sessions["stacked"].step(x).outputs
    with client.session("stacked") as fresh:
        np.testing.assert_array_equal(fuzzed, fresh.step(x).outputs)
