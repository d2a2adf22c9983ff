"""`lstmserve serve` and `lstmserve predict` with TLS, mutual TLS and tokens, each in its own process."""

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import grpc
import numpy as np
import pytest
from certs import Authority

from lstmserve.client import Client, LstmserveError
from lstmserve.client.channel import TOKEN_ENV

pytestmark = [pytest.mark.integration, pytest.mark.slow]

LSTMSERVE = str(Path(sys.executable).with_name("lstmserve"))
TOKEN = "cli-test-token-7f3a9c"
X = "[[[0.0]], [[0.1]]]"


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cli-pki")
    ca = Authority(folder, "cli")
    return {"ca": ca.cert, "server": ca.server(), "client": ca.client()}


@pytest.fixture(scope="module")
def secured(seed_h5, pki, tmp_path_factory):
    """`lstmserve serve` with mutual TLS and a token file; yields (address, log path) once SERVING."""
    folder = tmp_path_factory.mktemp("cli-serve")
    tokens, log = folder / "tokens", folder / "serve.log"
    tokens.write_text(f"# for the CLI test\n{TOKEN}\n")
    with log.open("w") as stream:
        process = subprocess.Popen(
            [LSTMSERVE, "serve", "--metrics-port", "0", "--model", f"seed={seed_h5}", "--port", "0",
             "--tls-cert", str(pki["server"].cert), "--tls-key", str(pki["server"].key),
             "--tls-client-ca", str(pki["ca"]), "--auth-token-file", str(tokens)],
            stdout=stream, stderr=subprocess.STDOUT)
    try:
        yield _wait_until_serving(process, log, pki), log
    finally:
        process.terminate()
        assert process.wait(30) == 0, log.read_text()[-2000:]


def _client(address: str, pki, **options) -> Client:
    return Client(address, root_certificates=pki["ca"], client_cert=pki["client"].cert,
                  client_key=pki["client"].key, timeout=5, **options)


def _wait_until_serving(process, log: Path, pki, timeout: float = 120) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, log.read_text()[-2000:]
        found = re.search(r"listening on \S+:(\d+)", log.read_text())
        if found:
            with _client(f"localhost:{found[1]}", pki) as client:
                if client.health() == "SERVING":
                    return f"localhost:{found[1]}"
        time.sleep(0.3)
    raise AssertionError(f"server did not report SERVING: {log.read_text()[-2000:]}")


def predict(address: str, pki, *extra: str, env_token: str | None = None) -> subprocess.CompletedProcess:
    env = {key: value for key, value in os.environ.items() if key != TOKEN_ENV}
    if env_token is not None:
        env[TOKEN_ENV] = env_token
    return subprocess.run(
        [LSTMSERVE, "predict", "--target", address, "--tls-ca", str(pki["ca"]),
         "--tls-cert", str(pki["client"].cert), "--tls-key", str(pki["client"].key), X, *extra],
        capture_output=True, text=True, timeout=120, env=env)


def test_the_sdk_needs_certificate_and_token(secured, pki):
    address, _ = secured
    with _client(address, pki, token=TOKEN) as client:
        assert client.predict(np.zeros((2, 1, 1), np.float32)).shape == (2, 1)
    with _client(address, pki, token="") as client, pytest.raises(LstmserveError) as caught:
        client.predict(np.zeros((1, 1, 1), np.float32))
    assert caught.value.code == grpc.StatusCode.UNAUTHENTICATED
    with Client(address, root_certificates=pki["ca"], token=TOKEN, timeout=5) as client, \
            pytest.raises(LstmserveError) as caught:
        client.health()
    assert caught.value.code == grpc.StatusCode.UNAVAILABLE  # no client certificate: no handshake


def test_predict_from_the_shell_with_a_token_flag_or_the_environment(secured, pki):
    address, _ = secured
    for result in (predict(address, pki, "--token", TOKEN), predict(address, pki, env_token=TOKEN)):
        assert result.returncode == 0, result.stderr[-2000:]
        assert np.asarray(json.loads(result.stdout)).shape == (2, 1)
    refused = predict(address, pki)
    assert refused.returncode == 1 and "UNAUTHENTICATED" in refused.stderr


def test_the_server_log_never_holds_a_token(secured, pki):
    address, log = secured
    predict(address, pki, "--token", "a-wrong-token-for-the-log")
    text = log.read_text()
    assert "refused /lstmserve.v1.PredictionService/Predict" in text
    assert TOKEN not in text and "a-wrong-token-for-the-log" not in text


@pytest.mark.parametrize(("flags", "message"), [
    (["--tls-cert", "server.pem"], "--tls-cert and --tls-key go together"),
    (["--tls-client-ca", "ca.pem"], "--tls-client-ca needs --tls-cert"),
    (["--auth-token-file", "empty"], "holds no token"),
])
def test_serve_refuses_incomplete_security_flags(seed_h5, tmp_path, flags, message):
    (tmp_path / "empty").write_text("# nobody\n")
    command = [LSTMSERVE, "serve", "--metrics-port", "0", "--model", str(seed_h5), "--port", "0", *flags]
    result = subprocess.run(command,
                            capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert result.returncode == 2 and message in result.stderr, result.stderr[-2000:]
