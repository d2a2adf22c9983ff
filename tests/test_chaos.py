"""Replicas fail; callers do not: three `lstmserve serve` processes, sixteen clients balancing over them
with retries, one replica killed with SIGKILL mid-run and started again."""

from __future__ import annotations

import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import grpc
import numpy as np
import pytest

from lstmserve.client import Client
from lstmserve.v1 import stats_pb2 as spb
from lstmserve.v1 import stats_pb2_grpc as spb_grpc

pytestmark = pytest.mark.slow

LSTMSERVE = str(Path(sys.executable).with_name("lstmserve"))
CALLERS = 16
X = np.array([0.0, 0.1, 0.2, 0.3], np.float32).reshape(4, 1, 1)


class Replica:
    """One `lstmserve serve` process on a fixed port (so a restart comes back where clients look)."""

    def __init__(self, model: Path, port: int, log: Path) -> None:
        self.model, self.port, self.log = model, port, log
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        with self.log.open("a") as stream:
            self.process = subprocess.Popen(
                [LSTMSERVE, "serve", "--model", f"seed={self.model}", "--port", str(self.port),
                 "--metrics-port", "0"], stdout=stream, stderr=subprocess.STDOUT)

    def wait_serving(self, timeout: float = 180) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process.poll() is None, self.log.read_text()[-2000:]
            with Client(f"127.0.0.1:{self.port}", timeout=2) as client:
                try:
                    if client.health() == "SERVING":
                        return
                except Exception:  # noqa: BLE001 (not listening yet)
                    pass
            time.sleep(0.3)
        raise AssertionError(f"replica on {self.port} never served: {self.log.read_text()[-2000:]}")

    def requests(self) -> int:
        """Predict calls this replica's engine has answered since it started."""
        with grpc.insecure_channel(f"127.0.0.1:{self.port}") as channel:
            reply = spb_grpc.StatsServiceStub(channel).GetModelStats(
                spb.GetModelStatsRequest(model={"name": "seed"}), timeout=10)
        return reply.models[0].requests

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(30)


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    for probe in sockets:
        probe.bind(("127.0.0.1", 0))
    ports = [probe.getsockname()[1] for probe in sockets]
    for probe in sockets:
        probe.close()
    return ports


@pytest.fixture
def replicas(seed_h5, tmp_path):
    started = [Replica(seed_h5, port, tmp_path / f"replica-{port}.log") for port in free_ports(3)]
    for replica in started:
        replica.start()
    for replica in started:
        replica.wait_serving()
    yield started
    for replica in started:
        replica.stop()


def test_a_replica_killed_mid_run_fails_no_call(replicas, seed_h5):
    addresses = [f"127.0.0.1:{replica.port}" for replica in replicas]
    outcomes: Counter = Counter()
    errors: list[str] = []
    stop = threading.Event()

    def caller() -> None:
        with Client(addresses, timeout=30) as client:
            while not stop.is_set():
                try:
                    assert client.predict(X, model="seed").shape == (4, 1)
                    outcomes["ok"] += 1
                except Exception as error:  # noqa: BLE001 (every failure is the finding)
                    outcomes["failed"] += 1
                    errors.append(repr(error))

    threads = [threading.Thread(target=caller) for _ in range(CALLERS)]
    for thread in threads:
        thread.start()
    victim, survivors = replicas[0], replicas[1:]
    time.sleep(3)
    before = [replica.requests() for replica in survivors]
    victim.process.send_signal(signal.SIGKILL)
    victim.process.wait(30)
    time.sleep(3)
    during = [replica.requests() - b for replica, b in zip(survivors, before)]
    victim.start()
    victim.wait_serving()
    # The clients dial it again within their reconnect backoff (at most 5 s, plus jitter).
    deadline = time.monotonic() + 30
    while (restarted := victim.requests()) == 0 and time.monotonic() < deadline:
        time.sleep(0.5)
    stop.set()
    for thread in threads:
        thread.join(60)
    assert outcomes["failed"] == 0, errors[:5]
    assert outcomes["ok"] > 100
    assert all(count > 0 for count in during), during  # the killed replica's share moved to the others
    assert restarted > 0  # and the restarted one takes traffic again
    assert re.search(r"listening on", victim.log.read_text())
