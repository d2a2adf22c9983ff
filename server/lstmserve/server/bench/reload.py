"""`lstmserve bench --scenario reload`: new versions landing in a served model repository under load.

For each model: a repository holding version 1, a real `lstmserve serve --model-dir` process on it, and
closed-loop callers. After a quiet phase, new versions land one at a time (the file copied in). Each is
timed from the moment its file is complete to its first answer, and the callers' latencies are split
between calls that started while nothing was reloading and calls that started during a reload (from a
landing until the version it replaced is closed). Both come from one run, so drift hits them alike.
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import time
from pathlib import Path

import grpc
import numpy as np

from lstmserve.v1 import model_service_pb2 as msp
from lstmserve.v1 import prediction_service_pb2 as pb

PREDICT = "/lstmserve.v1.PredictionService/Predict"
STATUS = "/lstmserve.v1.ModelService/GetModelStatus"
WARM_UP_S = 3.0
PAUSE_S = 3.0  # quiet between reloads, so each reload's window holds its own effect only
WAIT_S = 300.0


class Calls:
    """Every call's start, latency and answering version (0 for a failed call, with its code)."""

    def __init__(self) -> None:
        self.records: list[tuple[float, float, int]] = []
        self.errors: dict[str, int] = {}
        self.newest = 0
        self.running = True

    def latencies_ms(self, windows: list[tuple[float, float]]) -> np.ndarray:
        return np.array([latency * 1e3 for start, latency, version in self.records
                         if version and any(a <= start <= b for a, b in windows)])


async def _caller(call, payload: bytes, calls: Calls) -> None:
    while calls.running:
        started = time.perf_counter()
        try:
            response = await call(payload, timeout=60)
        except grpc.aio.AioRpcError as error:
            calls.errors[error.code().name] = calls.errors.get(error.code().name, 0) + 1
            calls.records.append((started, time.perf_counter() - started, 0))
            continue
        version = int(response.model.version)
        calls.newest = max(calls.newest, version)
        calls.records.append((started, time.perf_counter() - started, version))


async def _until(predicate, what: str) -> float:
    deadline = time.perf_counter() + WAIT_S
    while not await predicate():
        if time.perf_counter() > deadline:
            raise TimeoutError(f"gave up waiting for {what} after {WAIT_S:.0f} s")
        await asyncio.sleep(0.02)
    return time.perf_counter()


async def _state(status_call, name: str, version: int) -> int:
    reply = await status_call(msp.GetModelStatusRequest(name=name), timeout=30)
    states = {v.version: v.state for v in reply.models[0].versions}
    return states.get(str(version), msp.VERSION_STATE_UNSPECIFIED)


async def measure(address: str, payload: bytes, root: Path, name: str, source: Path,
                  settings: dict) -> dict:
    """The quiet phase, then each new version landing; the calls of both phases and each reload's times."""
    channel = grpc.aio.insecure_channel(address, options=[("grpc.enable_retries", 0)])
    call = channel.unary_unary(PREDICT, response_deserializer=pb.PredictResponse.FromString)
    status_call = channel.unary_unary(STATUS, request_serializer=msp.GetModelStatusRequest.SerializeToString,
                                      response_deserializer=msp.GetModelStatusResponse.FromString)
    calls = Calls()
    tasks = [asyncio.create_task(_caller(call, payload, calls)) for _ in range(settings["callers"])]
    await asyncio.sleep(WARM_UP_S)
    quiet = (time.perf_counter(), time.perf_counter() + settings["quiet_s"])
    await asyncio.sleep(settings["quiet_s"])
    reloads = []
    for version in range(2, settings["versions"] + 2):
        landed = await asyncio.to_thread(_land, root, name, version, source)
        served = await _until(lambda v=version: _answered(calls, v), f"version {version} answering")
        closed = await _until(lambda v=version: _closed(status_call, name, v - 1),
                              f"version {version - 1} closed")
        reloads.append({"version": version, "landed": landed, "served_after_s": served - landed,
                        "previous_closed_after_s": closed - landed})
        await asyncio.sleep(PAUSE_S)
    calls.running = False
    await asyncio.gather(*tasks)
    await channel.close()
    return _summary(calls, quiet, reloads)


async def _answered(calls: Calls, version: int) -> bool:
    return calls.newest >= version


async def _closed(status_call, name: str, version: int) -> bool:
    return await _state(status_call, name, version) == msp.VERSION_STATE_UNLOADED


def _land(root: Path, name: str, version: int, source: Path) -> float:
    """Copy a new version in; the moment its file is complete."""
    target = root / name / str(version) / source.name
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, target)
    return time.perf_counter()


def _summary(calls: Calls, quiet: tuple[float, float], reloads: list[dict]) -> dict:
    windows = [(r["landed"], r["landed"] + r["previous_closed_after_s"]) for r in reloads]
    quiet_ms, reload_ms = calls.latencies_ms([quiet]), calls.latencies_ms(windows)
    phases = {"without_reload": _percentiles(quiet_ms), "during_reload": _percentiles(reload_ms)}
    ratio = (phases["during_reload"]["p99_ms"] / phases["without_reload"]["p99_ms"]
             if quiet_ms.size and reload_ms.size else None)
    for reload in reloads:
        del reload["landed"]
    return {"reloads": reloads, "phases": phases, "p99_during_vs_without": ratio, "errors": calls.errors}


def _percentiles(latencies_ms: np.ndarray) -> dict:
    if not latencies_ms.size:
        return {"calls": 0, "p50_ms": None, "p99_ms": None}
    p50, p99 = np.percentile(latencies_ms, [50, 99])
    return {"calls": int(latencies_ms.size), "p50_ms": float(p50), "p99_ms": float(p99)}


def load_times(log: Path) -> dict[str, float]:
    """Version -> seconds the server spent loading it, from its log."""
    found = re.findall(r"version (\d+) loaded from \S+ in ([\d.]+) s", log.read_text())
    return {version: float(seconds) for version, seconds in found}


def bench_model(name: str, path: Path, rows: int, settings: dict, env: dict, out: Path) -> dict:
    from lstmserve.server.bench import processes, wire
    root = out / f"{name}.repository"
    shutil.rmtree(root, ignore_errors=True)
    (root / name / "1").mkdir(parents=True)
    shutil.copyfile(path, root / name / "1" / path.name)
    payload = wire.write_request(name, path, rows, out / f"{name}.request.bin").read_bytes()
    log = out / f"{name}.reload.log"
    arguments = ["--model-dir", str(root), "--poll-seconds", str(settings["poll_seconds"])]
    print(f"[{name}] starting the server on a repository ...", flush=True)
    with processes.serve(arguments, env, log) as server:
        result = asyncio.run(measure(server.address, payload, root, name, path, settings))
    loads = load_times(log)
    for reload in result["reloads"]:
        reload["load_s"] = loads.get(str(reload["version"]))
    result["rows_per_request"] = rows
    return result


def table(name: str, result: dict) -> str:
    lines = [f"== {name}: reload under load =="]
    for r in result["reloads"]:
        lines.append(f"version {r['version']}: answering {r['served_after_s']:.2f} s after its file landed "
                     f"(server load {r['load_s'] or 0:.2f} s); previous version closed after "
                     f"{r['previous_closed_after_s']:.2f} s")
    for phase, p in result["phases"].items():
        lines.append(f"{phase.replace('_', ' '):15} {p['calls']:6} calls  p50 {p['p50_ms'] or 0:7.2f} ms  "
                     f"p99 {p['p99_ms'] or 0:7.2f} ms")
    ratio = result["p99_during_vs_without"]
    lines.append(f"p99 during / without reload: {ratio:.2f}x; failed calls: {result['errors'] or 0}"
                 if ratio else f"failed calls: {result['errors'] or 0}")
    return "\n".join(lines)


def run(args, settings: dict, env: dict, paths: dict[str, Path]) -> dict:
    results = {}
    for name in args.models:
        rows = 1 if name == "seed" else args.heavy_rows
        results[name] = bench_model(name, paths[name], rows, settings, env, args.out)
        print(table(name, results[name]), flush=True)
    (args.out / "reload.json").write_text(json.dumps({"settings": settings, "models": results}, indent=2))
    print(f"wrote {args.out / 'reload.json'}")
    return results
