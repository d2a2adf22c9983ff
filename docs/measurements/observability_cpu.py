"""Issue 15: server CPU time per answered Predict with metrics, the access log and token authentication each
on alone and all together, against all off (seed model, each server alone, rounds interleaved). CPU time is
what a busy shared machine stretches least.

Usage: .venv/bin/python docs/measurements/observability_cpu.py models/seed.h5 OUT_DIR [ROUNDS] [VARIANTS]
(VARIANTS: comma-separated names, e.g. "plain,access log"; default all)
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path
from statistics import median

import grpc

from lstmserve.server.bench import processes, wire
from lstmserve.server.bench.footprint import cpu_seconds
from lstmserve.v1 import prediction_service_pb2 as pb
from lstmserve.v1 import prediction_service_pb2_grpc as pb_grpc

CALLS, CALLERS, TOKEN = 6000, 8, "bench-token"


def variants(out: Path) -> dict[str, list[str]]:
    access, tokens = ["--access-log", str(out / "access.jsonl")], ["--auth-token-file", str(out / "tokens")]
    return {"plain": [], "metrics": ["--metrics-port", str(processes.free_port())], "access log": access,
            "auth": tokens, "all three": ["--metrics-port", str(processes.free_port()), *access, *tokens]}


async def drive(address: str, request: pb.PredictRequest, calls: int) -> None:
    async with grpc.aio.insecure_channel(address) as channel:
        stub = pb_grpc.PredictionServiceStub(channel)

        async def caller() -> None:
            for _ in range(calls // CALLERS):
                await stub.Predict(request, metadata=(("authorization", f"Bearer {TOKEN}"),), timeout=30)

        await asyncio.gather(*(caller() for _ in range(CALLERS)))


def main(model: Path, out: Path, rounds: int, wanted: list[str] | None) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "tokens").write_text(TOKEN + "\n")
    env = {**os.environ, "TF_NUM_INTRAOP_THREADS": "1", "TF_NUM_INTEROP_THREADS": "1"}
    request = pb.PredictRequest.FromString(
        wire.write_request("seed", model, 1, out / "seed.request.bin").read_bytes())
    results: dict[str, list[float]] = {}
    for round_ in range(rounds):
        for name, flags in variants(out).items():
            if wanted and name not in wanted:
                continue
            with processes.real_server("seed", model, flags, env, out / f"{name}.log") as server:
                asyncio.run(drive(server.address, request, 800))  # warm
                before = cpu_seconds(server.pid)
                asyncio.run(drive(server.address, request, CALLS))
                per_call = (cpu_seconds(server.pid) - before) / CALLS * 1e6
            results.setdefault(name, []).append(per_call)
            print(f"round {round_} {name:10s} {per_call:6.0f} us of server CPU per call", flush=True)
    plain = median(results["plain"]) if "plain" in results else None
    for name, values in results.items():
        ratio = f" ({median(values) / plain:.3f}x plain)" if plain else ""
        print(f"{name:10s} median {median(values):6.0f} us/call{ratio}; runs {[round(v) for v in values]}")


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3]) if len(sys.argv) > 3 else 2,
         sys.argv[4].split(",") if len(sys.argv) > 4 else None)
