"""A model repository on disk and a real server over it, for the lifecycle tests."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lstmserve.client import Client
from lstmserve.server.serving.registry import ModelRegistry
from lstmserve.server.serving.repository import Repository, RepositoryOptions
from lstmserve.server.transport.model_service import ModelControl
from lstmserve.server.transport.server import RunningServer, create_server
from lstmserve.v1 import model_service_pb2 as msp

SMALL_INPUT = np.zeros((1, 1, 1), np.float32)
LARGE_INPUT = np.zeros((1, 20, 4), np.float32)
# Retries off: a call that fails must be seen failing, not hidden by the SDK's retry policy.
NO_RETRIES = [("grpc.enable_retries", 0)]


def put(root: Path, name: str, version: int, source: Path, age: float = 10.0) -> Path:
    """Copy `source` in as NAME/VERSION/model.h5, its mtime `age` seconds ago (0: now, as a copy
    that has just landed)."""
    target = root / name / str(version) / "model.h5"
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, target)
    if age:
        stamp = time.time() - age
        os.utime(target, (stamp, stamp))
    return target


def wait_for(predicate: Callable[[], object], timeout: float = 180, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = predicate()
        if found:
            return found
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def states(client: Client, name: str) -> dict[str, str]:
    """Version -> state name ("AVAILABLE", ...) of one model, as GetModelStatus says."""
    (status,) = client.model_status(name)
    return {v.version: msp.VersionState.Name(v.state).removeprefix("VERSION_STATE_")
            for v in status.versions}


def version_status(client: Client, name: str, version: str) -> msp.VersionStatus:
    (status,) = client.model_status(name)
    return next(v for v in status.versions if v.version == version)


@dataclass
class Served:
    running: RunningServer
    repository: Repository
    registry: ModelRegistry
    failures: list[str]

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.running.port}"

    def client(self, **options) -> Client:
        return Client(self.address, timeout=60, options=NO_RETRIES, **options)

    def stop(self) -> None:
        self.repository.close(timeout=30)
        self.running.stop(None)


def serve_repository(root: Path | None, control: bool = True, drain_seconds: float = 30,
                     **options) -> Served:
    """A real server on port 0 over a repository at `root`, polling off (tests rescan), once the start
    pass is done and health says SERVING."""
    registry = ModelRegistry(drain_seconds=drain_seconds)
    repository = Repository(registry, RepositoryOptions(root=root, poll_seconds=0, **options))
    running = create_server(registry, "127.0.0.1:0", 8, control=ModelControl(repository, control))
    failures = repository.start().result(300)
    running.set_serving(True)
    return Served(running, repository, registry, failures)


LSTMSERVE = str(Path(sys.executable).with_name("lstmserve"))


def serve_process(args: list[str], log: Path, timeout: float = 300) -> tuple[subprocess.Popen, str]:
    """`lstmserve serve ... --port 0` in its own process; (process, address) once health is SERVING."""
    with log.open("w") as stream:
        process = subprocess.Popen([LSTMSERVE, "serve", "--port", "0", "--metrics-port", "0", *args],
                                   stdout=stream, stderr=subprocess.STDOUT)
    try:
        address = wait_for(lambda: _listening(process, log), timeout, "the server to listen")
        with Client(address, timeout=5) as client:
            wait_for(lambda: _serving(process, log, client), timeout, "the server to report SERVING")
    except BaseException:
        stop_process(process)
        raise
    return process, address


def stop_process(process: subprocess.Popen) -> int:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(60)
        except subprocess.TimeoutExpired:
            process.kill()
    return process.wait(30)


def native_threads(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/task"))


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        line = next(line for line in status if line.startswith("VmRSS:"))
    return int(line.split()[1]) / 1024


def _listening(process: subprocess.Popen, log: Path) -> str | None:
    assert process.poll() is None, log.read_text()[-3000:]
    found = re.search(r"listening on (\S+):(\d+)", log.read_text())
    return f"{found[1]}:{found[2]}" if found else None


def _serving(process: subprocess.Popen, log: Path, client: Client) -> bool:
    assert process.poll() is None, log.read_text()[-3000:]
    try:
        return client.health() == "SERVING"
    except Exception:  # noqa: BLE001 (not up yet)
        return False
