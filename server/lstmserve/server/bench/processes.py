"""The benchmark's child processes: the real server, the transport floor, the baseline, the load generator.

Every child is started here, on 127.0.0.1 only, and stopped by its own handle, with a deadline on
every wait, so a failed run never leaves a server behind.
"""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from lstmserve.server.bench.footprint import cpu_seconds

START_TIMEOUT_S = 300  # loading and warming every bucket of the heavy model takes a while on 2 cores


def free_port() -> int:
    """A TCP port on 127.0.0.1 free just now (for a flag that takes a port, such as --metrics-port)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def python(module: str, *args: str) -> list[str]:
    return [sys.executable, "-m", module, *args]


@dataclass(frozen=True)
class ServerProcess:
    """A running `lstmserve serve`: where it listens, its pid, and seconds from its start to SERVING
    (wall, and the CPU time it had used by then)."""

    address: str
    pid: int
    serving_s: float
    serving_cpu_s: float | None


@contextmanager
def real_server(model: str, path: Path, options: list[str], env: dict, log: Path) -> Iterator[ServerProcess]:
    """`lstmserve serve` of one model file on a free port, yielded once health says SERVING."""
    with serve(["--model", f"{model}={path}", *options], env, log) as server:
        yield server


@contextmanager
def serve(arguments: list[str], env: dict, log: Path) -> Iterator[ServerProcess]:
    """`lstmserve serve ARGUMENTS` on a free port, yielded once health says SERVING."""
    command = python("lstmserve.client.cli", "serve", "--metrics-port", "0", *arguments,
                     "--host", "127.0.0.1", "--port", "0")
    with open(log, "w") as sink:
        started = time.monotonic()
        child = subprocess.Popen(command, env=env, stdout=sink, stderr=subprocess.STDOUT)
        try:
            address = _wait_for(lambda: _listening(log), child, "the server to listen")
            _wait_for(lambda: _serving(address), child, "the server to report SERVING")
            yield ServerProcess(address, child.pid, time.monotonic() - started, cpu_seconds(child.pid))
        finally:
            _stop(child)


@contextmanager
def floor_server(response: Path, workers: int, env: dict,
                 stream_response: Path | None = None, decode_streams: bool = False) -> Iterator[str]:
    """The transport floor on a free port; it runs until its stdin closes."""
    command = python("lstmserve.server.bench.floor", str(response), "--workers", str(workers),
                     *(["--stream-response", str(stream_response)] if stream_response else []),
                     *(["--decode-streams"] if decode_streams else []))
    child = subprocess.Popen(command, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        port = child.stdout.readline().strip()
        if not port.isdigit():
            raise RuntimeError("the transport floor server did not start")
        yield f"127.0.0.1:{port}"
    finally:
        child.stdin.close()
        _stop(child)


class Baseline:
    """The in-process baseline's child: its first full measure, and the best batch again on request."""

    def __init__(self, child: subprocess.Popen, log: Path) -> None:
        self._child = child
        self._log = log
        self.first = self._read()

    def again(self) -> dict:
        """The best samples/s of the candidate batch sizes, measured now (the load generator waits)."""
        self._child.stdin.write("\n")
        self._child.stdin.flush()
        return self._read()

    def _read(self) -> dict:
        line = self._child.stdout.readline()
        if not line:
            raise RuntimeError(f"the in-process baseline exited with {self._child.wait(timeout=30)}; "
                               f"see {self._log}")
        return json.loads(line)


@contextmanager
def baseline(path: Path, window_s: float, repeats: int, env: dict, log: Path) -> Iterator[Baseline]:
    """The in-process baseline, alive for the whole sweep; TensorFlow's chatter goes to `log`."""
    command = python("lstmserve.server.bench.baseline", str(path), str(window_s), str(repeats))
    with open(log, "w") as sink:
        child = subprocess.Popen(command, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                 stderr=sink, text=True)
        try:
            yield Baseline(child, log)
        finally:
            child.stdin.close()
            _stop(child)


def load_levels(command: list[str], env: dict, timeout: float, on_line: Callable[[dict], None],
                between_levels: Callable[[int], None]) -> None:
    """Run the load generator, handing each level's JSON line over as it arrives; after every level
    it waits while `between_levels` runs, with no load on the machine."""
    child = subprocess.Popen(command, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    deadline = time.monotonic() + timeout
    try:
        for line in child.stdout:
            record = json.loads(line)
            if "level_done" in record:
                between_levels(record["level_done"])
                child.stdin.write("\n")
                child.stdin.flush()
            else:
                on_line(record)
            if time.monotonic() > deadline:
                raise TimeoutError(f"load generator still running after {timeout:.0f} s")
        if child.wait(timeout=30) != 0:
            raise RuntimeError("load generator failed (see its output above)")
    finally:
        _stop(child)


def _wait_for(probe: Callable[[], object], child: subprocess.Popen, what: str):
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if child.poll() is not None:
            raise RuntimeError(f"gave up waiting for {what}: it exited with {child.returncode}")
        found = probe()
        if found:
            return found
        time.sleep(0.02)  # fine enough to time the start
    raise TimeoutError(f"gave up waiting for {what} after {START_TIMEOUT_S} s")


def _listening(log: Path) -> str | None:
    match = re.search(r"listening on (127\.0\.0\.1:\d+)", log.read_text())
    return match.group(1) if match else None


def _serving(address: str) -> bool:
    with grpc.insecure_channel(address) as channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=2)
        except grpc.RpcError:
            return False
    return reply.status == health_pb2.HealthCheckResponse.SERVING


def _stop(child: subprocess.Popen) -> None:
    if child.poll() is None:
        child.terminate()
        try:
            child.wait(timeout=15)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait(timeout=15)
