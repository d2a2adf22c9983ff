"""Bearer-token authentication against a real server: who gets in, what the log keeps."""

import logging
import os
import time

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from lstmserve.client import Client, LstmserveError
from lstmserve.client.channel import TOKEN_ENV
from lstmserve.server.transport.auth import RECHECK_S, TokenAuth, TokenFile
from lstmserve.v1 import stats_pb2 as spb
from lstmserve.v1 import stats_pb2_grpc as spb_grpc

pytestmark = pytest.mark.integration

GOOD, OTHER, OLD = "k3y-for-the-tests-0123456789", "another-valid-token", "an-old-token-revoked-later"
X = np.zeros((1, 1, 1), np.float32)


@pytest.fixture
def token_file(tmp_path):
    path = tmp_path / "tokens"
    path.write_text(f"# test tokens\n{GOOD}\n\n  {OTHER}  \n{OLD}\n")
    return path


@pytest.fixture
def auth(token_file):
    return TokenAuth(TokenFile(token_file))


@pytest.fixture
def address(start_server, loaded_seed, auth):
    return f"127.0.0.1:{start_server(loaded_seed, auth=auth).port}"


@pytest.fixture(autouse=True)
def no_token_from_the_environment(monkeypatch):
    monkeypatch.delenv(TOKEN_ENV, raising=False)


def refused(address, **client_options) -> LstmserveError:
    with Client(address, timeout=5, **client_options) as client, pytest.raises(LstmserveError) as caught:
        client.predict(X)
    return caught.value


def test_a_call_without_a_token_is_unauthenticated(address):
    error = refused(address)
    assert error.code == grpc.StatusCode.UNAUTHENTICATED
    assert "authorization: Bearer <token>" in error.message


def test_a_wrong_token_is_refused_with_the_same_words(address):
    wrong, missing = refused(address, token="not-a-token"), refused(address)
    assert wrong.code == grpc.StatusCode.UNAUTHENTICATED
    assert wrong.message == missing.message


def test_every_listed_token_is_accepted(address):
    for token in (GOOD, OTHER):
        with Client(address, token=token) as client:
            assert client.predict(X).shape == (1, 1)


def test_the_token_may_come_from_the_environment(address, monkeypatch):
    monkeypatch.setenv(TOKEN_ENV, GOOD)
    with Client(address) as client:
        assert client.predict(X).shape == (1, 1)


def test_metadata_and_model_list_need_a_token_too(address):
    with Client(address, timeout=5) as client:
        for call in (client.models, lambda: client.metadata("seed")):
            with pytest.raises(LstmserveError) as caught:
                call()
            assert caught.value.code == grpc.StatusCode.UNAUTHENTICATED


def test_stats_need_a_token(address):
    with grpc.insecure_channel(address) as channel:
        stub = spb_grpc.StatsServiceStub(channel)
        with pytest.raises(grpc.RpcError) as caught:
            stub.GetModelStats(spb.GetModelStatsRequest(), timeout=5)
        assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
        reply = stub.GetModelStats(spb.GetModelStatsRequest(), timeout=5,
                                   metadata=[("authorization", f"Bearer {GOOD}")])
    assert [m.model.name for m in reply.models] == ["seed"]


def test_health_answers_without_a_token(address):
    with Client(address) as client:
        assert client.health() == "SERVING"
    with grpc.insecure_channel(address) as channel:
        reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
    assert reply.status == health_pb2.HealthCheckResponse.SERVING


def test_reflection_follows_the_auth_setting(address):
    request = reflection_pb2.ServerReflectionRequest(list_services="")
    with grpc.insecure_channel(address) as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        with pytest.raises(grpc.RpcError) as caught:
            next(stub.ServerReflectionInfo(iter([request]), timeout=5))
        assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
        reply = next(stub.ServerReflectionInfo(iter([request]), timeout=5,
                                               metadata=[("authorization", f"Bearer {GOOD}")]))
    assert "lstmserve.v1.PredictionService" in {s.name for s in reply.list_services_response.service}


def test_an_unknown_method_is_unauthenticated_before_it_is_unimplemented(address):
    with grpc.insecure_channel(address) as channel:
        call = channel.unary_unary("/lstmserve.v1.NoSuchService/Nothing")
        with pytest.raises(grpc.RpcError) as caught:
            call(b"", timeout=5)
        assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
        with pytest.raises(grpc.RpcError) as caught:
            call(b"", timeout=5, metadata=[("authorization", f"Bearer {GOOD}")])
        assert caught.value.code() == grpc.StatusCode.UNIMPLEMENTED


def test_a_token_removed_from_the_file_stops_working(address, token_file):
    with Client(address, token=OLD) as client:
        assert client.predict(X).shape == (1, 1)
        replacement = token_file.with_name("tokens.new")
        replacement.write_text(f"{GOOD}\n{OTHER}\n")
        os.replace(replacement, token_file)  # how an operator swaps a file atomically
        time.sleep(RECHECK_S + 0.2)
        with pytest.raises(LstmserveError) as caught:
            client.predict(X)
        assert caught.value.code == grpc.StatusCode.UNAUTHENTICATED
    with Client(address, token=GOOD) as client:
        assert client.predict(X).shape == (1, 1)


def test_a_token_added_in_place_works_after_the_recheck(address, token_file):
    with open(token_file, "a") as stream:  # edited in place: same inode, new size and mtime
        stream.write("a-brand-new-token\n")
    time.sleep(RECHECK_S + 0.2)
    with Client(address, token="a-brand-new-token") as client:
        assert client.predict(X).shape == (1, 1)


def test_refusals_are_counted_and_logged_once_per_address_without_the_token(address, auth, caplog):
    caplog.set_level(logging.DEBUG)
    for token in ("wrong-token-one", "wrong-token-two", None):
        refused(address, token=token)
    with Client(address, token=GOOD) as client:
        client.predict(X)
    assert auth.rejected == 3
    warnings = [r.getMessage() for r in caplog.records if r.name.endswith("auth")]
    assert len(warnings) == 1, warnings
    assert "/lstmserve.v1.PredictionService/Predict" in warnings[0] and "127.0.0.1" in warnings[0]
    for secret in ("wrong-token-one", "wrong-token-two", GOOD, OTHER, OLD):
        assert secret not in caplog.text


def test_the_counter_hook_sees_method_and_reason(start_server, loaded_seed, token_file):
    seen = []
    auth = TokenAuth(TokenFile(token_file), on_rejected=lambda *args: seen.append(args))
    address = f"127.0.0.1:{start_server(loaded_seed, auth=auth).port}"
    refused(address)
    refused(address, token="wrong")
    with grpc.insecure_channel(address) as channel, pytest.raises(grpc.RpcError):
        channel.unary_unary("/lstmserve.v1.PredictionService/ListModels")(
            b"", timeout=5, metadata=[("authorization", f"Basic {GOOD}")])
    predict = "/lstmserve.v1.PredictionService/Predict"
    assert seen == [(predict, "missing"), (predict, "invalid"),
                    ("/lstmserve.v1.PredictionService/ListModels", "malformed")]
