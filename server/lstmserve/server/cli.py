"""`lstmserve serve` and `lstmserve inspect`."""

from __future__ import annotations

import argparse
import ipaddress
import json
import logging
import signal
import sys
import threading
from pathlib import Path

import numpy as np

log = logging.getLogger("lstmserve.server")


def register_serve(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("serve", help="serve .h5 models over gRPC",
                                 description="Load .h5 models and answer gRPC predictions.")
    parser.add_argument("--model", action="append", required=True, metavar="[NAME=]PATH",
                        help="model file to serve (repeatable); the name defaults to the file stem")
    parser.add_argument("--name", help="name of the model when one --model is given")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (0.0.0.0 for all)")
    parser.add_argument("--port", type=int, default=8500, help="port (0 picks a free one)")
    parser.add_argument("--workers", type=int, default=32,
                        help="threads for handlers that are not coroutines (calls run on one event loop)")
    _add_batching_options(parser)
    _add_session_options(parser)
    _add_load_options(parser)
    _add_security_options(parser)
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


def _engine_config(args: argparse.Namespace):
    from lstmserve.server.engine.base import BatchConfig, EngineConfig
    batching = BatchConfig(args.max_batch, args.max_delay_ms / 1000, args.queue_capacity)
    return EngineConfig(batching=batching, jit_compile=not args.no_xla)


def _add_security_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--tls-cert", type=Path, metavar="PEM",
                        help="serve TLS only, with this certificate chain (needs --tls-key)")
    parser.add_argument("--tls-key", type=Path, metavar="PEM", help="private key of --tls-cert")
    parser.add_argument("--tls-client-ca", type=Path, metavar="PEM",
                        help="mutual TLS: require client certificates signed by this CA")
    parser.add_argument("--auth-token-file", type=Path, metavar="FILE",
                        help="require 'authorization: Bearer <token>' on every call but health; one token "
                        "per line, '#' comments; the file is read again within a second of a change")


def _security(args: argparse.Namespace) -> dict:
    """create_server's credentials and interceptors from the flags; ValueError/OSError on bad files."""
    from lstmserve.server.transport.auth import TokenAuthInterceptor, TokenFile, server_credentials
    if (args.tls_cert is None) != (args.tls_key is None):
        raise ValueError("--tls-cert and --tls-key go together")
    if args.tls_client_ca is not None and args.tls_cert is None:
        raise ValueError("--tls-client-ca needs --tls-cert and --tls-key (mutual TLS is TLS first)")
    credentials = (server_credentials(args.tls_cert, args.tls_key, args.tls_client_ca)
                   if args.tls_cert else None)
    interceptors = [TokenAuthInterceptor(TokenFile(args.auth_token_file))] if args.auth_token_file else []
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
    parser.add_argument("--log-level", choices=("debug", "info", "warning", "error"), default=None,
                        help="lstmserve's log level (serve: info, inspect: warning); debug also shows "
                        "TensorFlow's and Keras's own lines")


def run_serve(args: argparse.Namespace) -> int:
    from lstmserve.server.process import configure_logging, tune_for_serving
    configure_logging(args.log_level or "info")
    from lstmserve.server.errors import ModelLoadError
    from lstmserve.server.serving.registry import ModelRegistry
    from lstmserve.server.transport.server import create_server, load_in_background

    try:
        named = _named_paths(args.model, args.name)
        options = _load_options(args)
        args.engine = _engine_config(args)
        security = _security(args)
        running = create_server(ModelRegistry(), _address(args.host, args.port), args.workers, **security,
                                sessions=_session_limits(args))
    except (ValueError, ModelLoadError, OSError, RuntimeError) as error:
        print(f"lstmserve serve: {error}", file=sys.stderr)
        return 2
    for warning in exposure_warnings(args.host, args.tls_cert is not None,
                                     bool(args.auth_token_file or args.tls_client_ca)):
        log.warning("%s", warning)
    tune_for_serving()
    log.info("listening on %s:%d (NOT_SERVING until models are loaded)", args.host, running.port)
    failed = threading.Event()

    def on_error(name: str, error: ModelLoadError) -> None:
        log.error("cannot load model '%s': %s", name, error)
        failed.set()

    loaders = [_loader(path, name, options, args) for name, path in named]
    load_in_background(running, [name for name, _ in named], loaders, on_error)
    return _wait_for_stop(running, failed)


def _address(host: str, port: int) -> str:
    # An IPv6 literal needs brackets before its port ("::" alone would read as host ":" port ":").
    return f"[{host}]:{port}" if ":" in host and not host.startswith("[") else f"{host}:{port}"


def _wait_for_stop(running, failed: threading.Event) -> int:
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    while not stop.wait(0.2) and not failed.is_set():
        pass
    log.info("stopping")
    running.stop(grace=5)
    return 1 if failed.is_set() else 0


def _loader(path: Path, name: str, options, args):
    from lstmserve.server.loading.load import load_model

    def load():
        model = load_model(path, name, options=options, engine=args.engine)
        log.info("model '%s' v%s loaded from %s: inputs %s", name, model.version, path,
                 [spec.describe() for spec in model.inputs])
        return model
    return load


def run_inspect(args: argparse.Namespace) -> int:
    from lstmserve.server.process import configure_logging
    configure_logging(args.log_level or "warning")
    from lstmserve.server.engine.base import EngineConfig
    from lstmserve.server.errors import ServingError
    from lstmserve.server.loading.load import load_model
    try:
        model = load_model(args.path, options=_load_options(args),
                           engine=EngineConfig(jit_compile=not args.no_xla))
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
