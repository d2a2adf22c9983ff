"""TLS and mutual TLS against a real server, with certificates made at test time."""

import asyncio

import modelzoo
import numpy as np
import pytest
from certs import Authority

from lstmserve.client import AsyncClient, Client, LstmserveError
from lstmserve.server.transport.auth import server_credentials

pytestmark = pytest.mark.integration

X = np.array([0.0, 0.1, 0.2], np.float32).reshape(3, 1, 1)


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pki")
    ours, other = Authority(folder, "ours"), Authority(folder, "other")
    return {"ca": ours, "server": ours.server(), "client": ours.client(), "other_client": other.client(),
            "other_ca": other}


@pytest.fixture
def tls_server(start_server, loaded_seed, pki):
    credentials = server_credentials(pki["server"].cert, pki["server"].key)
    return start_server(loaded_seed, credentials=credentials)


@pytest.fixture
def mtls_server(start_server, loaded_seed, pki):
    credentials = server_credentials(pki["server"].cert, pki["server"].key, client_ca=pki["ca"].cert)
    return start_server(loaded_seed, credentials=credentials)


def test_a_tls_client_predicts(tls_server, pki, seed_h5):
    with Client(f"localhost:{tls_server.port}", tls=True, root_certificates=pki["ca"].cert) as client:
        np.testing.assert_allclose(client.predict(X), modelzoo.reference(seed_h5, X)[0],
                                   atol=1e-5)


def test_root_certificates_may_be_pem_bytes_and_imply_tls(tls_server, pki):
    with Client(f"127.0.0.1:{tls_server.port}", root_certificates=pki["ca"].cert.read_bytes()) as client:
        assert client.health() == "SERVING"


def test_an_async_tls_client_predicts(tls_server, pki):
    async def call():
        async with AsyncClient(f"localhost:{tls_server.port}", tls=True,
                               root_certificates=pki["ca"].cert) as client:
            return await client.predict(X)

    assert asyncio.run(call()).shape == (3, 1)


def test_a_plaintext_client_cannot_talk_to_the_tls_port(tls_server):
    with Client(f"localhost:{tls_server.port}", timeout=3) as client, pytest.raises(LstmserveError) as caught:
        client.health()
    assert caught.value.code.name == "UNAVAILABLE"


def test_the_system_roots_do_not_trust_a_private_ca(tls_server):
    with Client(f"localhost:{tls_server.port}", tls=True, timeout=3) as client, \
            pytest.raises(LstmserveError) as caught:
        client.health()
    assert caught.value.code.name == "UNAVAILABLE"


def test_mutual_tls_accepts_a_client_certificate_from_its_ca(mtls_server, pki):
    with Client(f"localhost:{mtls_server.port}", root_certificates=pki["ca"].cert,
                client_cert=pki["client"].cert, client_key=pki["client"].key) as client:
        assert client.predict(X).shape == (3, 1)


@pytest.mark.parametrize("who", ["no certificate", "another CA's certificate"])
def test_mutual_tls_refuses_the_handshake(mtls_server, pki, who):
    chosen = {"no certificate": {},
              "another CA's certificate": {"client_cert": pki["other_client"].cert,
                                           "client_key": pki["other_client"].key}}[who]
    with Client(f"localhost:{mtls_server.port}", root_certificates=pki["ca"].cert, timeout=3,
                **chosen) as client, pytest.raises(LstmserveError) as caught:
        client.health()
    # The handshake fails before any call reaches the server: the channel never becomes ready.
    assert caught.value.code.name == "UNAVAILABLE"


def test_a_client_certificate_needs_its_key(pki):
    with pytest.raises(ValueError, match="client_cert and client_key go together"):
        Client("localhost:1", client_cert=pki["client"].cert)


def test_an_unreadable_certificate_file_is_named(tmp_path):
    with pytest.raises(ValueError, match="root_certificates: cannot read .*missing.pem"):
        Client("localhost:1", root_certificates=tmp_path / "missing.pem")
