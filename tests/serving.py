"""`lstmserve serve` in a process of its own, for tests that need its signals, exit code or memory."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

LSTMSERVE = str(Path(sys.executable).with_name("lstmserve"))


def serve(models: dict[str, Path], log: Path, *flags: str) -> tuple[subprocess.Popen, str]:
    """Start serving `models` (name -> file) on port 0; the process and its address once SERVING."""
    named = [arg for name, path in models.items() for arg in ("--model", f"{name}={path}")]
    with log.open("w") as stream:
        process = subprocess.Popen([LSTMSERVE, "serve", *named, "--port", "0", "--metrics-port", "0", *flags],
                                   stdout=stream, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        assert process.poll() is None, log.read_text()[-3000:]
        found = re.search(r"listening on (\S+):(\d+)", log.read_text())
        if found and health(f"{found[1]}:{found[2]}") == "SERVING":
            return process, f"{found[1]}:{found[2]}"
        time.sleep(0.3)
    process.kill()
    raise AssertionError(log.read_text()[-3000:])


def health(address: str) -> str:
    """The server's overall health status name, or the status code of a failed check."""
    try:
        with grpc.insecure_channel(address) as channel:
            reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
            return health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
    except grpc.RpcError as error:
        return error.code().name


def rss_mb(pid: int) -> float:
    """Resident memory of a process, in MiB."""
    with open(f"/proc/{pid}/status") as status:
        line = next(line for line in status if line.startswith("VmRSS:"))
    return int(line.split()[1]) / 1024
