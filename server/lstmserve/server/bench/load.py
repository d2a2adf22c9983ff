"""Closed-loop load generator: C callers each send a pre-serialized request as soon as the last returns.

Runs as its own process on grpc.aio, so it never shares the server's interpreter lock; requests are
serialized once and responses are not parsed, so each call costs the generator as little as gRPC
allows. Each level runs in windows until the last few agree, then reports one JSON line per level.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections import Counter

import grpc
import numpy as np

from lstmserve.server.bench.footprint import cpu_seconds
from lstmserve.v1 import stats_pb2 as spb

PREDICT = "/lstmserve.v1.PredictionService/Predict"
STATS = "/lstmserve.v1.StatsService/GetModelStats"


class Level:
    """Latencies of the current window, swapped out by the clock."""

    def __init__(self) -> None:
        self.current: list[float] = []
        self.errors: Counter = Counter()
        self.running = True


async def caller(call, payload: bytes, level: Level, metadata: tuple) -> None:
    while level.running:
        started = time.perf_counter()
        try:
            await call(payload, timeout=30, metadata=metadata)
        except grpc.aio.AioRpcError as error:
            level.errors[error.code().name] += 1
            continue
        level.current.append(time.perf_counter() - started)


async def run_level(channels: list, method: str, payload: bytes, concurrency: int, args,
                    pid: int | None = None) -> dict:
    """One level's figures; with the server's `pid`, also its CPU time per answered call over the
    measured windows (what a saturated machine's peak is bound by, and shared machines stretch least)."""
    # Bytes in, bytes out: no (de)serialization here. Callers take the connections in turn.
    calls = [channel.unary_unary(method) for channel in channels]
    level = Level()
    metadata = (("authorization", f"Bearer {args.token}"),) if args.token else ()
    tasks = [asyncio.create_task(caller(calls[i % len(calls)], payload, level, metadata))
             for i in range(concurrency)]
    await asyncio.sleep(args.window)  # warm-up window, discarded
    cpu_before = cpu_seconds(pid) if pid else None
    windows, stable = await _windows_until_stable(level, args)
    cpu = cpu_seconds(pid) - cpu_before if cpu_before is not None else None
    level.running = False
    await asyncio.gather(*tasks)
    answered = sum(len(w[1]) for w in windows)
    return {**_summary(concurrency, windows[-args.stable_windows:], args.rows),
            "errors": dict(level.errors), "windows": len(windows), "stable": stable,
            **({"server_cpu_us_per_call": cpu / answered * 1e6} if cpu is not None and answered else {})}


async def _windows_until_stable(level: Level, args) -> tuple[list, bool]:
    """(seconds, latencies, generator cpu seconds) per window, and whether the last few agreed."""
    windows = []
    while len(windows) < args.max_windows:
        level.current = []
        started, cpu = time.perf_counter(), time.process_time()
        await asyncio.sleep(args.window)
        windows.append((time.perf_counter() - started, level.current, time.process_time() - cpu))
        if len(windows) >= args.stable_windows and _stable(windows[-args.stable_windows:], args.tolerance):
            return windows, True
    return windows, False


def _stable(windows, tolerance: float) -> bool:
    rates = [len(latencies) / seconds for seconds, latencies, _ in windows]
    return (max(rates) - min(rates)) <= tolerance * float(np.median(rates))


def _summary(concurrency: int, kept: list, rows: int) -> dict:
    seconds = sum(w[0] for w in kept)
    latencies = np.concatenate([w[1] for w in kept]) * 1e3
    p50, p90, p99 = np.percentile(latencies, [50, 90, 99]) if latencies.size else (0.0, 0.0, 0.0)
    requests = latencies.size / seconds
    return {"concurrency": concurrency, "requests_per_s": requests, "samples_per_s": requests * rows,
            "p50_ms": float(p50), "p90_ms": float(p90), "p99_ms": float(p99),
            "generator_cpu": sum(w[2] for w in kept) / seconds}


async def read_stats(channel, model: str) -> dict:
    request = spb.GetModelStatsRequest(model={"name": model})
    call = channel.unary_unary(STATS, request_serializer=spb.GetModelStatsRequest.SerializeToString,
                               response_deserializer=spb.GetModelStatsResponse.FromString)
    (stats,) = (await call(request, timeout=10)).models
    return {"requests": stats.requests, "rows": stats.rows, "batches": stats.batches,
            "sizes": {c.rows: c.batches for c in stats.batch_sizes}}


def batch_sizes(before: dict, after: dict) -> dict:
    """Batches the server ran during one level: count, mean and max rows, and the histogram."""
    sizes = {rows: n - before["sizes"].get(rows, 0) for rows, n in after["sizes"].items()}
    sizes = {rows: n for rows, n in sorted(sizes.items()) if n > 0}
    batches = after["batches"] - before["batches"]
    mean = (after["rows"] - before["rows"]) / batches if batches else 0.0
    return {"batches": batches, "mean_rows": mean, "max_rows": max(sizes, default=0), "histogram": sizes}


async def main(args) -> None:
    with open(args.request, "rb") as f:
        predict = (PREDICT, f.read())
    targets = dict(t.split("=", 1) for t in args.target)
    calls = {name: predict for name in targets} | _other_calls(args.call)
    channels = {name: _connections(address, args.connections) for name, address in targets.items()}
    pids = {name: int(pid) for name, pid in (spec.split("=", 1) for spec in args.pid)}
    for concurrency in args.levels:
        for round_ in range(args.rounds):
            # Interleaved, so drift hits every target alike; in several rounds, each in the other order
            # than the last, so that no target is always measured first.
            order = list(channels.items()) if round_ % 2 == 0 else list(channels.items())[::-1]
            for name, connections in order:
                result = await _measured_level(name, connections, calls[name], concurrency, args,
                                               pids.get(name))
                print(json.dumps({**result, "round": round_}), flush=True)
        if args.pause:  # the benchmark re-measures the in-process baseline on a quiet machine
            print(json.dumps({"level_done": concurrency}), flush=True)
            await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    for connections in channels.values():
        for channel in connections:
            await channel.close()


def _connections(address: str, count: int) -> list:
    """One channel, or `count` on TCP connections of their own (gRPC shares one connection between
    channels of the same target and options unless told not to): a server of several processes on one
    SO_REUSEPORT port gets its connections, not its calls, spread over them."""
    if count == 1:
        return [grpc.aio.insecure_channel(address)]
    return [grpc.aio.insecure_channel(address, options=[("grpc.use_local_subchannel_pool", 1)])
            for _ in range(count)]


def _other_calls(specs: list[str]) -> dict[str, tuple[str, bytes]]:
    """--call NAME=METHOD:FILE: that target is sent FILE's bytes on METHOD (V2 ModelInfer, say)."""
    calls = {}
    for spec in specs:
        name, _, rest = spec.partition("=")
        method, _, path = rest.rpartition(":")
        with open(path, "rb") as f:
            calls[name] = (method, f.read())
    return calls


async def _measured_level(name: str, channels: list, call: tuple[str, bytes], concurrency: int,
                          args, pid: int | None) -> dict:
    counted = name == "server"
    before = await read_stats(channels[0], args.model) if counted else None
    result = await run_level(channels, *call, concurrency, args, pid)
    if counted:
        result["batches"] = batch_sizes(before, await read_stats(channels[0], args.model))
    return {"target": name, **result}


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    parser.add_argument("--target", action="append", required=True, metavar="NAME=HOST:PORT")
    parser.add_argument("--request", required=True, help="file holding one serialized PredictRequest")
    parser.add_argument("--call", action="append", default=[], metavar="NAME=METHOD:FILE",
                        help="send target NAME this file's bytes on this method instead (repeatable)")
    parser.add_argument("--model", required=True)
    parser.add_argument("--rows", type=int, default=1)
    parser.add_argument("--levels", type=int, nargs="+", default=[1, 2, 4, 8, 16, 32, 64])
    parser.add_argument("--window", type=float, default=1.0)
    parser.add_argument("--stable-windows", type=int, default=3)
    parser.add_argument("--max-windows", type=int, default=8)
    parser.add_argument("--tolerance", type=float, default=0.1)
    parser.add_argument("--token", help="send 'authorization: Bearer TOKEN' with every call")
    parser.add_argument("--connections", type=int, default=1,
                        help="TCP connections per target, callers spread over them (default 1)")
    parser.add_argument("--rounds", type=int, default=1,
                        help="measure every level this many times, targets interleaved (default 1)")
    parser.add_argument("--pid", action="append", default=[], metavar="NAME=PID",
                        help="target NAME's server process: report its CPU time per call (repeatable)")
    parser.add_argument("--pause", action="store_true",
                        help="after each level, say so and wait for a line on stdin")
    return parser.parse_args(argv)


if __name__ == "__main__":
    asyncio.run(main(parse(sys.argv[1:])))
