"""Several servers behind one client: round-robin spread, retries when one stops, DNS targets."""

import asyncio
import threading

import grpc
import numpy as np
import pytest

from lstmserve.client import AsyncClient, Client
from lstmserve.server.loading.load import load_model
from lstmserve.server.serving.registry import VersionState
from lstmserve.v1 import stats_pb2 as spb
from lstmserve.v1 import stats_pb2_grpc as spb_grpc

pytestmark = pytest.mark.integration

X = np.zeros((1, 1, 1), np.float32)


@pytest.fixture(scope="module")
def second_seed(seed_h5):
    """The seed loaded again: each server counts its own requests (a shared model would share counters)."""
    return load_model(seed_h5, "seed")


@pytest.fixture
def two_servers(start_server, loaded_seed, second_seed):
    return [start_server(loaded_seed), start_server(second_seed)]


def requests_served(server) -> int:
    """Predict calls this server's model has answered, from its own StatsService."""
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        reply = spb_grpc.StatsServiceStub(channel).GetModelStats(spb.GetModelStatsRequest(), timeout=5)
    (stats,) = reply.models
    return stats.requests


def test_calls_are_spread_over_every_address_in_the_list(two_servers):
    before = [requests_served(server) for server in two_servers]
    with Client([f"127.0.0.1:{server.port}" for server in two_servers]) as client:
        for _ in range(40):
            assert client.predict(X).shape == (1, 1)
    served = [requests_served(server) - start for server, start in zip(two_servers, before)]
    assert sum(served) == 40
    assert min(served) >= 10, served  # round_robin alternates once both connections are ready


def test_a_list_of_host_names_is_spread_too(two_servers):
    before = [requests_served(server) for server in two_servers]
    with Client([f"localhost:{server.port}" for server in two_servers]) as client:
        for _ in range(20):
            client.predict(X)
    assert all(requests_served(server) > start for server, start in zip(two_servers, before))


def test_calls_keep_working_when_one_server_stops(two_servers):
    survivor, stopped = two_servers
    failures: list[Exception] = []
    done = threading.Event()

    def call_in_a_loop(client: Client) -> None:
        while not done.is_set():
            try:
                client.predict(X)
            except Exception as error:  # noqa: BLE001 (any failure fails the test below)
                failures.append(error)

    with Client([f"127.0.0.1:{server.port}" for server in two_servers]) as client:
        for _ in range(10):
            client.predict(X)
        callers = [threading.Thread(target=call_in_a_loop, args=(client,)) for _ in range(4)]
        for caller in callers:
            caller.start()
        stopped.stop(grace=None)  # in-flight calls are cut, new ones meet a closed port: UNAVAILABLE
        before = requests_served(survivor)
        for _ in range(20):
            assert client.predict(X).shape == (1, 1)
        done.set()
        for caller in callers:
            caller.join(30)
    assert failures == []
    assert requests_served(survivor) >= before + 20


def test_a_dns_target_works(two_servers):
    with Client(f"dns:///localhost:{two_servers[0].port}") as client:
        assert client.predict(X).shape == (1, 1)


def test_the_async_client_spreads_calls_too(two_servers):
    before = [requests_served(server) for server in two_servers]

    async def call():
        async with AsyncClient([f"127.0.0.1:{server.port}" for server in two_servers]) as client:
            return [await client.predict(X) for _ in range(20)]

    assert len(asyncio.run(call())) == 20
    assert all(requests_served(server) > start for server, start in zip(two_servers, before))


def test_a_replica_still_loading_a_model_is_passed_over_by_retries(start_server, loaded_seed):
    # SERVING (so health checking lets calls through) yet loading "seed": every Predict is UNAVAILABLE.
    loading = start_server()
    loading.registry.note("seed", "1", VersionState.LOADING)
    ready = start_server(loaded_seed)
    before = requests_served(ready)
    with Client([f"127.0.0.1:{loading.port}", f"127.0.0.1:{ready.port}"]) as client:
        # Half the first attempts land on the loading replica; each is retried until it reaches the other.
        for _ in range(20):
            assert client.predict(X, model="seed").shape == (1, 1)
    assert requests_served(ready) == before + 20


def test_a_replica_reporting_not_serving_gets_no_calls(start_server, loaded_seed, second_seed):
    resting, ready = start_server(loaded_seed, serving=False), start_server(second_seed)
    before = [requests_served(resting), requests_served(ready)]
    with Client([f"127.0.0.1:{resting.port}", f"127.0.0.1:{ready.port}"]) as client:
        for _ in range(10):
            client.predict(X)
    assert [requests_served(resting), requests_served(ready)] == [before[0], before[1] + 10]
