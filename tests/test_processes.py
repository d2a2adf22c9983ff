"""`lstmserve serve --processes 2` for real: two workers answer on one port, health waits for both, the
supervisor never loads TensorFlow, its /metrics add both workers up, a killed worker comes back, SIGTERM
drains every worker without losing a call."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import threading
import time
import urllib.request
from collections import Counter
from pathlib import Path

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families
from repository_helpers import LSTMSERVE, stop_process, wait_for

from lstmserve.client.tensors import to_tensor
from lstmserve.v1 import model_pb2 as mpb
from lstmserve.v1 import prediction_service_pb2 as pb
from lstmserve.v1 import prediction_service_pb2_grpc as pb_grpc
from lstmserve.v1 import stats_pb2 as spb
from lstmserve.v1 import stats_pb2_grpc as spb_grpc

pytestmark = [pytest.mark.integration, pytest.mark.slow]

CALLERS = 16
CONNECTIONS = 24
REQUEST = pb.PredictRequest(model=mpb.ModelSpec(name="seed"), mode=mpb.PREDICTION_MODE_VALUES)
REQUEST.inputs[""].CopyFrom(to_tensor(np.zeros((1, 1, 1), np.float32)))


def connection(address: str) -> grpc.Channel:
    """A channel on a TCP connection of its own (no subchannel shared with other channels), without
    retries: SO_REUSEPORT hands each new connection to one worker."""
    return grpc.insecure_channel(address, options=[("grpc.use_local_subchannel_pool", 1),
                                                   ("grpc.enable_retries", 0)])


def health(address: str, service: str = "") -> str:
    with connection(address) as channel:
        reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=service),
                                                          timeout=10)
    return health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)


def predict_on_fresh_connections(address: str, connections: int, calls: int = 3) -> int:
    for _ in range(connections):
        with connection(address) as channel:
            stub = pb_grpc.PredictionServiceStub(channel)
            for _ in range(calls):
                stub.Predict(REQUEST, timeout=30)
    return connections * calls


class Fleet:
    """`lstmserve serve --processes 2` of the seed model, its log read as it grows."""

    def __init__(self, seed_h5: Path, tmp_path: Path, *options: str) -> None:
        self.log, self.access = tmp_path / "fleet.log", tmp_path / "access.jsonl"
        self.metrics_port = free_port()
        with self.log.open("w") as sink:
            self.process = subprocess.Popen(
                [LSTMSERVE, "serve", "--model", f"seed={seed_h5}", "--processes", "2", "--port", "0",
                 "--metrics-port", str(self.metrics_port), "--access-log", str(self.access), *options],
                stdout=sink, stderr=subprocess.STDOUT)
        self.address = self.wait_for(r"supervising 2 workers on (\S+)")[0][1]

    def text(self) -> str:
        return self.log.read_text()

    def wait_for(self, pattern: str, count: int = 1, timeout: float = 300) -> list[re.Match]:
        def found():
            assert self.process.poll() is None or count == 0, self.text()[-3000:]
            matches = list(re.finditer(pattern, self.text()))
            return matches if len(matches) >= count else None
        return wait_for(found, timeout, pattern)

    def pid(self, index: int, nth: int = 1) -> int:
        return int(self.wait_for(rf"worker {index} started \(pid (\d+)\)", nth)[nth - 1][1])

    def wait_serving(self) -> None:
        wait_for(lambda: self._serving(), 300, "health SERVING")

    def scrape(self) -> dict:
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=10) as reply:
            text = reply.read().decode()
        return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
                for family in text_string_to_metric_families(text) for sample in family.samples}

    def stop(self) -> int:
        return stop_process(self.process)

    def _serving(self) -> bool:
        assert self.process.poll() is None, self.text()[-3000:]
        try:
            return health(self.address) == "SERVING"
        except grpc.RpcError:
            return False


def free_port() -> int:
    import socket
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def mapped_libraries(pid: int) -> str:
    return Path(f"/proc/{pid}/maps").read_text()


def stats_readings(address: str, tries: int = CONNECTIONS) -> list[int]:
    """The seed's request count as StatsService reports it, over fresh connections: each worker counts
    only what it answered."""
    readings = []
    for _ in range(tries):
        with connection(address) as channel:
            reply = spb_grpc.StatsServiceStub(channel).GetModelStats(
                spb.GetModelStatsRequest(model={"name": "seed"}), timeout=10)
        readings.append(reply.models[0].requests)
    return readings


def predictions_logged(access_log: Path) -> list[dict]:
    complete = access_log.read_text().split("\n")[:-1]  # a line being written is not one yet
    return [line for line in map(json.loads, complete) if line["method"] == "Predict"]


def predicted(samples: dict) -> float:
    return sum(value for (name, labels), value in samples.items()
               if name == "lstmserve_requests_total" and ("method", "Predict") in labels)


def test_two_workers_serve_one_port_and_health_waits_for_both(seed_h5, tmp_path):
    fleet = Fleet(seed_h5, tmp_path, "--max-restarts", "1")
    try:
        late = fleet.pid(1)
        os.kill(late, signal.SIGSTOP)  # still importing: it has not bound the port yet
        fleet.wait_for(r"worker 0 ready \(1 of 2\)")
        assert "[worker 1] lstmserve.server: listening" not in fleet.text()
        # Worker 0 alone holds the port and answers, but health waits for worker 1.
        assert health(fleet.address) == "NOT_SERVING"
        assert health(fleet.address, "lstmserve.v1.PredictionService/seed") == "NOT_SERVING"
        made = predict_on_fresh_connections(fleet.address, 2)
        os.kill(late, signal.SIGCONT)
        fleet.wait_serving()
        assert health(fleet.address, "lstmserve.v1.PredictionService/seed") == "SERVING"

        supervisor_maps = mapped_libraries(fleet.process.pid)
        assert "tensorflow" not in supervisor_maps and "libtensorflow" in mapped_libraries(late)

        made += predict_on_fresh_connections(fleet.address, CONNECTIONS)
        readings = stats_readings(fleet.address)
        assert all(0 < reading < made for reading in readings), readings  # nobody answered alone
        assert len(set(readings)) <= 2
        wait_for(lambda: len(predictions_logged(fleet.access)) >= made, 30, "the access log")
        workers = Counter(line["worker"] for line in predictions_logged(fleet.access))
        assert set(workers) == {0, 1} and sum(workers.values()) == made, workers
        samples = fleet.scrape()
        assert predicted(samples) == made
        assert samples[("lstmserve_workers_ready", ())] == 2
        assert samples[("lstmserve_model_versions_loaded", (("model", "seed"),))] == 1
        wait_for(lambda: fleet.scrape()[("lstmserve_batch_rows_count", (("model", "seed"), ("version", "1")))]
                 == made, 10, "batch rows copied")

        # Past the restart budget (1) the fleet stops: worker 0 dies, its replacement dies at once.
        os.kill(fleet.pid(0), signal.SIGKILL)
        os.kill(fleet.pid(0, nth=2), signal.SIGKILL)
        assert fleet.process.wait(120) == 1
        assert "giving up, stopping the others" in fleet.text()
        assert re.search(r"worker 1 \(pid \d+\) exited with 0", fleet.text())
    finally:
        fleet.stop()


class Callers:
    """Closed-loop callers, each on a connection of its own without retries, until their first failure."""

    def __init__(self, address: str) -> None:
        self.answered: list[float] = []  # when each answer arrived
        self.failures: list[str] = []
        self.threads = [threading.Thread(target=self._call, args=(address,)) for _ in range(CALLERS)]
        for thread in self.threads:
            thread.start()

    def join(self) -> None:
        for thread in self.threads:
            thread.join(120)

    def _call(self, address: str) -> None:
        with connection(address) as channel:
            stub = pb_grpc.PredictionServiceStub(channel)
            while True:
                try:
                    stub.Predict(REQUEST, timeout=30)
                except grpc.RpcError as error:
                    self.failures.append(f"{error.code().name}: {error.details()}")
                    return
                self.answered.append(time.monotonic())


def test_a_killed_worker_comes_back_and_sigterm_drains_every_worker(seed_h5, tmp_path):
    fleet = Fleet(seed_h5, tmp_path)
    try:
        fleet.wait_serving()
        directory = re.search(r"PROMETHEUS_MULTIPROC_DIR=([^\0]+)",
                              Path(f"/proc/{fleet.pid(0)}/environ").read_text())[1]
        victim = fleet.pid(1)
        os.kill(victim, signal.SIGKILL)
        fleet.wait_for(rf"worker 1 \(pid {victim}\) was killed by SIGKILL")
        assert health(fleet.address) == "NOT_SERVING"  # worker 1 is loading again
        fleet.wait_for(r"worker 1 ready \(2 of 2\)")
        fleet.wait_serving()
        assert fleet.pid(1, nth=2) != victim
        assert fleet.scrape()[("lstmserve_worker_restarts_total", ())] == 1

        callers = Callers(fleet.address)
        wait_for(lambda: len(callers.answered) >= 200, 120, "callers under way")
        signalled = time.monotonic()
        fleet.process.send_signal(signal.SIGTERM)
        code = fleet.process.wait(120)
        callers.join()
    finally:
        fleet.stop()
    # Every call a worker's handler took was answered, and the answer arrived: the access log (one line
    # per handled call) and the callers count the same. The others never reached a handler: refused
    # connections, and calls a stopping gRPC server cancels before handing them over (which clients
    # retry, see the README).
    handled = predictions_logged(fleet.access)
    assert len(handled) == len(callers.answered) and {line["status"] for line in handled} == {"OK"}
    assert all(failure.startswith(("UNAVAILABLE", "CANCELLED")) for failure in callers.failures), \
        callers.failures
    assert any(when > signalled for when in callers.answered)  # calls in flight at the signal answered
    assert code == 0, fleet.text()[-3000:]
    # Each worker drained: it logged the drain and that every call it accepted was answered.
    for line in ("draining: health NOT_SERVING", "stopped: every accepted call was answered"):
        assert len(re.findall(rf"\[worker [01]\] lstmserve.server: {line}", fleet.text())) == 2, line
    assert len(re.findall(r"worker [01] \(pid \d+\) exited with 0", fleet.text())) == 2
    assert not Path(directory).exists()  # the multiprocess metrics went with the run
