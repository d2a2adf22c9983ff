"""`lstmserve serve` (its flags in serve_flags.py) and the entry point of `lstmserve inspect`
(inspect_command.py): start the transport, load the models, drain on a signal."""

from __future__ import annotations

import argparse
import ipaddress
import logging
import os
import signal
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path

from lstmserve.server import supervisor
from lstmserve.server.fleet import FLEET_CONTROL_REASON, WorkerLink
from lstmserve.server.inspect_command import run_inspect
from lstmserve.server.serve_flags import (
    add_load_flags,
    add_serve_flags,
    call_limits,
    engine_config,
    file_limits,
    load_options,
    named_paths,
    session_limits,
)

log = logging.getLogger("lstmserve.server")


def register_serve(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("serve", help="serve .h5 models over gRPC",
                                 description="Load .h5 models and answer gRPC predictions.")
    add_serve_flags(parser)
    parser.set_defaults(run=run_serve)


def register_inspect(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("inspect", help="load an .h5 file as the server would and describe it",
                                 description="Load a model file exactly as `serve` does, print its "
                                 "metadata and a prediction on zeros.")
    parser.add_argument("path", type=Path)
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")
    add_load_flags(parser)
    parser.set_defaults(run=run_inspect)


def _observer(args: argparse.Namespace, models, sessions, worker: WorkerLink | None = None):
    """Metrics and access log as the flags ask; the metrics port is bound here, before models load (by
    the supervisor, for a worker of several)."""
    from lstmserve.server.transport.metrics import Metrics
    from lstmserve.server.transport.observe import AccessLog, Observer
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
    return Observer(metrics, AccessLog(args.access_log, index) if args.access_log else None)


def _security(args: argparse.Namespace) -> dict:
    """create_server's credentials, token check and interceptors from the flags; ValueError/OSError on
    bad files."""
    from lstmserve.server.transport.auth import TokenAuth, TokenFile, server_credentials
    if (args.tls_cert is None) != (args.tls_key is None):
        raise ValueError("--tls-cert and --tls-key go together")
    if args.tls_client_ca is not None and args.tls_cert is None:
        raise ValueError("--tls-client-ca needs --tls-cert and --tls-key (mutual TLS is TLS first)")
    credentials = (server_credentials(args.tls_cert, args.tls_key, args.tls_client_ca)
                   if args.tls_cert else None)
    auth = TokenAuth(TokenFile(args.auth_token_file)) if args.auth_token_file else None
    interceptors = []
    if args.otel:  # the call's span also covers a refused call: it opens before admission's checks
        from lstmserve.server.transport import tracing
        interceptors = tracing.enable()
    return {"credentials": credentials, "auth": auth, "interceptors": interceptors}


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


def _model_repository(args: argparse.Namespace, metrics=None, fleet: bool = False):
    """The registry's repository (the --model files and --model-dir) and what ModelService may do."""
    from lstmserve.server.errors import InvalidInput
    from lstmserve.server.serving.model_config import ModelSettings
    from lstmserve.server.serving.registry import ModelRegistry
    from lstmserve.server.serving.repository import Repository, RepositoryOptions
    from lstmserve.server.serving.repository_files import check_name
    from lstmserve.server.transport.model_service import ModelControl

    named = named_paths(args.model, args.name)
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
    load_options(args)  # imports the --custom-objects modules now: a missing one stops the start
    defaults = ModelSettings(batching=args.engine.batching, custom_objects=tuple(args.custom_objects),
                             allow_code=args.allow_code)
    options = RepositoryOptions(root=root, files=files, defaults=defaults, engine=args.engine,
                                limits=file_limits(args), poll_seconds=args.poll_seconds,
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
        _log_startup(startup, dict(repository.startup_load_seconds))
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
    from lstmserve.server.process import HeapKeeper, configure_logging, start_tensorflow, tune_for_serving
    worker = WorkerLink.from_flag(args.fleet_worker)
    configure_logging(args.log_level or "info", json_lines=args.log_format == "json",
                      worker=worker.index if worker else None)
    try:
        start_tensorflow(args.compilation_cache, startup)
    except (ValueError, OSError, RuntimeError) as error:
        print(f"lstmserve serve: {error}", file=sys.stderr)
        return 2
    with startup.time("import lstmserve, grpc"):
        from lstmserve.server.errors import ModelLoadError
        from lstmserve.server.transport.server import create_server

    try:
        args.engine = engine_config(args)
        repository = running = None  # the metrics read both when scraped, once they exist
        observer = _observer(args, lambda: repository.registry.loaded() if repository else [],
                             lambda: running.sessions.counts() if running else {}, worker)
        repository, control = _model_repository(args, observer.metrics, fleet=worker is not None)
        heap = HeapKeeper()
        repository.registry.on_closed = heap.model_closed
        security = _security(args)
        running = create_server(repository.registry, _address(args.host, args.port), args.workers,
                                control=control, observer=observer, sessions=session_limits(args),
                                limits=call_limits(args), reuse_port=worker is not None, **security)
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
    heap.stop()  # the models close now: nothing to collect for
    repository.close()
    log.info("models closed")
    return code


def _log_startup(startup, models: dict) -> None:
    """One line with the seconds from process start to SERVING, phase by phase, and each model's total
    (its own phases are in its "loaded" line); then what compiling freed goes back to the system."""
    from lstmserve.server.phases import since_process_start
    from lstmserve.server.process import freeze_heap, release_freed_memory
    each = ", ".join(f"model '{name}' v{version} {seconds:.2f}"
                     for (name, version), seconds in models.items())
    log.info("every model given at start is loaded and warm: SERVING %.2f s after the process started: %s%s",
             since_process_start(), startup.describe(), f" ({each})" if each else "")
    release_freed_memory()
    freeze_heap()


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
