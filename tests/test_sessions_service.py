"""SessionService through a real server on port 0: sessions by id and by stream, limits, errors, Forecast."""

from __future__ import annotations

import asyncio
import time

import grpc
import modelzoo
import numpy as np
import pytest
import session_models

from lstmserve.client import AsyncClient, Client, LstmserveError
from lstmserve.server.engine.base import EngineConfig
from lstmserve.server.loading.load import load_model
from lstmserve.server.serving.sessions import SessionLimits
from lstmserve.v1 import model_pb2 as mpb
from lstmserve.v1 import session_service_pb2 as spb
from lstmserve.v1 import session_service_pb2_grpc as spb_grpc

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ENGINE = EngineConfig(buckets=(1, 4), step_buckets=(1, 64))
TOLERANCE = 1e-5


@pytest.fixture(scope="module")
def zoo(tmp_path_factory):
    """Every model the tests below serve, loaded once (each compiles its functions at load)."""
    folder = tmp_path_factory.mktemp("session-models")
    paths = {
        "stacked": modelzoo.stacked_free(folder / "stacked.h5"),
        "pooled": modelzoo.pooled(folder / "pooled.h5"),
        "window": session_models.forecaster(folder / "window.h5", timesteps=6, lag=3),
        "direct": session_models.forecaster(folder / "direct.h5", timesteps=6, horizon=3, lag=3, seed=22),
        "free": session_models.forecaster(folder / "free.h5", timesteps=None, lag=2, seed=23),
        "two_features": session_models.forecaster(folder / "two.h5", timesteps=5, horizon=2, features=2,
                                                  lag=0, seed=24),
        "undeclared": session_models.forecaster(folder / "undeclared.h5", timesteps=6, declare=False),
    }
    models = {name: load_model(path, name, engine=ENGINE) for name, path in paths.items()}
    yield models
    for model in models.values():
        model.close()


@pytest.fixture
def server(start_server, zoo):
    limits = SessionLimits(idle_seconds=30, max_sessions=4, max_horizon=50, max_steps=40)
    return start_server(*zoo.values(), sessions=limits)


@pytest.fixture
def client(server):
    with Client(f"127.0.0.1:{server.port}", timeout=30) as c:
        yield c


def _x(steps: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(steps, 3)).astype(np.float32)


def test_metadata_tells_the_session_kind_state_bytes_and_forecast(client):
    stacked = client.metadata("stacked")
    assert stacked.sessions.kind == mpb.SESSION_KIND_STATE
    assert stacked.sessions.state_bytes == 4 * (2 * 6 + 2 * 5)
    assert stacked.sessions.max_sessions == 4 and stacked.sessions.idle_timeout_seconds == 30
    assert "does not declare" in stacked.forecast.reason and not stacked.forecast.supported
    window = client.metadata("window")
    assert window.sessions.kind == mpb.SESSION_KIND_WINDOW
    assert window.sessions.steps_before_first_answer == 8 and window.sessions.state_bytes == 32
    assert window.forecast.supported and window.forecast.feature == "y" and window.forecast.model_horizon == 1
    pooled = client.metadata("pooled")
    assert pooled.sessions.kind == mpb.SESSION_KIND_NONE
    assert "GlobalAveragePooling1D 'pool'" in pooled.sessions.reason


@pytest.mark.parametrize("stream", [True, False])
def test_a_session_answers_as_predict_on_the_whole_sequence(client, stream):
    x = _x(12)
    with client.session("stacked", stream=stream) as session:
        assert session.info.kind == mpb.SESSION_KIND_STATE
        assert list(session.info.step_inputs[0].shape) == [-1, 3]
        first = session.step(x[:5])
        assert first.answered == 5 and first.outputs.shape == (5, 2)
        one = session.step(x[5])  # one step may come without its steps axis
        rest = session.step(x[6:])
        assert rest.position == 12
        np.testing.assert_allclose(rest.last, client.predict(x[None], model="stacked")[0],
                                   rtol=TOLERANCE, atol=TOLERANCE)
        np.testing.assert_allclose(one.last, client.predict(x[None, :6], model="stacked")[0],
                                   rtol=TOLERANCE, atol=TOLERANCE)
        session.reset()
        again = session.step(x)
        np.testing.assert_allclose(again.outputs, np.concatenate([first.outputs, one.outputs, rest.outputs]),
                                   rtol=TOLERANCE, atol=TOLERANCE)


def test_a_stream_helper_pipelines_an_iterable(client):
    x = _x(40, seed=1)
    answers = list(client.stream(iter(x), model="stacked"))
    assert [a.position for a in answers] == list(range(1, 41))
    with client.session("stacked") as session:
        whole = session.step(x).outputs
    np.testing.assert_allclose(np.stack([a.last for a in answers]), whole, rtol=TOLERANCE, atol=TOLERANCE)


def test_a_window_session_fills_then_answers_predict_on_each_window(client):
    raw = session_models.series()[100:130, 0]
    with client.session("window", stream=False) as session:
        early = session.step(raw[:5, None])
        assert (early.answered, early.missing, early.outputs, early.last) == (0, 4, None, None)
        answers = session.step(raw[5:, None])
        assert answers.answered == 22 and answers.missing == 0
    windows = np.stack([raw[end - 9:end] for end in range(9, 31)])[..., None]
    np.testing.assert_array_equal(answers.outputs, client.predict(windows, model="window"))


def test_errors_say_what_is_wrong_and_leave_the_session_as_it_was(client, server):
    x = _x(6, seed=2)
    stub = spb_grpc.SessionServiceStub(grpc.insecure_channel(f"127.0.0.1:{server.port}"))
    with client.session("stacked", stream=False) as session:
        session.step(x[:3])
        for wrong, words in ((x[:2, :2], "has shape [2, 2]; model 'stacked' takes steps as float32 "
                              "[steps, features=3]"), (x[:2].astype(np.int64), "has dtype int64"),
                             (np.full((1, 3), np.inf, np.float32), "NaN or infinity")):
            with pytest.raises(LstmserveError) as caught:
                session.step(wrong)
            assert caught.value.code == grpc.StatusCode.INVALID_ARGUMENT and words in caught.value.message
        with pytest.raises(LstmserveError) as caught:
            session.step(x[:1], mode="classes")
        assert caught.value.code == grpc.StatusCode.FAILED_PRECONDITION
        with pytest.raises(grpc.RpcError) as unspecified:
            stub.Step(spb.StepRequest(session_id=session.id, inputs={"": _tensor(x[:1])}))
        assert unspecified.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert session.step(x[3:]).position == 6
        assert session.step(x[5]).position == 7
    with client.session("stacked") as clean:
        np.testing.assert_allclose(clean.step(np.concatenate([x, x[5:]])).last,
                                   client.predict(np.concatenate([x, x[5:]])[None], model="stacked")[0],
                                   rtol=TOLERANCE, atol=TOLERANCE)


def _tensor(array):
    from lstmserve.client import to_tensor
    return to_tensor(array)


def test_messages_and_forecasts_are_bounded(client):
    with client.session("stacked") as session:
        with pytest.raises(LstmserveError) as caught:
            session.step(_x(41))
        assert caught.value.code == grpc.StatusCode.INVALID_ARGUMENT
        assert "41 steps; at most 40 per message (--max-steps-per-message)" in caught.value.message
        assert session.step(_x(40)).position == 40
    rows = np.stack([session_models.series()[:20, :1]] * 5)
    with pytest.raises(LstmserveError) as many:
        client.forecast(rows, horizon=2, model="window")
    assert many.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "1..4 rows (--max-sessions)" in many.value.message


def test_unknown_ended_and_refused_sessions(client, server):
    stub = spb_grpc.SessionServiceStub(grpc.insecure_channel(f"127.0.0.1:{server.port}"))
    with pytest.raises(grpc.RpcError) as unknown:
        stub.Step(spb.StepRequest(session_id="feedface", inputs={"": _tensor(_x(1))}, mode=1))
    assert unknown.value.code() == grpc.StatusCode.NOT_FOUND
    assert "no session 'feedface'" in unknown.value.details()
    session = client.session("stacked", stream=False)
    session.close()
    with pytest.raises(grpc.RpcError) as ended:
        stub.Step(spb.StepRequest(session_id=session.id, inputs={"": _tensor(_x(1))}, mode=1))
    assert ended.value.code() == grpc.StatusCode.NOT_FOUND
    assert "was ended by its client" in ended.value.details()
    with pytest.raises(LstmserveError) as refused:
        client.session("pooled")
    assert refused.value.code == grpc.StatusCode.FAILED_PRECONDITION
    assert "GlobalAveragePooling1D 'pool' pools over time" in refused.value.message
    with pytest.raises(LstmserveError) as missing:
        client.session("nothing")
    assert missing.value.code == grpc.StatusCode.NOT_FOUND


def test_more_sessions_than_allowed_are_refused_until_one_ends(client, server):
    sessions = [client.session("stacked", stream=False) for _ in range(4)]
    with pytest.raises(LstmserveError) as caught:
        client.session("stacked")
    assert caught.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "--max-sessions" in caught.value.message
    assert client.session("window", stream=False).id  # the limit is per model
    sessions[0].close()
    client.session("stacked", stream=False).close()
    assert server.sessions.count("stacked") == 3


def test_idle_sessions_expire_and_say_so(start_server, zoo):
    server = start_server(zoo["stacked"], sessions=SessionLimits(idle_seconds=0.3))
    with Client(f"127.0.0.1:{server.port}") as client:
        session = client.session("stacked", stream=False)
        session.step(_x(1))
        deadline = time.monotonic() + 10
        while server.sessions.count("stacked") and time.monotonic() < deadline:
            time.sleep(0.1)  # the server's own expiry frees it, with no call
        assert server.sessions.count("stacked") == 0
        with pytest.raises(LstmserveError) as caught:
            session.step(_x(1))
        assert caught.value.code == grpc.StatusCode.NOT_FOUND
        assert "expired after 0.3 s without steps" in caught.value.message


def test_a_stream_is_its_session(client, server):
    x = _x(5, seed=3)
    with client.session("stacked") as session:
        assert server.sessions.count("stacked") == 1
        with pytest.raises(LstmserveError) as caught:  # in-band: the stream and session go on
            session.step(x[:, :1])
        assert caught.value.code == grpc.StatusCode.INVALID_ARGUMENT
        answer = session.step(x)
        assert answer.position == 5
    _wait_for(lambda: server.sessions.count("stacked") == 0)


def test_a_stream_whose_client_goes_away_ends_its_session(server):
    async def main():
        async with AsyncClient(f"127.0.0.1:{server.port}") as client:
            session = await client.session("stacked")
            await session.step(_x(2))
            assert server.sessions.count("stacked") == 1
            session._call.cancel()  # as a process that dies: no half-close, no EndSession
    asyncio.run(main())
    _wait_for(lambda: server.sessions.count("stacked") == 0)


def test_a_stream_must_open_first(server):
    stub = spb_grpc.SessionServiceStub(grpc.insecure_channel(f"127.0.0.1:{server.port}"))
    step = spb.StreamRequest(step=spb.StepRequest(inputs={"": _tensor(_x(1))}, mode=1))
    with pytest.raises(grpc.RpcError) as caught:
        list(stub.StreamSession(iter([step])))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "first message must be `open`" in \
        caught.value.details()


def test_a_session_of_an_unloaded_version_ends_with_a_clear_status(start_server, tmp_path):
    model = load_model(modelzoo.stacked_free(tmp_path / "stacked.h5"), "stacked", engine=ENGINE)
    server = start_server(model)
    with Client(f"127.0.0.1:{server.port}") as client:
        session = client.session("stacked", stream=False)
        session.step(_x(2))
        model.close()  # what a reload does to the old version once it is no longer served
        with pytest.raises(LstmserveError) as caught:
            session.step(_x(1))
        assert caught.value.code == grpc.StatusCode.FAILED_PRECONDITION
        assert "version '1', which has been unloaded; start a new session" in caught.value.message
        assert server.sessions.count("stacked") == 0


def test_a_session_stays_on_its_version_while_new_ones_get_the_latest(start_server, zoo, tmp_path):
    one = zoo["stacked"]
    two = load_model(modelzoo.stacked_free(tmp_path / "stacked-2.h5"), "stacked", version="2", engine=ENGINE)
    server = start_server(one)
    x = _x(4, seed=8)
    with Client(f"127.0.0.1:{server.port}") as client:
        with client.session("stacked") as old:
            old.step(x[:2])
            server.registry.add(two)  # a reload: version 2 is now the latest
            with client.session("stacked") as new:
                assert (old.info.model.version, new.info.model.version) == ("1", "2")
                np.testing.assert_array_equal(old.step(x[2:]).last, new.step(x).last)  # same weights
    two.close()


def test_forecast_recursive_equals_predict_fed_its_own_answers(client):
    history = session_models.series()[100:130, 0]
    forecast = client.forecast(history, horizon=5, model="window")
    assert forecast.shape == (5,)
    raw = list(history)
    for _ in range(5):
        window = np.array(raw[-9:], np.float32).reshape(1, 9, 1)
        raw.append(float(client.predict(window, model="window")[0, 0]))
    np.testing.assert_allclose(forecast, raw[-5:], rtol=1e-5)


def test_forecast_direct_within_the_horizon_and_chained_beyond(client):
    histories = np.stack([session_models.series()[s:s + 20, :1] for s in (100, 140)])
    direct = client.forecast(histories, horizon=3, model="direct")
    np.testing.assert_allclose(direct, client.predict(histories[:, -9:], model="direct"), rtol=1e-5)
    chained = client.forecast(histories, horizon=7, model="direct")
    np.testing.assert_allclose(chained[:, :3], direct, rtol=1e-5)
    fed = np.concatenate([histories[:, :, 0], direct], axis=1)[:, -9:, None].astype(np.float32)
    np.testing.assert_allclose(chained[:, 3:6], client.predict(fed, model="direct"), rtol=1e-5)


def test_forecast_of_a_state_model_equals_predict_on_the_growing_history(client):
    history = session_models.series()[60:80, 0]
    forecast = client.forecast(history, horizon=3, model="free")
    raw = list(history)
    for _ in range(3):
        raw.append(float(client.predict(np.array(raw, np.float32)[None, :, None], model="free")[0, 0]))
    np.testing.assert_allclose(forecast, raw[-3:], rtol=1e-5)


def test_forecast_refusals_say_why(client):
    history = session_models.series()[:30, :1]
    cases = [("window", 0, grpc.StatusCode.INVALID_ARGUMENT, "horizon is 0; expected 1..50"),
             ("window", 51, grpc.StatusCode.INVALID_ARGUMENT, "(--max-horizon)"),
             ("undeclared", 3, grpc.StatusCode.FAILED_PRECONDITION, "does not declare"),
             ("stacked", 3, grpc.StatusCode.FAILED_PRECONDITION, "cannot forecast")]
    for model, horizon, code, words in cases:
        with pytest.raises(LstmserveError) as caught:
            client.forecast(history if model != "stacked" else _x(5), horizon=horizon, model=model)
        assert caught.value.code == code and words in caught.value.message, caught.value
    with pytest.raises(LstmserveError) as short:
        client.forecast(history[:4], horizon=2, model="window")
    assert short.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "history has 4 steps" in short.value.message
    two = session_models.series(2)[:30]
    assert client.forecast(two, horizon=2, model="two_features").shape == (2,)
    with pytest.raises(LstmserveError) as beyond:
        client.forecast(two, horizon=3, model="two_features")
    assert beyond.value.code == grpc.StatusCode.FAILED_PRECONDITION and "need the future of the others" in \
        beyond.value.message


def test_async_sessions_streams_and_forecasts(server, client):
    x = _x(8, seed=4)

    async def main():
        async with AsyncClient(f"127.0.0.1:{server.port}") as aclient:
            async with aclient.session("stacked") as session:
                first = await session.step(x[:3])
                streamed = [r async for r in session.stream(list(x[3:]))]
            by_id = await aclient.session("stacked", stream=False)
            whole = await by_id.step(x)
            await by_id.close()
            forecast = await aclient.forecast(session_models.series()[100:130, 0], 2, model="window")
            return first, streamed, whole, forecast

    first, streamed, whole, forecast = asyncio.run(main())
    np.testing.assert_allclose(np.concatenate([first.outputs, np.stack([s.last for s in streamed])]),
                               whole.outputs, rtol=TOLERANCE, atol=TOLERANCE)
    expected = client.forecast(session_models.series()[100:130, 0], 2, model="window")
    np.testing.assert_allclose(forecast, expected)


def test_64_streams_at_once_each_answer_their_own_sequence(server, client, start_server, zoo):
    many = start_server(zoo["stacked"], sessions=SessionLimits(max_sessions=64))
    rng = np.random.default_rng(9)
    sequences = [rng.normal(size=(int(rng.integers(3, 8)), 3)).astype(np.float32) for _ in range(64)]

    async def one(aclient, sequence):
        async with aclient.session("stacked") as session:
            return [r.last async for r in session.stream(list(sequence))]

    async def main():
        async with AsyncClient(f"127.0.0.1:{many.port}") as aclient:
            return await asyncio.gather(*(one(aclient, s) for s in sequences))

    answers = asyncio.run(main())
    for sequence, stepped in zip(sequences, answers):
        np.testing.assert_allclose(stepped[-1], client.predict(sequence[None], model="stacked")[0],
                                   rtol=TOLERANCE, atol=TOLERANCE)


def _wait_for(condition, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.05)
