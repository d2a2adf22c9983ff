"""The one place that turns addresses, TLS files and a token into a gRPC channel, for both clients."""

from __future__ import annotations

import ipaddress
import json
import os
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Union

import grpc
from grpc import aio

DEFAULT_TARGET = "localhost:8500"
TOKEN_ENV = "LSTMSERVE_TOKEN"
PREDICTION_SERVICE = "lstmserve.v1.PredictionService"
# Predict payloads of long windows outgrow gRPC's 4 MiB default quickly.
MAX_MESSAGE_BYTES = 64 * 1024 * 1024

Pem = Union[str, os.PathLike, bytes]
Target = Union[str, Sequence[str]]

# round_robin spreads calls over every address the name resolves to (a list, or one DNS name with several
# records) instead of pick_first's single connection. Every PredictionService method only reads (Predict
# changes nothing but counters), so a call that met UNAVAILABLE (a replica gone, a model still loading) is
# retried on the next pick. CANCELLED too: a stopping gRPC server cancels the calls it had received but not
# yet handed to a handler (grpc/grpc#41785), and this client's own cancellations are never retried.
# Throttling stops retries when most calls fail, so an outage is not multiplied.
RETRY_POLICY = {
    "maxAttempts": 5,
    "initialBackoff": "0.1s",
    "maxBackoff": "1s",
    "backoffMultiplier": 2,
    "retryableStatusCodes": ["UNAVAILABLE", "CANCELLED"],
}
RETRY_THROTTLING = {"maxTokens": 100, "tokenRatio": 0.1}
# Creating a session and forecasting change nothing a retry could repeat (an UNAVAILABLE or CANCELLED
# call created no session); a step changes its session, so steps are never retried.
SESSION_SERVICE = "lstmserve.v1.SessionService"
RETRIED = [{"service": PREDICTION_SERVICE}, {"service": SESSION_SERVICE, "method": "CreateSession"},
           {"service": SESSION_SERVICE, "method": "Forecast"}]

DEFAULT_OPTIONS: dict[str, Any] = {
    "grpc.max_send_message_length": MAX_MESSAGE_BYTES,
    "grpc.max_receive_message_length": MAX_MESSAGE_BYTES,
    "grpc.enable_retries": 1,
    # gRPC keeps only 256 KiB of a request for a retry; any request this client may send stays retryable.
    "grpc.per_rpc_retry_buffer_size": MAX_MESSAGE_BYTES,
    # Servers built on gRPC refuse pings more often than every 5 minutes (GOAWAY "too_many_pings") and any
    # ping on a connection without calls, so the client pings only during long calls, and no more often.
    "grpc.keepalive_time_ms": 300_000,
    "grpc.keepalive_timeout_ms": 20_000,
    "grpc.keepalive_permit_without_calls": 0,
    # A replica that went away is dialled again after 1 s, then 1.6x longer each time: at gRPC's default
    # cap (120 s) a replica back after a restart of ~10 s could wait a minute for its first call. 5 s
    # keeps a restarted replica's wait short and the dialling of a dead one cheap.
    "grpc.max_reconnect_backoff_ms": 5_000,
}


def service_config(health_check: bool) -> str:
    """The channel's gRPC service config (JSON): round_robin, retries, and optionally health checking.

    With health checking, round_robin sends calls only to servers whose `lstmserve.v1.PredictionService`
    health is SERVING (gRPC watches it on each connection): a restarted replica listens NOT_SERVING while
    its models load, and a stopping one says NOT_SERVING before it closes, so neither gets calls to fail
    and retry. It also holds back health() itself, so it is for replicas, not for one server.
    """
    config: dict[str, Any] = {
        "loadBalancingConfig": [{"round_robin": {}}],
        "methodConfig": [{"name": RETRIED, "retryPolicy": RETRY_POLICY}],
        "retryThrottling": RETRY_THROTTLING,
    }
    if health_check:
        config["healthCheckConfig"] = {"serviceName": PREDICTION_SERVICE}
    return json.dumps(config)


@dataclass(frozen=True)
class ChannelSpec:
    """A channel's parts: the target gRPC resolves, credentials, options, and metadata for every call."""

    target: str
    credentials: grpc.ChannelCredentials | None  # None: plaintext
    options: tuple[tuple[str, Any], ...]
    metadata: tuple[tuple[str, str], ...]  # sent with every call

    def open(self) -> grpc.Channel:
        if self.credentials is None:
            return grpc.insecure_channel(self.target, options=self.options)
        return grpc.secure_channel(self.target, self.credentials, options=self.options)

    def open_aio(self) -> aio.Channel:
        if self.credentials is None:
            return aio.insecure_channel(self.target, options=self.options)
        return aio.secure_channel(self.target, self.credentials, options=self.options)


def channel_spec(target: Target = DEFAULT_TARGET, *, tls: bool = False,
                 root_certificates: Pem | None = None, client_cert: Pem | None = None,
                 client_key: Pem | None = None, token: str | None = None,
                 health_check: bool | None = None,
                 options: Sequence[tuple[str, Any]] = ()) -> ChannelSpec:
    """Everything Client and AsyncClient need to open their channel, checked before any connection.

    Any certificate argument implies TLS. `token` (else $LSTMSERVE_TOKEN) travels as per-call metadata.
    `health_check` defaults to on for replicas (a list, or a "dns:", "ipv4:" or "ipv6:" target) and off
    for one "host:port", so that health() and "model still loading" answers reach the caller.
    `options` are extra gRPC channel options; they replace the defaults of the same name.
    """
    grpc_target, authority = resolve_target(target)
    if health_check is None:
        health_check = _names_replicas(target)
    merged = dict(DEFAULT_OPTIONS, **{"grpc.service_config": service_config(health_check)})
    if authority is not None:
        merged["grpc.default_authority"] = authority
    merged.update(options)
    credentials = tls_credentials(root_certificates, client_cert, client_key) if (
        tls or root_certificates is not None or client_cert is not None or client_key is not None) else None
    return ChannelSpec(grpc_target, credentials, tuple(merged.items()), token_metadata(token))


def tls_credentials(root_certificates: Pem | None = None, client_cert: Pem | None = None,
                    client_key: Pem | None = None) -> grpc.ChannelCredentials:
    """TLS credentials; no roots means the system's (gRPC's bundled) roots. Paths or PEM bytes."""
    if (client_cert is None) != (client_key is None):
        raise ValueError("client_cert and client_key go together (mutual TLS needs both)")
    return grpc.ssl_channel_credentials(
        root_certificates=_pem(root_certificates, "root_certificates"),
        private_key=_pem(client_key, "client_key"),
        certificate_chain=_pem(client_cert, "client_cert"),
    )


def token_metadata(token: str | None) -> tuple[tuple[str, str], ...]:
    """`authorization: Bearer <token>` on every call; nothing without a token (argument or $LSTMSERVE_TOKEN).

    Per-call metadata rather than gRPC call credentials: gRPC refuses call credentials on a plaintext
    channel ("insufficient security level"), and a plaintext hop is real here (loopback, a mesh sidecar or
    proxy that terminates TLS), so one path that works with and without TLS, sync and asyncio, is kept.
    """
    token = os.environ.get(TOKEN_ENV) if token is None else token
    if not token:
        return ()
    if not token.isascii() or not token.isprintable() or any(c.isspace() for c in token):
        raise ValueError("a token is printable ASCII without spaces (it travels in an HTTP/2 header)")
    return (("authorization", f"Bearer {token}"),)


def resolve_target(target: Target) -> tuple[str, str | None]:
    """The gRPC target for one address (passed as is: gRPC resolves names itself) or for a list of
    "host:port" addresses, and the authority to present for a list (None: gRPC's own).

    gRPC's only multi-address targets are `ipv4:a:p,b:p` and `ipv6:[a]:p,[b]:p`, one family each, so the
    names in a list are resolved here, once: every name's IPv4 addresses when every entry has one, else
    every name's IPv6 addresses. A list is not resolved again later; a name whose records change belongs
    in a `dns:///name:port` target, which gRPC re-resolves. The first entry's host:port is the authority,
    so TLS checks every server's certificate against that name.
    """
    if isinstance(target, str):
        return target, None
    entries = list(target)
    if not entries:
        raise ValueError("a list of server addresses is empty")
    if len(entries) == 1:
        return entries[0], None
    hosts = [_split_host_port(entry) for entry in entries]
    families = [_addresses(host, port) for host, port in hosts]
    for family, scheme in ((socket.AF_INET, "ipv4"), (socket.AF_INET6, "ipv6")):
        if all(family in found for found in families):
            joined = [address for found in families for address in found[family]]
            return f"{scheme}:{','.join(dict.fromkeys(joined))}", entries[0]
    raise ValueError(f"addresses {entries} do not share an IP family (IPv4 or IPv6); gRPC takes a list "
                     "of one family only")


def _names_replicas(target: Target) -> bool:
    if isinstance(target, str):
        return target.partition(":")[0] in ("dns", "ipv4", "ipv6")
    return len(target) > 1


def _split_host_port(entry: str) -> tuple[str, int]:
    host, sep, port = entry.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise ValueError(f"address '{entry}' in a list must be host:port (or [IPv6]:port)")
    return host.removeprefix("[").removesuffix("]"), int(port)


def _addresses(host: str, port: int) -> dict[int, list[str]]:
    """IPv4 and IPv6 socket addresses of one host, as ipv4:/ipv6: target entries."""
    try:
        literal = ipaddress.ip_address(host)
        infos = [(socket.AF_INET if literal.version == 4 else socket.AF_INET6, str(literal))]
    except ValueError:
        try:
            found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except socket.gaierror as error:
            raise ValueError(f"cannot resolve '{host}': {error}") from None
        infos = [(family, sockaddr[0]) for family, _, _, _, sockaddr in found]
    by_family: dict[int, list[str]] = {}
    for family, ip in infos:
        entry = f"{ip}:{port}" if family == socket.AF_INET else f"[{ip}]:{port}"
        by_family.setdefault(family, []).append(entry)
    return by_family


def _pem(value: Pem | None, name: str) -> bytes | None:
    if value is None or isinstance(value, bytes):
        return value
    try:
        return Path(value).read_bytes()
    except OSError as error:
        raise ValueError(f"{name}: cannot read {value}: {error.strerror}") from None
