"""`lstmserve models status|load|unload|reload`: a running server's model lifecycle from the shell."""

from __future__ import annotations

import argparse
import json
import sys

from google.protobuf import json_format

from lstmserve.client.cli import add_connection_options, client_from_args
from lstmserve.client.client import LOAD_TIMEOUT_S
from lstmserve.client.errors import LstmserveError
from lstmserve.v1 import model_service_pb2 as msp


def register_models(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("models", help="see, load and unload a running server's models",
                                 description="The ModelService of a running lstmserve server.")
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    status = actions.add_parser("status", help="every version of every model (or of one) and its state")
    status.add_argument("name", nargs="?", default="", help="one model (default: all)")
    load = actions.add_parser("load", help="serve a version of the server's repository; waits for it")
    unload = actions.add_parser("unload", help="stop serving a version; its calls in flight finish")
    for action in (load, unload):
        action.add_argument("name", help="model name (a directory of the repository)")
        action.add_argument("version", nargs="?", default=None,
                            help="version number (load: default what the version policy selects; "
                            "unload: default every version)")
    reload = actions.add_parser("reload", help="scan the repository now; waits for the loads")
    for action, timeout in ((status, 10.0), (load, LOAD_TIMEOUT_S), (unload, 10.0),
                            (reload, LOAD_TIMEOUT_S)):
        action.add_argument("--json", action="store_true", help="print JSON instead of text")
        add_connection_options(action, timeout=timeout)
    parser.set_defaults(run=run_models)


def run_models(args: argparse.Namespace) -> int:
    try:
        client = client_from_args(args)
    except ValueError as error:
        print(f"lstmserve models: {error}", file=sys.stderr)
        return 2
    try:
        with client:
            statuses = _call(client, args)
    except LstmserveError as error:
        print(f"lstmserve models {args.action}: {error}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps([json_format.MessageToDict(s, preserving_proto_field_name=True)
                          for s in statuses], indent=2))
    else:
        print("\n".join(describe(status) for status in statuses) or "no models")
    return 0


def _call(client, args: argparse.Namespace) -> list[msp.ModelStatus]:
    if args.action == "status":
        return client.model_status(args.name)
    if args.action == "load":
        return [client.load_model(args.name, args.version)]
    if args.action == "unload":
        return [client.unload_model(args.name, args.version)]
    return client.reload_repository()


def describe(status: msp.ModelStatus) -> str:
    """A model and its versions as lines a person reads: state, default, labels, file, reason."""
    lines = [f"{status.name}  (versions: {status.version_policy or '-'})"]
    if status.problem:
        lines.append(f"  problem: {status.problem}")
    for version in status.versions:
        state = msp.VersionState.Name(version.state).removeprefix("VERSION_STATE_")
        parts = [f"  {version.version:>4}  {state:<9}"]
        if version.is_default:
            parts.append("default")
        if version.labels:
            parts.append("labels " + ",".join(version.labels))
        if version.file:
            parts.append(version.file)
        if version.reason:
            parts.append(f"- {version.reason}")
        lines.append("  ".join(parts))
    return "\n".join(lines)
