"""`lstmserve bench`: one run that measures the server and, beside it, the limits it is judged against.

For each model: (a) the compiled model in-process (its best latency and samples/s, measured again
after every level), (b) a bare gRPC server answering with a canned response of the same size, (c) the
real server as a separate process. The load generator sweeps concurrency against (b) and (c)
interleaved, level by level. Footprint: the server's time from process start to SERVING (cold, then
restarted over its compilation cache) and resident memory after warm-up, beside a process that only
imports TensorFlow and Keras.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from pathlib import Path

LEVELS = (1, 2, 4, 8, 16, 32, 64)
QUICK = {"levels": [1, 4], "window": 0.2, "stable_windows": 2, "max_windows": 3,
         "baseline_window": 0.05, "baseline_repeats": 2,
         "sessions": 16, "memory_sessions": 50, "session_warmup": 0.3, "session_window": 0.5}
FULL = {"levels": list(LEVELS), "window": 1.0, "stable_windows": 3, "max_windows": 8,
        "baseline_window": 0.5, "baseline_repeats": 5,
        "sessions": 256, "memory_sessions": 2000, "session_warmup": 2.0, "session_window": 5.0}


def register_bench(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("bench", help="measure the server against the transport and model limits",
                                 description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("bench-results"), help="where JSON and PNG go")
    parser.add_argument("--models", nargs="+", choices=("seed", "heavy", "heavy1", "sessions"),
                        default=["seed", "heavy", "heavy1", "sessions"],
                        help="scenarios: seed, heavy (Predict, --heavy-rows rows a request), heavy1 (the "
                        "heavy model, one sequence a request), sessions (streaming steps)")
    parser.add_argument("--quick", action="store_true", help="two short levels: a smoke test, not a measure")
    parser.add_argument("--levels", type=int, nargs="+", help=f"concurrency levels (default {LEVELS})")
    parser.add_argument("--heavy-rows", type=int, default=16,
                        help="rows per request for the heavy model (the seed sends 1)")
    parser.add_argument("--observability", action="store_true",
                        help="also serve the seed with metrics, access log and token auth on, beside a "
                        "server with them off, and compare")
    parser.add_argument("--workers", type=int, default=32, help="gRPC threads of both servers")
    parser.add_argument("--max-batch", type=int, default=64)
    parser.add_argument("--max-delay-ms", type=float, default=0.0)
    # On 2 cores one goes to the transport's event loop, so the model gets one; 0 leaves TF's default.
    parser.add_argument("--tf-threads", type=int, default=1,
                        help="TensorFlow intra- and inter-op threads of the server and the baseline alike "
                        "(default 1; 0: TensorFlow's default of one per core)")
    parser.add_argument("--scenario", choices=("sweep", "reload", "processes"), default="sweep",
                        help="sweep: the concurrency sweep against the limits (default); reload: new "
                        "versions landing in a served repository under load (bench/reload.py); processes: "
                        "the heavy model under serve --processes 2 vs 1 (bench/fleet.py)")
    parser.add_argument("--callers", type=int, default=16, help="reload: closed-loop callers")
    parser.add_argument("--versions", type=int, default=3, help="reload: new versions that land")
    parser.add_argument("--quiet-seconds", type=float, default=10.0,
                        help="reload: the phase without reloads the latencies are compared with")
    parser.add_argument("--poll-seconds", type=float, default=1.0, help="reload: the server's poll")
    parser.set_defaults(run=run_bench)


def run_bench(args: argparse.Namespace) -> int:
    from lstmserve.server.bench import report
    settings = {**(QUICK if args.quick else FULL), "workers": args.workers, "max_batch": args.max_batch,
                "max_delay_ms": args.max_delay_ms, "tf_threads": args.tf_threads, "quick": args.quick}
    if args.levels:
        settings["levels"] = args.levels
    args.out.mkdir(parents=True, exist_ok=True)
    results = {"machine": _machine(), "settings": settings, "models": {}}
    env = _child_env(args.tf_threads)
    if args.scenario == "reload":
        return _run_reload(args, env)
    if args.scenario == "processes":
        return _run_processes(args, settings, env)
    try:
        paths = _build_models(args.models, args.out / "models", env)
        results["import_floor"] = _import_floor(env)
        results["docker_image_mb"] = _docker_image_mb()
        for name in args.models:
            if name == "sessions":
                from lstmserve.server.bench import sessions
                results["sessions"] = sessions.run(paths[name], settings, env, args.out)
                print(sessions.table(results["sessions"]), flush=True)
                continue
            rows = args.heavy_rows if name == "heavy" else 1
            result = _bench_model(name, paths[name], rows, settings, env, args.out)
            result["footprint"]["import_floor"] = results["import_floor"]
            result["verdicts"] = report.evaluate(name, result)
            results["models"][name] = result
            print(report.table(name, result), flush=True)
            print(report.v2_summary(result), flush=True)
        if args.observability:
            results["observability"] = _bench_observability(settings, env, args.out)
    except (RuntimeError, TimeoutError, OSError) as error:
        print(f"lstmserve bench: {error}", file=sys.stderr)
        return 1
    return _write(results, args.out)


def _bench_observability(settings: dict, env: dict, out: Path) -> dict:
    from lstmserve.server.bench import observability, wire
    path = _build_models(["seed"], out / "models", env)["seed"]
    folder = out / "observability"
    folder.mkdir(exist_ok=True)
    print("[observability] seed served twice: metrics + access log + auth on, and all off ...", flush=True)
    request = wire.write_request("seed", path, 1, folder / "seed.request.bin")
    if settings["quick"]:
        settings = {**settings, "observability_levels": [1, 4], "observability_rounds": 2}
    result = observability.bench_observability(path, settings, env, folder, request)
    print(observability.table(result), flush=True)
    return result


def _run_reload(args: argparse.Namespace, env: dict) -> int:
    from lstmserve.server.bench import reload
    settings = {"callers": args.callers, "versions": args.versions, "quiet_s": args.quiet_seconds,
                "poll_seconds": args.poll_seconds, "tf_threads": args.tf_threads, "machine": _machine()}
    try:
        reload.run(args, settings, env, _build_models(args.models, args.out / "models", env))
    except (RuntimeError, TimeoutError, OSError) as error:
        print(f"lstmserve bench: {error}", file=sys.stderr)
        return 1
    return 0


def _run_processes(args: argparse.Namespace, settings: dict, env: dict) -> int:
    from lstmserve.server.bench import fleet
    try:
        fleet.run(args, settings, env, _build_models(["heavy"], args.out / "models", env))
    except (RuntimeError, TimeoutError, OSError) as error:
        print(f"lstmserve bench: {error}", file=sys.stderr)
        return 1
    return 0


def _write(results: dict, out: Path) -> int:
    from lstmserve.server.bench import plot
    (out / "bench.json").write_text(json.dumps(results, indent=2))
    png = plot.plot(results, out / "bench.png") if results["models"] else None
    print(f"wrote {out / 'bench.json'}" + (f" and {png}" if png else " (no matplotlib: no plot)"))
    return 0


def _bench_model(name: str, path: Path, rows: int, settings: dict, env: dict, out: Path) -> dict:
    from lstmserve.server.bench import processes, wire
    from lstmserve.server.bench.footprint import memory_mb, startup_line
    print(f"[{name}] in-process baseline ...", flush=True)
    with processes.baseline(path, settings["baseline_window"], settings["baseline_repeats"], env,
                            out / f"{name}.baseline.log") as baseline:
        result = {"rows_per_request": rows, "baseline": {**baseline.first, "rechecks": []},
                  "floor": [], "server": [], "v2": []}
        request = wire.write_request(name, path, rows, out / f"{name}.request.bin")
        options = _server_options(settings, _fresh(out / f"{name}.compilation-cache"))
        log = out / f"{name}.server.log"
        print(f"[{name}] starting the server (loads and compiles every bucket) ...", flush=True)
        with processes.real_server(name, path, options, env, log) as server:
            response = wire.capture_response(server.address, request, out / f"{name}.response.bin")
            footprint = {"serving_s": server.serving_s, "serving_cpu_s": server.serving_cpu_s,
                         "startup": startup_line(log),
                         "after_warmup": memory_mb(server.pid)}
            # The same inputs over the Open Inference Protocol, to the same server, in the same sweep.
            v2_request = wire.write_v2_request(server.address, request, out / f"{name}.v2-request.bin")
            with processes.floor_server(response, settings["workers"], env) as floor:
                command = _load_command(name, rows, request, server.address, floor, settings) + [
                    "--target", f"v2={server.address}", "--call", f"v2={wire.MODEL_INFER}:{v2_request}"]
                processes.load_levels(command, env, timeout=120 * len(settings["levels"]) + 60,
                                      on_line=lambda line: _record(name, result, line),
                                      between_levels=lambda level: _recheck(result, level, baseline))
            footprint["after_sweep"] = memory_mb(server.pid)
    print(f"[{name}] restarting the server over its compilation cache ...", flush=True)
    with processes.real_server(name, path, options, env, out / f"{name}.restart.log") as again:
        footprint["restart_serving_s"] = again.serving_s
        footprint["restart_serving_cpu_s"] = again.serving_cpu_s
    result["footprint"] = footprint
    return result


def _server_options(settings: dict, cache: Path) -> list[str]:
    return ["--workers", str(settings["workers"]), "--max-batch", str(settings["max_batch"]),
            "--max-delay-ms", str(settings["max_delay_ms"]), "--compilation-cache", str(cache)]


def _fresh(folder: Path) -> Path:
    """An empty folder (a cold start compiles everything), private as the server requires."""
    import shutil
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(mode=0o700, parents=True)
    return folder


def _import_floor(env: dict) -> dict:
    from lstmserve.server.bench.footprint import FLOOR_RUNS, import_floor
    print(f"importing TensorFlow and Keras alone, {FLOOR_RUNS} times (the start-up floor) ...", flush=True)
    return import_floor(env)


def _docker_image_mb() -> float | None:
    from lstmserve.server.bench.footprint import docker_image_mb
    size = docker_image_mb()
    print("docker image 'lstmserve': " + (f"{size:.0f} MB" if size is not None else
                                          "not here (build deploy/Dockerfile to measure it)"), flush=True)
    return size


def _recheck(result: dict, level: int, baseline) -> None:
    # The machine's speed drifts over minutes; sampling the limit between levels compares the
    # server with the limit of the same minutes, not of the moment before the sweep began.
    result["baseline"]["rechecks"].append({"after_level": level, **baseline.again()})


def _load_command(name, rows, request, server, floor, settings) -> list[str]:
    from lstmserve.server.bench.processes import python
    return python("lstmserve.server.bench.load", "--target", f"floor={floor}", "--target", f"server={server}",
                  "--request", str(request), "--model", name, "--rows", str(rows),
                  "--levels", *map(str, settings["levels"]), "--window", str(settings["window"]),
                  "--stable-windows", str(settings["stable_windows"]),
                  "--max-windows", str(settings["max_windows"]), "--pause")


def _record(name: str, result: dict, line: dict) -> None:
    target = line.pop("target")
    result[target].append(line)
    print(f"[{name}] {target:6} c={line['concurrency']:<3} "
          f"{line['requests_per_s']:8.0f} req/s  p50 {line['p50_ms']:.2f} ms  p99 {line['p99_ms']:.2f} ms",
          flush=True)


def _build_models(names: list[str], folder: Path, env: dict) -> dict[str, Path]:
    import subprocess

    from lstmserve.server.bench.processes import python
    subprocess.run(python("lstmserve.server.bench.models", str(folder), *names), env=env, check=True,
                   capture_output=True, timeout=600)
    return {name: folder / f"{name}.h5" for name in names}


def _child_env(tf_threads: int | None) -> dict:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    if tf_threads:
        env["TF_NUM_INTRAOP_THREADS"] = str(tf_threads)
        env["TF_NUM_INTEROP_THREADS"] = str(tf_threads)
    return env


def _machine() -> dict:
    from importlib.metadata import version

    from lstmserve.server.process import tensorflow_distribution
    return {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
            "grpcio": version("grpcio"), "tensorflow": tensorflow_distribution()}
