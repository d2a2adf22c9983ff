"""`lstmserve serve` and `lstmserve inspect`."""

from __future__ import annotations

import argparse
import ipaddress
import json
import logging
import os
import re
import signal
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from lstmserve.server import supervisor
from lstmserve.server.fleet import FLEET_CONTROL_REASON, WorkerLink

log = logging.getLogger("lstmserve.server")


def register_serve(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("serve", help="serve .h5 models over gRPC",
                                 description="Load .h5 models and answer gRPC predictions.")
    parser.add_argument("--model", action="append", default=[], metavar="[NAME=]PATH",
                        help="model file to serve (repeatable); the name defaults to the file stem")
    parser.add_argument("--name", help="name of the model when one --model is given")
    _add_repository_options(parser)
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (0.0.0.0 for all)")
    parser.add_argument("--port", type=int, default=8500, help="port (0 picks a free one)")
    parser.add_argument("--workers", type=int, default=32,
                        help="threads for handlers that are not coroutines (calls run on one event loop)")
    _add_batching_options(parser)
    _add_session_options(parser)
    _add_call_limit_options(parser)
    _add_load_options(parser)
    _add_security_options(parser)
    _add_operations_options(parser)
    supervisor.add_options(parser)
    parser.set_defaults(run=run_serve)


def register_inspect(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("inspect", help="load an .h5 file as the server would and describe it",
                                 description="Load a model file exactly as `serve` does, print its "
                                 "metadata and a prediction on zeros.")
    parser.add_argument("path", type=Path)
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")
    _add_load_options(parser)
    parser.set_defaults(run=run_inspect)


def _add_batching_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--max-batch", type=int, default=64,
                        help="most rows run together in one model call (1 turns batching off)")
    parser.add_argument("--max-delay-ms", type=float, default=0.0,
                        help="how long a request may wait for others to join its batch "
                        "(0: run whatever is queued as soon as the model is free)")
    parser.add_argument("--queue-capacity", type=int, default=1024,
                        help="requests waiting per model before new ones get RESOURCE_EXHAUSTED")


def _add_session_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--session-idle-seconds", type=float, default=60.0,
                        help="a streaming session ends after this long without a call (default 60)")
    parser.add_argument("--max-sessions", type=int, default=10_000,
                        help="most open sessions per model; more get RESOURCE_EXHAUSTED (default 10000)")
    parser.add_argument("--max-horizon", type=int, default=1_000,
                        help="most steps one Forecast may ask for (default 1000)")
    parser.add_argument("--max-steps-per-message", type=int, default=10_000,
                        help="most steps one session message (or Forecast history) may carry (default 10000)")


def _session_limits(args: argparse.Namespace):
    from lstmserve.server.serving.sessions import SessionLimits
    return SessionLimits(args.session_idle_seconds, args.max_sessions, args.max_horizon,
                         args.max_steps_per_message)


def _add_call_limit_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--max-concurrent-calls", type=int, default=1024, metavar="N",
                        help="calls answered at once; more get RESOURCE_EXHAUSTED with a retry hint "
                        "(health checks are never counted or refused) (default 1024)")
    parser.add_argument("--max-inflight-bytes", type=byte_size, default="256MiB", metavar="SIZE",
                        help="bytes of requests being answered at once; a request that would go past it "
                        "gets RESOURCE_EXHAUSTED (at least --max-message-bytes; default 256 MiB)")
    parser.add_argument("--max-message-bytes", type=byte_size, default="64MiB", metavar="SIZE",
                        help="largest request or response message (default 64 MiB)")
    parser.add_argument("--grace-seconds", type=float, default=10.0, metavar="S",
                        help="on SIGTERM or SIGINT, how long calls already accepted may take to finish "
                        "(new ones get UNAVAILABLE); a second signal exits at once (default 10)")


def byte_size(text: str) -> int:
    """'1048576', '64MiB', '1GiB', '512KiB' (or KB/MB/GB, read as the binary units) as a byte count."""
    found = re.fullmatch(r"\s*(\d+)\s*([KMG]i?B?)?\s*", text, re.IGNORECASE)
    if not found:
        raise argparse.ArgumentTypeError(f"{text!r} is not a size; write e.g. 1048576, 64MiB or 1GiB")
    unit = (found[2] or " ")[0].upper()
    return int(found[1]) * {" ": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30}[unit]


def _call_limits(args: argparse.Namespace):
    from lstmserve.server.transport.admission import CallLimits
    return CallLimits(args.max_concurrent_calls, args.max_inflight_bytes, args.max_message_bytes)


def _engine_config(args: argparse.Namespace):
    from lstmserve.server.engine.base import BatchConfig, EngineConfig
    batching = BatchConfig(args.max_batch, args.max_delay_ms / 1000, args.queue_capacity)
    return EngineConfig(batching=batching, jit_compile=not args.no_xla)


def _add_operations_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--metrics-port", type=int, default=9500,
                        help="Prometheus metrics over HTTP at /metrics on this port (0: off)")
    parser.add_argument("--metrics-host", help="address the metrics listen on (default: --host)")
    parser.add_argument("--access-log", metavar="FILE|-",
                        help="one JSON line per call (time, peer, method, model, version, mode, rows, "
                        "status, latency, incident) to FILE, or to standard output with '-'")
    parser.add_argument("--log-format", choices=("text", "json"), default="text",
                        help="the server log as text lines or JSON objects")
    parser.add_argument("--otel", action="store_true",
                        help="OpenTelemetry spans for every call (and a prediction's decode, queue wait, "
                        "model run and encode), exported over OTLP as the OTEL_EXPORTER_OTLP_* variables "
                        "say; needs lstmserve-server[otel]")


def _observer(args: argparse.Namespace, models, sessions, worker: WorkerLink | None = None):
    """Metrics and access log as the flags ask; the metrics port is bound here, before models load (by
    the supervisor, for a worker of several)."""
    from lstmserve.server.transport.metrics import Metrics
    from lstmserve.server.transport.observe import Observer, access_logger
    metrics = Metrics(models, sessions, shared=worker is not None) if args.metrics_port else None
    index = worker.index if worker else None
    if metrics is not None and worker is None:
        host = args.metrics_host or args.host
        try:
            port = metrics.serve(host.strip("[]"), args.metrics_port)
        except OSError as error:
            raise OSError(f"cannot serve metrics on {_address(host, args.metrics_port)} ({error.strerror}); "
                          "--metrics-port 0 turns them off") from None
        log.info("metrics at http://%s/metrics", _address(host, port))
    return Observer(metrics, access_logger(args.access_log, index) if args.access_log else None)


def _add_security_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--tls-cert", type=Path, metavar="PEM",
                        help="serve TLS only, with this certificate chain (needs --tls-key)")
    parser.add_argument("--tls-key", type=Path, metavar="PEM", help="private key of --tls-cert")
    parser.add_argument("--tls-client-ca", type=Path, metavar="PEM",
                        help="mutual TLS: require client certificates signed by this CA")
    parser.add_argument("--auth-token-file", type=Path, metavar="FILE",
                        help="require 'authorization: Bearer <token>' on every call but health; one token "
                        "per line, '#' comments; the file is read again within a second of a change")


def _security(args: argparse.Namespace, observer) -> dict:
    """create_server's credentials and interceptors from the flags; ValueError/OSError on bad files."""
    from lstmserve.server.transport.auth import TokenAuthInterceptor, TokenFile, server_credentials
    if (args.tls_cert is None) != (args.tls_key is None):
        raise ValueError("--tls-cert and --tls-key go together")
    if args.tls_client_ca is not None and args.tls_cert is None:
        raise ValueError("--tls-client-ca needs --tls-cert and --tls-key (mutual TLS is TLS first)")
    credentials = (server_credentials(args.tls_cert, args.tls_key, args.tls_client_ca)
                   if args.tls_cert else None)
    interceptors = []
    if args.auth_token_file:
        interceptor = TokenAuthInterceptor(TokenFile(args.auth_token_file))
        if observer.metrics is not None:
            interceptor.on_rejected = observer.metrics.count_auth_rejection
        interceptors.append(interceptor)
    if args.otel:
        from lstmserve.server.transport import tracing
        interceptors = tracing.enable() + interceptors  # the call's span also covers a refused call
    return {"credentials": credentials, "interceptors": interceptors}


def exposure_warnings(host: str, tls: bool, authenticated: bool) -> list[str]:
    """What `serve` warns about when it listens beyond this machine without TLS or authentication."""
    try:
        if ipaddress.ip_address(host.strip("[]")).is_loopback:
            return []
    except ValueError:
        if host == "localhost":
            return []
    warnings = []
    if not tls:
        warnings.append(f"listening on {host} without TLS: requests, answers and any token cross the "
                        "network readable (--tls-cert/--tls-key)")
    if not authenticated:
        warnings.append(f"listening on {host} without authentication: anyone who reaches the port may "
                        "call it (--auth-token-file or --tls-client-ca)")
    return warnings


def _add_load_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--custom-objects", action="append", default=[], metavar="MODULE",
                        help="import MODULE and allow the layer classes it defines (repeatable)")
    parser.add_argument("--allow-code", action="store_true",
                        help="trust Lambda layers (they run Python code stored in the file)")
    parser.add_argument("--no-xla", action="store_true", help="trace without XLA compilation")
    parser.add_argument("--max-model-bytes", type=byte_size, default="1GiB", metavar="SIZE",
                        help="largest model file, and most bytes its weights may declare (default 1 GiB)")
    parser.add_argument("--max-attribute-bytes", type=byte_size, default="16MiB", metavar="SIZE",
                        help="largest HDF5 attribute of a model file: its config, lstmserve metadata, lists "
                        "of weight names (default 16 MiB)")
    parser.add_argument("--max-config-depth", type=int, default=100, metavar="LEVELS",
                        help="deepest nesting of a model config's JSON (default 100)")
    parser.add_argument("--compilation-cache", type=Path, metavar="DIR",
                        help="keep XLA's compiled buckets under DIR and load them from there on the next "
                        "start (a restart or another replica on the same TensorFlow and processor); off "
                        "by default. DIR holds machine code the server runs: give it to this user alone")
    parser.add_argument("--log-level", choices=("debug", "info", "warning", "error"), default=None,
                        help="lstmserve's log level (serve: info, inspect: warning); debug also shows "
                        "TensorFlow's and Keras's own lines")


def _add_repository_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model-dir", type=Path, metavar="DIR",
                        help="model repository to serve and watch: DIR/NAME/VERSION/<file>.h5, VERSION a "
                        "positive integer, optional DIR/NAME/config.json")
    parser.add_argument("--poll-seconds", type=float, default=5.0,
                        help="how often DIR is scanned for new, changed and removed versions (0: only at "
                        "start, on SIGHUP and on ReloadRepository)")
    parser.add_argument("--no-model-control", action="store_true",
                        help="refuse ModelService's LoadModel, UnloadModel and ReloadRepository (and V2's "
                        "repository load and unload) with PERMISSION_DENIED")
    parser.add_argument("--keep-going", action="store_true",
                        help="serve the models that load even when others fail at start (they show as "
                        "FAILED in the model status); by default the server exits")
    parser.add_argument("--max-versions", type=int, default=8,
                        help="most versions of one model served at once (version policy, labels and "
                        "LoadModel together)")
    parser.add_argument("--drain-seconds", type=float, default=30.0,
                        help="how long a version out of service waits for its calls and sessions before "
                        "it is closed anyway")
    parser.add_argument("--trust-model-config", action="store_true",
                        help="let a model's config.json set allow_code and custom_objects (code runs with "
                        "the server's rights: only for a repository that only the operator can write)")


def _model_repository(args: argparse.Namespace, metrics=None, fleet: bool = False):
    """The registry's repository (the --model files and --model-dir) and what ModelService may do."""
    from lstmserve.server.errors import InvalidInput
    from lstmserve.server.serving.model_config import ModelSettings
    from lstmserve.server.serving.registry import ModelRegistry
    from lstmserve.server.serving.repository import Repository, RepositoryOptions
    from lstmserve.server.serving.repository_files import check_name
    from lstmserve.server.transport.model_service import ModelControl

    named = _named_paths(args.model, args.name)
    if not named and args.model_dir is None:
        raise ValueError("nothing to serve: give --model-dir DIR, --model PATH, or both")
    if args.model_dir is not None and not args.model_dir.is_dir():
        raise ValueError(f"--model-dir {args.model_dir} is not a directory")
    root = args.model_dir.resolve() if args.model_dir is not None else None
    if args.poll_seconds < 0 or args.drain_seconds < 0 or args.max_versions < 1:
        raise ValueError("--poll-seconds and --drain-seconds are at least 0, --max-versions at least 1")
    try:
        files = {check_name(name): path for name, path in named}
    except InvalidInput as error:
        raise ValueError(f"--model: {error}; give it a plain name with NAME=PATH") from None
    _load_options(args)  # imports the --custom-objects modules now: a missing one stops the start
    defaults = ModelSettings(batching=args.engine.batching, custom_objects=tuple(args.custom_objects),
                             allow_code=args.allow_code)
    options = RepositoryOptions(root=root, files=files, defaults=defaults, engine=args.engine,
                                limits=_file_limits(args), poll_seconds=args.poll_seconds,
                                max_versions=args.max_versions, trust_config=args.trust_model_config)
    if metrics is not None:
        options = replace(options, observe_load=metrics.observe_load,
                          count_load_failure=metrics.count_load_failure)
    repository = Repository(ModelRegistry(drain_seconds=args.drain_seconds), options)
    if fleet:
        return repository, ModelControl(repository, enabled=False, off_reason=FLEET_CONTROL_REASON)
    return repository, ModelControl(repository, enabled=not args.no_model_control)


def _start_models(running, repository, keep_going: bool, startup,
                  worker: WorkerLink | None) -> threading.Event:
    """Load everything in the background; SERVING once done (a worker of several: ready, and SERVING
    once every worker is). A failure at start stops the server (set on the returned event) unless
    --keep-going, which serves the rest."""
    failed, began = threading.Event(), time.perf_counter()

    def started(future) -> None:
        failures = future.result()
        if failures and not keep_going:
            log.error("%d model version(s) failed to load at start; stopping (--keep-going serves the "
                      "others)", len(failures))
            failed.set()
            return
        if failures:
            log.warning("serving without %d model version(s) that failed to load (--keep-going); they "
                        "show as FAILED in the model status", len(failures))
        running.set_serving(True)
        startup.seconds["load, compile and warm the models"] = time.perf_counter() - began
        _log_startup(startup, dict(repository.load_seconds))
        if worker is not None:
            worker.ready()

    repository.start().add_done_callback(started)
    return failed


def _rescan_on_sighup(repository) -> None:
    # The handler only queues a scan (SimpleQueue.put is safe in a signal handler); the repository's
    # own thread does the work.
    signal.signal(signal.SIGHUP, lambda *_: repository.rescan())


def run_serve(args: argparse.Namespace) -> int:
    if args.processes != 1 and args.fleet_worker is None:
        return supervisor.supervise(args, sys.argv[1:])  # never imports TensorFlow
    from lstmserve.server.phases import Phases, since_process_start
    startup = Phases()
    startup.seconds["interpreter and command line"] = since_process_start()
    from lstmserve.server.process import configure_logging, tune_for_serving
    worker = WorkerLink.from_flag(args.fleet_worker)
    configure_logging(args.log_level or "info", json_lines=args.log_format == "json",
                      worker=worker.index if worker else None)
    try:
        _prepare_tensorflow(args, startup)
    except (ValueError, OSError, RuntimeError) as error:
        print(f"lstmserve serve: {error}", file=sys.stderr)
        return 2
    with startup.time("import lstmserve, grpc"):
        from lstmserve.server.errors import ModelLoadError
        from lstmserve.server.transport.server import create_server

    try:
        args.engine = _engine_config(args)
        repository = running = None  # the metrics read both when scraped, once they exist
        observer = _observer(args, lambda: repository.registry.loaded() if repository else [],
                             lambda: running.sessions.counts() if running else {}, worker)
        repository, control = _model_repository(args, observer.metrics, fleet=worker is not None)
        security = _security(args, observer)
        running = create_server(repository.registry, _address(args.host, args.port), args.workers,
                                control=control, observer=observer, sessions=_session_limits(args),
                                limits=_call_limits(args), reuse_port=worker is not None, **security)
    except (ValueError, ModelLoadError, OSError, RuntimeError) as error:
        print(f"lstmserve serve: {error}", file=sys.stderr)
        return 2
    for warning in exposure_warnings(args.host, args.tls_cert is not None,
                                     bool(args.auth_token_file or args.tls_client_ca)):
        log.warning("%s", warning)
    tune_for_serving()
    log.info("listening on %s:%d (NOT_SERVING until models are loaded)", args.host, running.port)
    if worker is not None:
        worker.attach(running)
    failed = _start_models(running, repository, args.keep_going, startup, worker)
    _rescan_on_sighup(repository)
    code = _wait_for_stop(running, failed, args.grace_seconds)
    repository.close()
    log.info("models closed")
    return code


def _prepare_tensorflow(args: argparse.Namespace, startup) -> None:
    """What TensorFlow reads once (the compilation cache), then TensorFlow and Keras themselves."""
    from lstmserve.server.process import import_keras, require_tensorflow, use_compilation_cache
    require_tensorflow()
    if args.compilation_cache is not None:
        folder = use_compilation_cache(args.compilation_cache)
        log.info("XLA compilation cache: %s", folder)
    with startup.time("import tensorflow, keras"):
        import_keras()


def _log_startup(startup, models: dict) -> None:
    """One line with the seconds from process start to SERVING, phase by phase, and each model's total
    (its own phases are in its "loaded" line); then what compiling freed goes back to the system."""
    from lstmserve.server.phases import since_process_start
    from lstmserve.server.process import release_freed_memory
    each = ", ".join(f"model '{name}' v{version} {seconds:.2f}"
                     for (name, version), seconds in models.items())
    log.info("every model given at start is loaded and warm: SERVING %.2f s after the process started: %s%s",
             since_process_start(), startup.describe(), f" ({each})" if each else "")
    release_freed_memory()


def _address(host: str, port: int) -> str:
    # An IPv6 literal needs brackets before its port ("::" alone would read as host ":" port ":").
    return f"[{host}]:{port}" if ":" in host and not host.startswith("[") else f"{host}:{port}"


def _wait_for_stop(running, failed: threading.Event, grace: float) -> int:
    """Serve until a signal (or a model failing to load), then drain; a second signal exits at once."""
    stop = threading.Event()

    def on_signal(signum: int, frame) -> None:
        if stop.is_set():
            log.warning("second %s: exiting now, without waiting for calls in flight",
                        signal.Signals(signum).name)
            os._exit(128 + signum)
        stop.set()

    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, on_signal)
    while not stop.wait(0.2) and not failed.is_set():
        pass
    log.info("draining: health NOT_SERVING, new calls UNAVAILABLE, up to %.1f s for %d calls in flight",
             grace, running.admission.calls)
    if running.drain(grace):
        log.info("stopped: every accepted call was answered")
    else:
        log.warning("stopped after %.1f s with calls still running (--grace-seconds)", grace)
    return 1 if failed.is_set() else 0


def run_inspect(args: argparse.Namespace) -> int:
    from lstmserve.server.phases import Phases
    from lstmserve.server.process import configure_logging
    configure_logging(args.log_level or "warning")
    try:
        _prepare_tensorflow(args, Phases())
    except (ValueError, OSError, RuntimeError) as error:
        print(f"lstmserve inspect: {error}", file=sys.stderr)
        return 2
    from lstmserve.server.engine.base import EngineConfig
    from lstmserve.server.errors import ServingError
    from lstmserve.server.loading.load import load_model
    try:
        limits = _file_limits(args)
    except ValueError as error:
        print(f"lstmserve inspect: {error}", file=sys.stderr)
        return 2
    try:
        model = load_model(args.path, options=_load_options(args),
                           engine=EngineConfig(jit_compile=not args.no_xla), limits=limits)
        report = describe(model)
        model.close()
    except ServingError as error:
        print(f"lstmserve inspect: {error}", file=sys.stderr)
        return 1
    print(json.dumps(report, indent=2) if args.json else _as_text(report))
    return 0


def describe(model) -> dict:
    """What `inspect` reports: the file and which Keras wrote it, its layers as written and as served,
    signature, heads, preparation, compatibility steps and a prediction on zeros."""
    from lstmserve.server.serving.heads import Mode
    zeros = {spec.name: np.zeros([1] + [d or 1 for d in spec.shape[1:]], spec.dtype)
             for spec in model.raw_inputs}
    prediction = model.predict(zeros, Mode.VALUES)
    source = model.source
    return {
        "file": str(source.path), "sha256": source.sha256,
        "size_bytes": source.size_bytes, "keras_version": source.keras_version,
        "backend": source.backend, "task": model.task,
        "written_by": source.written_by,
        "file_layers": list(source.file_layers),
        "layers": list(model.layers),
        "engine": model.engine.describe(),
        "inputs": [spec.describe() + f" '{spec.name}'" for spec in model.inputs],
        "outputs": [f"{h.spec.describe()} '{h.name}' activation={h.activation} "
                    f"modes={[m.value for m in h.modes]} labels={list(h.labels)}"
                    for h in model.heads],
        "preparation": model.preparation.describe(),
        "sessions": f"{model.sessions.kind}: {model.sessions.reason}"
                    + (f" ({model.sessions.state_bytes} bytes per session)" if model.sessions.kind != "none"
                       else ""),
        "forecast": _forecast_line(model),
        "compatibility_steps": list(model.compatibility_steps),
        "prediction_on_zeros": {name: out.tolist() for name, out in prediction.outputs.items()},
    }


def _forecast_line(model) -> str:
    support = model.forecasting
    if support is None or not support.supported:
        return f"no: {support.reason}" if support is not None else "no"
    names = model.preparation.raw_features
    feature = names[support.feature] if support.feature < len(names) else f"feature {support.feature}"
    beyond = "not beyond it" if support.features > 1 else f"{support.method(support.horizon + 1)} beyond it"
    return f"{feature}, {support.horizon} step(s) per answer ({beyond})"


def _as_text(report: dict) -> str:
    lines = []
    for key, value in report.items():
        if isinstance(value, list):
            lines.append(f"{key}:")
            lines.extend(f"  - {item}" for item in value)
        else:
            lines.append(f"{key}: {value}")
    return "\n".join(lines)


def _named_paths(models: list[str], name: str | None) -> list[tuple[str, Path]]:
    if name and len(models) > 1:
        raise ValueError("--name applies to a single --model; use NAME=PATH for several")
    named = []
    for spec in models:
        model_name, _, path = spec.rpartition("=") if "=" in spec else ("", "", spec)
        named.append((name or model_name or Path(path).stem, Path(path)))
    names = [n for n, _ in named]
    if len(set(names)) != len(names):
        raise ValueError(f"model names must be unique; got {names}")
    return named


def _load_options(args: argparse.Namespace):
    from lstmserve.server.loading.build import LoadOptions
    return LoadOptions.create(tuple(args.custom_objects), args.allow_code)


def _file_limits(args: argparse.Namespace):
    from lstmserve.server.loading.modelfile import FileLimits
    if min(args.max_model_bytes, args.max_config_depth, args.max_attribute_bytes) < 1:
        raise ValueError("--max-model-bytes, --max-attribute-bytes and --max-config-depth must be 1 or more")
    return FileLimits(max_model_bytes=args.max_model_bytes, max_config_depth=args.max_config_depth,
                      max_attribute_bytes=args.max_attribute_bytes)
