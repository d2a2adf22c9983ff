"""Load generator of the sessions scenario: streams stepping one step at a time, and stateless Predict.

Runs as its own process on grpc.aio; messages are serialized once, answers are not parsed. Every phase
prints one JSON line: answers per second and latencies over a measured window after a warm-up, and the
server's CPU seconds in that window (read from /proc of the server's pid: same machine).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time

import grpc
import numpy as np

from lstmserve.server.bench.footprint import cpu_seconds, memory_mb
from lstmserve.v1 import model_pb2 as mpb
from lstmserve.v1 import session_service_pb2 as spb

STREAM = "/lstmserve.v1.SessionService/StreamSession"
PREDICT = "/lstmserve.v1.PredictionService/Predict"
CREATE = "/lstmserve.v1.SessionService/CreateSession"
STEP = "/lstmserve.v1.SessionService/Step"
END = "/lstmserve.v1.SessionService/EndSession"


class Window:
    """Latencies since the window opened; callers append while `running`."""

    def __init__(self) -> None:
        self.latencies: list[float] = []
        self.errors = 0
        self.running = True


async def stream_caller(channel, open_bytes: bytes, step_bytes: bytes, window: Window) -> None:
    call = channel.stream_stream(STREAM)(timeout=600)
    await call.write(open_bytes)
    await call.read()
    while window.running:
        started = time.perf_counter()
        await call.write(step_bytes)
        answer = await call.read()
        if answer is grpc.aio.EOF:
            window.errors += 1
            return
        window.latencies.append(time.perf_counter() - started)
    await call.done_writing()
    while await call.read() is not grpc.aio.EOF:
        pass


async def unary_caller(channel, payload: bytes, window: Window) -> None:
    call = channel.unary_unary(PREDICT)
    while window.running:
        started = time.perf_counter()
        try:
            await call(payload, timeout=120)
        except grpc.aio.AioRpcError:
            window.errors += 1
            continue
        window.latencies.append(time.perf_counter() - started)


async def phase(name: str, callers, args, least: float = 0.0) -> dict:
    """Warm up, then measure one window (at least `least` seconds): answers/s, percentiles, server CPU
    per answer."""
    window = Window()
    tasks = [asyncio.create_task(make(window)) for make in callers]
    await asyncio.sleep(max(args.warmup, least / 2))
    window.latencies, cpu, started = [], server_cpu(args.server_pid), time.perf_counter()
    await asyncio.sleep(max(args.window, least))
    elapsed, done = time.perf_counter() - started, len(window.latencies)
    cpu_used = server_cpu(args.server_pid) - cpu
    latencies = np.array(window.latencies) * 1e3
    window.running = False
    await asyncio.gather(*tasks, return_exceptions=True)
    return {"phase": name, "callers": len(callers), "answers_per_s": done / elapsed,
            "p50_ms": float(np.percentile(latencies, 50)) if done else None,
            "p99_ms": float(np.percentile(latencies, 99)) if done else None,
            "server_cpu_ms_per_answer": cpu_used * 1e3 / done if done and args.server_pid else None,
            "errors": window.errors}


async def memory_per_session(channel, create_bytes: bytes, step_for, sessions: int, pid: int) -> dict:
    """RSS growth of the server per open session (created and stepped once), then ends them."""
    create, step, end = (channel.unary_unary(m) for m in (CREATE, STEP, END))
    before = server_rss(pid)
    ids = []
    for _ in range(sessions):
        info = spb.SessionInfo.FromString(await create(create_bytes, timeout=30))
        await step(step_for(info.session_id), timeout=30)
        ids.append(info.session_id)
    after = server_rss(pid)
    for session_id in ids:
        await end(spb.SessionRequest(session_id=session_id).SerializeToString(), timeout=30)
    return {"phase": "memory", "sessions": sessions, "rss_growth_bytes": after - before,
            "bytes_per_session": (after - before) / sessions}


async def channel_call(channel, method: str, payload: bytes) -> bytes:
    return await channel.unary_unary(method)(payload, timeout=600)


def server_cpu(pid: int | None) -> float:
    return (cpu_seconds(pid) or 0.0) if pid else 0.0


def server_rss(pid: int) -> int:
    """Resident bytes of the server (0 where /proc cannot tell)."""
    memory = memory_mb(pid)
    return round(memory["rss_mb"] * 2**20) if memory and memory["rss_mb"] else 0


def messages(model: str, features: int) -> dict[str, bytes]:
    from lstmserve.client.tensors import to_tensor
    rng = np.random.default_rng(0)
    step = spb.StepRequest(inputs={"": to_tensor(rng.normal(size=(1, features)).astype(np.float32))},
                           mode=mpb.PREDICTION_MODE_VALUES)
    open_request = spb.CreateSessionRequest(model=mpb.ModelSpec(name=model))
    return {"open": spb.StreamRequest(open=open_request).SerializeToString(),
            "step": spb.StreamRequest(step=step).SerializeToString(),
            "create": open_request.SerializeToString(), "step_request": step}


async def main(args) -> None:
    server = grpc.aio.insecure_channel(args.server)
    floor = grpc.aio.insecure_channel(args.floor)
    decoding = grpc.aio.insecure_channel(args.decoding_floor) if args.decoding_floor else None
    wire = messages(args.model, args.features)
    with open(args.predict_long, "rb") as f:
        long_request = f.read()
    with open(args.predict_one, "rb") as f:
        one_request = f.read()

    def streams(channel, count):
        return [lambda w, c=channel: stream_caller(c, wire["open"], wire["step"], w)] * count

    def unary(channel, payload, count):
        return [lambda w, c=channel: unary_caller(c, payload, w)] * count

    def step_for(session_id):
        request = spb.StepRequest()
        request.CopyFrom(wire["step_request"])
        request.session_id = session_id
        return request.SerializeToString()

    await channel_call(server, PREDICT, long_request)  # the first 500-step call compiles its shape
    plan = [("floor_streams", streams(floor, args.sessions)),
            *([("decoding_floor_streams", streams(decoding, args.sessions))] if decoding else []),
            ("server_streams", streams(server, args.sessions)),
            ("predict_500_steps", unary(server, long_request, args.sessions)),
            ("floor_one_stream", streams(floor, 1)), ("server_one_stream", streams(server, 1)),
            ("predict_1_step", unary(server, one_request, 1))]
    for name, callers in plan:
        # A call of 500 steps takes a good part of a second under load: a short window would see none.
        least = 3.0 if name == "predict_500_steps" else 0.0
        print(json.dumps(await phase(name, callers, args, least)), flush=True)
    if args.server_pid:
        print(json.dumps(await memory_per_session(server, wire["create"], step_for, args.memory_sessions,
                                                  args.server_pid)), flush=True)
    await server.close()
    await floor.close()
    if decoding is not None:
        await decoding.close()


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    parser.add_argument("--server", required=True)
    parser.add_argument("--floor", required=True)
    parser.add_argument("--decoding-floor", help="a floor that decodes steps and encodes answers")
    parser.add_argument("--server-pid", type=int, default=0)
    parser.add_argument("--model", required=True)
    parser.add_argument("--features", type=int, default=8)
    parser.add_argument("--predict-long", required=True, help="a serialized PredictRequest of 500 steps")
    parser.add_argument("--predict-one", required=True, help="a serialized PredictRequest of one step")
    parser.add_argument("--sessions", type=int, default=256)
    parser.add_argument("--memory-sessions", type=int, default=2000)
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--window", type=float, default=5.0)
    return parser.parse_args(argv)


if __name__ == "__main__":
    asyncio.run(main(parse(sys.argv[1:])))
