"""`lstmserve bench --scenario processes`: the heavy model served by `serve --processes 2` beside
`serve --processes 1`, both up at once, under one load generator with levels interleaved, so the ratio of
their peaks comes from the same minutes. The generator opens CONNECTIONS connections per target (one would
reach one worker only: SO_REUSEPORT spreads connections, not calls), and the same number to both. Two
request sizes: --heavy-rows rows (16 by default), and the one sequence per request most callers send.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import grpc

from lstmserve.server.bench import processes, wire
from lstmserve.server.bench.observability import verdict_lines
from lstmserve.v1 import stats_pb2 as spb
from lstmserve.v1 import stats_pb2_grpc as spb_grpc

CONNECTIONS = 16
SCALING_BOUND = 0.8  # the target per process, up to the core count, on a machine with cores to spare


def run(args, settings: dict, env: dict, paths: dict[str, Path]) -> dict:
    """Serve the heavy model both ways, sweep, print the table, write processes.json."""
    out = args.out / "processes"
    out.mkdir(parents=True, exist_ok=True)
    path = paths["heavy"]
    options = ["--workers", str(settings["workers"]), "--max-batch", str(settings["max_batch"]),
               "--max-delay-ms", str(settings["max_delay_ms"])]
    levels = settings["levels"]
    result: dict = {"settings": {**settings, "connections": CONNECTIONS}, "rows": {}}
    print("[processes] starting the heavy model with --processes 1 and --processes 2 ...", flush=True)
    with processes.real_server("heavy", path, [*options, "--processes", "1"], env, out / "one.log") as one, \
            processes.real_server("heavy", path, [*options, "--processes", "2"], env, out / "two.log") as two:
        for rows in dict.fromkeys((args.heavy_rows, 1)):
            request = wire.write_request("heavy", path, rows, out / f"heavy.{rows}.request.bin")
            result["rows"][rows] = _sweep(one, two, request, rows, levels, settings, env)
            print(table(rows, result["rows"][rows]), flush=True)
        result["worker_requests"] = worker_requests(two)
    print(f"[processes] requests each worker of --processes 2 answered: {result['worker_requests']}")
    (args.out / "processes.json").write_text(json.dumps(result, indent=2))
    print(f"wrote {args.out / 'processes.json'}")
    return result


def _sweep(one: str, two: str, request: Path, rows: int, levels: list[int], settings: dict,
           env: dict) -> dict:
    sweep: dict = {"one": [], "two": []}
    command = processes.python(
        "lstmserve.server.bench.load", "--target", f"one={one}", "--target", f"two={two}",
        "--request", str(request), "--model", "heavy", "--rows", str(rows), "--levels", *map(str, levels),
        "--window", str(settings["window"]), "--stable-windows", str(settings["stable_windows"]),
        "--max-windows", str(settings["max_windows"]), "--connections", str(CONNECTIONS))
    processes.load_levels(command, env, timeout=120 * len(levels) + 60,
                          on_line=lambda line: sweep[line.pop("target")].append(line),
                          between_levels=lambda level: None)
    sweep["verdicts"] = verdicts(sweep)
    return sweep


def verdicts(sweep: dict) -> list[dict]:
    rate = "requests_per_s"
    scaling = max(level[rate] for level in sweep["two"]) / max(level[rate] for level in sweep["one"])
    first = min(sweep["one"], key=lambda level: level["concurrency"])["concurrency"]
    p50 = {name: next(level["p50_ms"] for level in sweep[name] if level["concurrency"] == first)
           for name in ("one", "two")}
    cores = os.cpu_count() or 1
    judged = cores >= 4  # two workers' model threads, their event loops and the load generator
    errors = sum(sum(level["errors"].values()) for name in ("one", "two") for level in sweep[name])
    return [
        {"target": "peak req/s: --processes 2 vs 1", "value": scaling,
         "bound": f">= {2 * SCALING_BOUND} with >= 4 cores" if judged
         else f"reported ({cores} cores: not judged)", "met": scaling >= 2 * SCALING_BOUND or not judged},
        {"target": f"p50 at concurrency {first}: --processes 2 minus 1 (ms)",
         "value": p50["two"] - p50["one"], "bound": "reported", "met": True},
        {"target": "errors at any level", "value": errors, "bound": "0", "met": errors == 0},
    ]


def worker_requests(address: str, connections: int = CONNECTIONS) -> list[int]:
    """The heavy model's request count as each worker reports it (StatsService over fresh connections;
    each worker counts only what it answered): distinct readings, one per worker reached."""
    readings = set()
    for _ in range(connections):
        with grpc.insecure_channel(address, options=[("grpc.use_local_subchannel_pool", 1)]) as channel:
            reply = spb_grpc.StatsServiceStub(channel).GetModelStats(
                spb.GetModelStatsRequest(model={"name": "heavy"}), timeout=10)
        readings.add(reply.models[0].requests)
    return sorted(readings)


def table(rows: int, sweep: dict) -> str:
    two = {level["concurrency"]: level for level in sweep["two"]}
    lines = [f"== heavy, {rows} row(s) per request: --processes 1 (one) vs 2 (two), "
             f"{CONNECTIONS} connections each ==",
             f"{'conc':>4} | {'one req/s':>9} {'p50 ms':>7} {'gen cpu':>7} | {'two req/s':>9} {'p50 ms':>7} "
             f"{'gen cpu':>7} | {'two/one':>7}"]
    for level in sweep["one"]:
        other = two.get(level["concurrency"], {})
        ratio = other.get("requests_per_s", 0) / level["requests_per_s"] if level["requests_per_s"] else 0
        lines.append(f"{level['concurrency']:>4} | {level['requests_per_s']:>9.0f} {level['p50_ms']:>7.2f} "
                     f"{level['generator_cpu']:>7.2f} | {other.get('requests_per_s', 0):>9.0f} "
                     f"{other.get('p50_ms', 0):>7.2f} {other.get('generator_cpu', 0):>7.2f} | {ratio:>7.2f}")
    return "\n".join(lines + verdict_lines(sweep["verdicts"]))
