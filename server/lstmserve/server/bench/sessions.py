"""The sessions scenario of `lstmserve bench`: streaming steps against their limits, in one run.

A 2 x LSTM(64) model of 8 features with free timesteps, served by `lstmserve serve`; a floor server
answering each stream message with a canned message of the real answer's size; a second floor that also
decodes each step's tensors and encodes an answer as the server does (no session, no model: what the
messages alone cost); and a load generator (bench/session_load.py) measuring, in turn: 256 streams
stepping one step at a time on both floors and on the server, 256 callers of stateless Predict resending
the last 500 steps, one stream on each, a one-step Predict, and the server's memory per open session.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import grpc
import numpy as np

from lstmserve.server.bench import processes
from lstmserve.server.bench.models import HEAVY_FEATURES, SESSION_HISTORY
from lstmserve.v1 import model_pb2 as mpb
from lstmserve.v1 import prediction_service_pb2 as pb
from lstmserve.v1 import session_service_pb2 as spb

TARGETS = {  # name: (bound, comparison)
    "steps/s at 256 sessions vs transport floor": (0.7, ">="),
    "steps/s at 256 sessions vs stateless Predict of 500 steps": (2.0, ">="),
    "p50 of one step at 1 session vs a 1-step Predict": (1.5, "<="),
    "errors": (0, "<="),
}
REPORTED = ("decoding floor vs transport floor (256 streams)", "steps/s at 256 sessions vs decoding floor")


def run(path: Path, settings: dict, env: dict, out: Path) -> dict:
    """Every phase's figures, the derived ratios and verdicts."""
    long_request = _predict_request(out / "sessions.predict500.bin", SESSION_HISTORY)
    one_request = _predict_request(out / "sessions.predict1.bin", 1)
    options = ["--workers", str(settings["workers"])]
    print("[sessions] starting the server (compiles the model and its step function) ...", flush=True)
    log = out / "sessions.server.log"
    with processes.real_server("sessions", path, options, env, log) as server:
        address, pid = server.address, server.pid
        canned = _capture_stream_answer(address, out / "sessions.stream-response.bin")
        with processes.floor_server(one_request, settings["workers"], env, canned) as floor, \
                processes.floor_server(one_request, settings["workers"], env, canned, True) as decoding:
            phases = _load(address, pid, floor, decoding, long_request, one_request, settings, env)
    result = {"phases": phases, "ratios": ratios(phases)}
    result["verdicts"] = [_verdict(name, result["ratios"][name], bound, op)
                          for name, (bound, op) in TARGETS.items() if result["ratios"].get(name) is not None]
    return result


def _verdict(name: str, value: float, bound: float, op: str) -> dict:
    met = value >= bound if op == ">=" else value <= bound
    return {"target": name, "value": value, "bound": f"{op} {bound}", "met": met}


def _ratio(a, b):
    return a / b if a is not None and b else None


def ratios(phases: dict) -> dict:
    server, floor = phases["server_streams"], phases["floor_streams"]
    one, predict_one = phases["server_one_stream"], phases["predict_1_step"]
    cpu_step = server["server_cpu_ms_per_answer"]
    cpu_call = phases["predict_500_steps"]["server_cpu_ms_per_answer"]
    return {
        "steps/s at 256 sessions vs transport floor": _ratio(server["answers_per_s"], floor["answers_per_s"]),
        # The part of the floor's rate the step messages' own decoding and encoding leave (no model).
        "decoding floor vs transport floor (256 streams)":
            _ratio(phases["decoding_floor_streams"]["answers_per_s"], floor["answers_per_s"]),
        "steps/s at 256 sessions vs decoding floor":
            _ratio(server["answers_per_s"], phases["decoding_floor_streams"]["answers_per_s"]),
        "steps/s at 256 sessions vs stateless Predict of 500 steps":
            _ratio(server["answers_per_s"], phases["predict_500_steps"]["answers_per_s"]),
        "p50 of one step at 1 session vs a 1-step Predict": _ratio(one["p50_ms"], predict_one["p50_ms"]),
        "errors": sum(p.get("errors", 0) for p in phases.values()),
        "server CPU ms per step (256 sessions)": cpu_step,
        "server CPU ms per stateless 500-step call": cpu_call,
        "server CPU ms per 1-step Predict": predict_one["server_cpu_ms_per_answer"],
        "bytes per open session (RSS growth)": phases.get("memory", {}).get("bytes_per_session"),
    }


def _load(address: str, pid: int, floor: str, decoding: str, long_request: Path, one_request: Path,
          settings: dict, env: dict) -> dict:
    command = processes.python(
        "lstmserve.server.bench.session_load", "--server", address, "--floor", floor,
        "--decoding-floor", decoding, "--server-pid",
        str(pid), "--model", "sessions", "--features", str(HEAVY_FEATURES), "--predict-long",
        str(long_request), "--predict-one", str(one_request), "--sessions", str(settings["sessions"]),
        "--memory-sessions", str(settings["memory_sessions"]), "--warmup", str(settings["session_warmup"]),
        "--window", str(settings["session_window"]))
    finished = subprocess.run(command, env=env, capture_output=True, text=True, timeout=1800)
    if finished.returncode != 0:
        raise RuntimeError(f"session load generator failed: {finished.stderr[-2000:]}")
    phases = {}
    for line in finished.stdout.splitlines():
        record = json.loads(line)
        phases[record.pop("phase")] = record
        print(f"[sessions] {line}", flush=True)
    return phases


def _predict_request(out: Path, steps: int) -> Path:
    from lstmserve.client.tensors import to_tensor
    x = np.random.default_rng(0).normal(size=(1, steps, HEAVY_FEATURES)).astype(np.float32)
    request = pb.PredictRequest(model=mpb.ModelSpec(name="sessions"), mode=mpb.PREDICTION_MODE_VALUES,
                                inputs={"": to_tensor(x)})
    out.write_bytes(request.SerializeToString())
    return out


def _capture_stream_answer(address: str, out: Path) -> Path:
    """The server's real answer to one step in a stream, for the floor to repeat byte for byte."""
    from lstmserve.client.tensors import to_tensor
    step = spb.StepRequest(inputs={"": to_tensor(np.zeros((1, HEAVY_FEATURES), np.float32))},
                           mode=mpb.PREDICTION_MODE_VALUES)
    messages = [spb.StreamRequest(open=spb.CreateSessionRequest(model=mpb.ModelSpec(name="sessions"))),
                spb.StreamRequest(step=step)]
    with grpc.insecure_channel(address) as channel:
        from lstmserve.v1 import session_service_pb2_grpc as spb_grpc
        answers = list(spb_grpc.SessionServiceStub(channel).StreamSession(iter(messages), timeout=60))
    if answers[-1].WhichOneof("message") != "step":
        raise RuntimeError(f"the server answered a step with {answers[-1]}")
    out.write_bytes(answers[-1].SerializeToString())
    return out


def table(result: dict) -> str:
    lines = ["== sessions: 2 x LSTM(64), 8 features, free timesteps; streaming one step at a time ==",
             f"{'phase':22} {'callers':>7} {'answers/s':>10} {'p50 ms':>8} {'p99 ms':>8} {'cpu ms/ans':>10}"]
    for name, phase in result["phases"].items():
        if name == "memory":
            continue
        figures = (phase["p50_ms"], phase["p99_ms"], phase["server_cpu_ms_per_answer"])
        lines.append(f"{name:22} {phase['callers']:>7} {phase['answers_per_s']:>10.0f} "
                     + " ".join(_num(v) for v in figures))
    memory = result["phases"].get("memory")
    if memory:
        lines.append(f"memory: {memory['bytes_per_session']:.0f} bytes of server RSS per open session "
                     f"({memory['sessions']} sessions)")
    for name in REPORTED:
        if result["ratios"].get(name) is not None:
            lines.append(f"  {name}: {result['ratios'][name]:.3g} (reported)")
    for verdict in result["verdicts"]:
        mark = "met" if verdict["met"] else "NOT met"
        lines.append(f"  {verdict['target']}: {verdict['value']:.3g} (target {verdict['bound']}): {mark}")
    return "\n".join(lines)


def _num(value) -> str:
    return f"{value:>8.3f}" if value is not None else f"{'-':>8}"
