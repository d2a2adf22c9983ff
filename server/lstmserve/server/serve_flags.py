"""The flags of `lstmserve serve` and `lstmserve inspect`, and the settings each part of the server is
given from them (engine, sessions, call limits, file limits, load options). Parsing only: nothing here
imports TensorFlow or starts anything."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from lstmserve.server import supervisor


def add_serve_flags(parser: argparse.ArgumentParser) -> None:
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
    add_load_flags(parser)
    _add_security_options(parser)
    _add_operations_options(parser)
    supervisor.add_options(parser)


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


def session_limits(args: argparse.Namespace):
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


def call_limits(args: argparse.Namespace):
    from lstmserve.server.transport.admission import CallLimits
    return CallLimits(args.max_concurrent_calls, args.max_inflight_bytes, args.max_message_bytes)


def engine_config(args: argparse.Namespace):
    from lstmserve.server.engine.base import BatchConfig, EngineConfig
    batching = BatchConfig(args.max_batch, args.max_delay_ms / 1000, args.queue_capacity)
    return EngineConfig(batching=batching, jit_compile=not args.no_xla, twin=not args.no_twin)


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


def _add_security_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--tls-cert", type=Path, metavar="PEM",
                        help="serve TLS only, with this certificate chain (needs --tls-key)")
    parser.add_argument("--tls-key", type=Path, metavar="PEM", help="private key of --tls-cert")
    parser.add_argument("--tls-client-ca", type=Path, metavar="PEM",
                        help="mutual TLS: require client certificates signed by this CA")
    parser.add_argument("--auth-token-file", type=Path, metavar="FILE",
                        help="require 'authorization: Bearer <token>' on every call but health; one token "
                        "per line, '#' comments; the file is read again within a second of a change")


def add_load_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--custom-objects", action="append", default=[], metavar="MODULE",
                        help="import MODULE and allow the layer classes it defines (repeatable)")
    parser.add_argument("--allow-code", action="store_true",
                        help="trust Lambda layers (they run Python code stored in the file)")
    parser.add_argument("--no-xla", action="store_true", help="trace without XLA compilation")
    parser.add_argument("--no-twin", action="store_true",
                        help="compile tiny models with XLA like the others instead of running them as a "
                        "compiled twin: no numba in the process (about 70 MB less resident memory), at the "
                        "twin's speed")
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


def named_paths(models: list[str], name: str | None) -> list[tuple[str, Path]]:
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


def load_options(args: argparse.Namespace):
    from lstmserve.server.loading.build import LoadOptions
    return LoadOptions.create(tuple(args.custom_objects), args.allow_code)


def file_limits(args: argparse.Namespace):
    from lstmserve.server.loading.modelfile import FileLimits
    if min(args.max_model_bytes, args.max_config_depth, args.max_attribute_bytes) < 1:
        raise ValueError("--max-model-bytes, --max-attribute-bytes and --max-config-depth must be 1 or more")
    return FileLimits(max_model_bytes=args.max_model_bytes, max_config_depth=args.max_config_depth,
                      max_attribute_bytes=args.max_attribute_bytes)
