"""The `lstmserve` command: one program whose subcommands come from whichever distributions are installed."""

from __future__ import annotations

import argparse
import json
import sys
from importlib.metadata import entry_points
from pathlib import Path

import numpy as np

from lstmserve.client.channel import DEFAULT_TARGET
from lstmserve.client.client import Client
from lstmserve.client.errors import LstmserveError

MODES = ("values", "classes", "probabilities")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="lstmserve", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    # Each distribution (client, server, trainer) registers its own subcommands, so a
    # client-only install gets `lstmserve predict` without importing TensorFlow.
    for entry in _registrations(sys.argv[1:] if argv is None else argv):
        entry.load()(commands)
    args = parser.parse_args(argv)
    return args.run(args)


def _registrations(argv: list[str]) -> list:
    """The named command's registration alone (a server process never loads the trainer's modules);
    every one when no installed command is named, for help and usage errors."""
    found = sorted(entry_points(group="lstmserve.commands"), key=lambda e: e.name)
    named = next((arg for arg in argv if not arg.startswith("-")), None)
    return [entry for entry in found if entry.name == named] or found


def register_predict(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "predict", help="call a running server",
        description="Send one batch to a running lstmserve server and print the answer as JSON.",
    )
    parser.add_argument("data", nargs="?", help="input as JSON, e.g. '[[[0.1]],[[0.2]]]'")
    parser.add_argument("--file", type=Path, help="input from a .npy, .json or .csv file")
    parser.add_argument("--shape", help="reshape the input, e.g. 5,1,1")
    parser.add_argument("--model", help="model name (optional when the server holds one model)")
    parser.add_argument("--version", help="model version (default: the highest available)")
    parser.add_argument("--label", help="model version by label, e.g. stable (from the model's config.json)")
    parser.add_argument("--mode", choices=MODES, default="values")
    parser.add_argument("--labels", action="store_true", help="classes mode: print label strings")
    parser.add_argument("--prepared", action="store_true",
                        help="input is already prepared; return the model's raw outputs")
    parser.add_argument("--dtype", default="float32", help="input dtype (default float32)")
    add_connection_options(parser, timeout=10.0)
    parser.set_defaults(run=run_predict)


def register_forecast(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "forecast", help="forecast several steps ahead on a running server",
        description="Send a history (raw observations, oldest first) and print the next --horizon values "
                    "as JSON, in the history's units. For models whose file declares a forecast.")
    parser.add_argument("data", nargs="?", help="history as JSON: [v, ...] for one feature, "
                        "[[v, ...], ...] as [timesteps, features]")
    parser.add_argument("--file", type=Path, help="history from a .npy, .json or .csv file")
    parser.add_argument("--horizon", type=int, required=True, help="steps ahead")
    parser.add_argument("--column", type=int, help="of a .csv history, only this column (0-based)")
    parser.add_argument("--model", help="model name (optional when the server holds one model)")
    parser.add_argument("--version", help="model version (default: latest)")
    add_connection_options(parser, 10.0)
    parser.set_defaults(run=run_forecast, shape=None, dtype="float32")


def run_forecast(args: argparse.Namespace) -> int:
    try:
        history = _read_input(args)
        if args.column is not None:
            history = history[:, args.column]
        client = client_from_args(args)
    except (OSError, ValueError, TypeError, IndexError) as error:
        print(f"lstmserve forecast: cannot read the history: {error}", file=sys.stderr)
        return 2
    try:
        with client:
            values = client.forecast(history, args.horizon, model=args.model, version=args.version)
    except LstmserveError as error:
        print(f"lstmserve forecast: {error}", file=sys.stderr)
        return 1
    print(json.dumps(values.tolist()))
    return 0


def add_connection_options(parser: argparse.ArgumentParser, timeout: float) -> None:
    """--target, --timeout, TLS and token: how a command reaches the server."""
    parser.add_argument("--target", action="append", metavar="ADDRESS",
                        help="server host:port or gRPC target such as dns:///name:port; repeat it to "
                        "spread calls over several servers (default localhost:8500)")
    parser.add_argument("--timeout", type=float, default=timeout,
                        help=f"deadline in seconds (default {timeout:g})")
    parser.add_argument("--tls", action="store_true",
                        help="connect with TLS, trusting the system's roots unless --tls-ca is given")
    parser.add_argument("--tls-ca", type=Path, metavar="PEM",
                        help="CA certificate(s) that sign the server's certificate (implies --tls)")
    parser.add_argument("--tls-cert", type=Path, metavar="PEM",
                        help="client certificate for mutual TLS (with --tls-key; implies --tls)")
    parser.add_argument("--tls-key", type=Path, metavar="PEM", help="client certificate's private key")
    parser.add_argument("--token", help="bearer token for a server started with --auth-token-file "
                        "(default $LSTMSERVE_TOKEN, which other users cannot read in the process list)")


def client_from_args(args: argparse.Namespace) -> Client:
    """The Client that add_connection_options' flags describe; ValueError on bad TLS files or tokens."""
    targets = args.target or [DEFAULT_TARGET]
    return Client(targets[0] if len(targets) == 1 else targets, timeout=args.timeout, tls=args.tls,
                  root_certificates=args.tls_ca, client_cert=args.tls_cert, client_key=args.tls_key,
                  token=args.token)


def run_predict(args: argparse.Namespace) -> int:
    try:
        x = _read_input(args)
    except (OSError, ValueError, TypeError) as error:
        print(f"lstmserve predict: cannot read input: {error}", file=sys.stderr)
        return 2
    options = {"model": args.model, "version": args.version, "label": args.label,
               "prepared": args.prepared}
    try:
        client = client_from_args(args)
    except ValueError as error:
        print(f"lstmserve predict: {error}", file=sys.stderr)
        return 2
    try:
        with client:
            if args.mode == "classes":
                result = client.predict_classes(x, labels=args.labels, **options)
            elif args.mode == "probabilities":
                result = client.predict_proba(x, **options)
            else:
                result = client.predict(x, **options)
    except LstmserveError as error:
        print(f"lstmserve predict: {error}", file=sys.stderr)
        return 1
    print(json.dumps(_jsonable(result)))
    return 0


def _read_input(args: argparse.Namespace) -> np.ndarray:
    if args.file is not None:
        x = _load_file(args.file)
    elif args.data is not None:
        x = np.asarray(json.loads(args.data))
    else:
        raise ValueError("give the input as a JSON argument or with --file")
    x = x.astype(args.dtype)
    if args.shape:
        x = x.reshape([int(dim) for dim in args.shape.split(",")])
    return x


def _load_file(path: Path) -> np.ndarray:
    if path.suffix == ".npy":
        return np.load(path, allow_pickle=False)
    if path.suffix == ".csv":
        return np.loadtxt(path, delimiter=",", ndmin=2)
    return np.asarray(json.loads(path.read_text()))


def _jsonable(result):
    if isinstance(result, dict):
        return {name: _jsonable(value) for name, value in result.items()}
    return result.tolist()


if __name__ == "__main__":
    sys.exit(main())
