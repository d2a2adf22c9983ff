"""Issue 18: where a streamed step's server CPU goes, in one process without gRPC, against the budget the
transport floor leaves (`lstmserve bench --models sessions` measures the floors).

Loads a model (the sessions bench model: 2 x LSTM(64), 8 features, free timesteps), opens SESSIONS
sessions and steps them all, one step each at a time, through the servicer's own per-message path
(SessionServicer._stream_message: find the session, decode the step, check it, batch it with the other
sessions' steps, run the step function, keep the state, encode the answer); then the same messages'
decoding and encoding alone, and the step function alone at the batch sizes the streams form.

Usage: .venv/bin/python docs/measurements/session_costs.py MODEL.h5 [SESSIONS]
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from statistics import median

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from lstmserve.client.tensors import fill_tensor, from_tensor  # noqa: E402
from lstmserve.server.bench.models import HEAVY_FEATURES  # noqa: E402
from lstmserve.server.bench.session_load import messages  # noqa: E402
from lstmserve.server.loading.load import load_model  # noqa: E402
from lstmserve.server.process import freeze_heap  # noqa: E402
from lstmserve.server.serving.registry import ModelRegistry  # noqa: E402
from lstmserve.server.serving.sessions import SessionManager  # noqa: E402
from lstmserve.server.transport.session_servicer import SessionServicer  # noqa: E402
from lstmserve.v1 import session_service_pb2 as spb  # noqa: E402

ROUNDS = 100


class Context:
    """What _stream_message asks of a gRPC context: only abort, for an error that ends the stream."""

    async def abort(self, code, message):
        raise RuntimeError(f"{code}: {message}")


def cpu_us_per(calls: int, run) -> float:
    started = time.process_time()
    run()
    return (time.process_time() - started) / calls * 1e6


def session_path(servicer: SessionServicer, manager: SessionManager, step: bytes, sessions: int) -> float:
    async def stream(session) -> None:
        for _ in range(ROUNDS):
            answer = await servicer._stream_message(session, spb.StreamRequest.FromString(step), Context())
            answer.SerializeToString()

    async def run() -> None:
        opened = [manager.create("sessions") for _ in range(sessions)]
        await asyncio.gather(*(stream(session) for session in opened))
        for session in opened:
            manager.discard(session, "done")

    asyncio.run(run())  # warm
    return median(cpu_us_per(sessions * ROUNDS, lambda: asyncio.run(run())) for _ in range(3))


def wire_only(step: bytes, answer: spb.StreamResponse) -> float:
    outputs = {name: from_tensor(t) for name, t in answer.step.outputs.items()}

    def run() -> None:
        for _ in range(20_000):
            request = spb.StreamRequest.FromString(step)
            {name: from_tensor(t) for name, t in request.step.inputs.items()}
            response = spb.StreamResponse()
            response.step.session_id = answer.step.session_id
            for name, array in outputs.items():
                fill_tensor(response.step.outputs[name], array)
            response.SerializeToString()
    return cpu_us_per(20_000, run)


def step_function(model, rows: int) -> float:
    stepper, support = model.sessions.stepper, model.sessions
    x = np.zeros((rows, 1, HEAVY_FEATURES), np.float32)
    state = np.zeros((rows, support.state_floats), np.float32)
    stepper.engine.predict([x, state])
    return cpu_us_per(rows * 200, lambda: [stepper.engine.predict([x, state]) for _ in range(200)])


def main(path: str, sessions: int) -> None:
    model = load_model(path, "sessions")
    registry = ModelRegistry()
    registry.add(model)
    manager = SessionManager(registry)
    servicer = SessionServicer(manager)
    step = messages("sessions", HEAVY_FEATURES)["step"]
    freeze_heap()  # as serve does once its models are loaded
    first = spb.StreamRequest.FromString(step)
    answer = asyncio.run(servicer._stream_message(manager.create("sessions"), first, Context()))
    whole = session_path(servicer, manager, step, sessions)
    print(f"whole per-message path, {sessions} sessions: {whole:.1f} us of CPU per step (median of 3)")
    print(f"decode the step and encode its answer alone: {wire_only(step, answer):.1f} us per step")
    for rows in (1, 16, 64, 256):
        print(f"step function alone at {rows:>3} sessions: {step_function(model, rows):.1f} us per step")


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 256)
