"""Who may call: TLS credentials (client certificates under mutual TLS) and bearer tokens from a file."""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path

import grpc

log = logging.getLogger(__name__)

# Probes (Kubernetes, load balancers) carry no token; health says nothing a caller could misuse.
OPEN_METHOD_PREFIXES = ("/grpc.health.v1.Health/",)
# The same words for a missing and a wrong token: nothing tells a caller which tokens exist.
REFUSAL = "authentication required: send metadata 'authorization: Bearer <token>' with a valid token"
RECHECK_S = 1.0
LOG_EVERY_S = 60.0
MAX_LOGGED_PEERS = 1024


def server_credentials(cert: Path, key: Path, client_ca: Path | None = None) -> grpc.ServerCredentials:
    """TLS with the server's certificate chain and key (PEM); with `client_ca`, mutual TLS: every client
    must present a certificate that CA signed, or the handshake fails before any call."""
    return grpc.ssl_server_credentials(
        [(_read(key, "--tls-key"), _read(cert, "--tls-cert"))],
        root_certificates=_read(client_ca, "--tls-client-ca") if client_ca else None,
        require_client_auth=client_ca is not None,
    )


def parse_tokens(text: str) -> frozenset[str]:
    """One token per line; surrounding whitespace, blank lines and lines starting with '#' are ignored."""
    lines = (line.strip() for line in text.splitlines())
    return frozenset(line for line in lines if line and not line.startswith("#"))


class TokenFile:
    """The tokens a file holds, read again when its inode, size or mtime change.

    The file is looked at no more than once every `recheck_s`, not on every call. A file that cannot be
    read any more accepts no token (fail closed) until it can be.
    """

    def __init__(self, path: Path, recheck_s: float = RECHECK_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.path = Path(path)
        self.recheck_s = recheck_s
        self._clock = clock
        self._signature = self._stat()
        self._digests = _digests(parse_tokens(self.path.read_text()))
        if not self._digests:
            raise ValueError(f"token file {self.path} holds no token")
        self._checked_at = clock()

    def accepts(self, token: str) -> bool:
        """Whether `token` is one of the file's, compared in constant time with every token.

        Comparing SHA-256 digests makes every comparison the same length, so the time taken tells
        neither a token's content nor its length; no early exit tells which token matched.
        """
        candidate = hashlib.sha256(token.encode()).digest()
        matched = False
        for digest in self._current():
            matched |= hmac.compare_digest(candidate, digest)
        return matched

    def _current(self) -> tuple[bytes, ...]:
        now = self._clock()
        if now - self._checked_at >= self.recheck_s:
            self._checked_at = now
            self._reload_if_changed()
        return self._digests

    def _reload_if_changed(self) -> None:
        try:
            signature = self._stat()
            if signature == self._signature:
                return
            tokens = parse_tokens(self.path.read_text())
        except (OSError, UnicodeDecodeError) as error:
            if self._signature is not None:
                log.error("cannot read token file %s (%s): refusing every call until it can be read",
                          self.path, getattr(error, "strerror", None) or type(error).__name__)
            self._signature, self._digests = None, ()
            return
        self._signature, self._digests = signature, _digests(tokens)
        if tokens:
            log.info("token file %s read again: %d token(s)", self.path, len(tokens))
        else:
            log.warning("token file %s holds no token now: every call that needs one is refused", self.path)

    def _stat(self) -> tuple[int, ...]:
        stat = os.stat(self.path)
        return stat.st_ino, stat.st_size, stat.st_mtime_ns


class TokenAuth:
    """Refuses every call that carries no accepted bearer token, except health checks.

    Checked by admission (transport.admission), which already holds every call before its bytes are
    parsed, rather than by a grpc.aio interceptor, whose coroutines grpc.aio runs on every call before
    the handler: one check on a path each call takes anyway (issue 15 bounds what observability and
    authentication may cost). Methods are open by exception, not guarded by list: lstmserve.v1
    services, reflection, unknown methods and any service added later need a token. `rejected` counts
    refusals and `on_rejected(method, reason)` is called with each (for metrics); neither ever sees
    the token.
    """

    def __init__(self, tokens: TokenFile,
                 on_rejected: Callable[[str, str], None] = lambda method, reason: None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.tokens = tokens
        self.on_rejected = on_rejected
        self.rejected = 0
        self._clock = clock
        self._logged_at: dict[str, float] = {}

    @staticmethod
    def guards(method: str) -> bool:
        """Whether calls to `method` need a token."""
        return not method.startswith(OPEN_METHOD_PREFIXES)

    def refusal(self, metadata) -> str | None:
        """None for an accepted token; else why not (missing, malformed, invalid)."""
        for key, value in metadata or ():
            if key == "authorization":
                scheme, _, token = str(value).partition(" ")
                if scheme.lower() != "bearer" or not token.strip():
                    return "malformed"
                return None if self.tokens.accepts(token.strip()) else "invalid"
        return "missing"

    async def refuse(self, method: str, reason: str, context) -> None:
        """Count and log the refusal, then end the call UNAUTHENTICATED (raises)."""
        self._count(method, reason, context.peer())
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, REFUSAL)

    def refuse_in_thread(self, method: str, reason: str, context) -> None:
        """The same for a handler grpc runs on its thread pool (a plain function)."""
        self._count(method, reason, context.peer())
        context.abort(grpc.StatusCode.UNAUTHENTICATED, REFUSAL)

    def _count(self, method: str, reason: str, peer: str) -> None:
        self.rejected += 1
        self.on_rejected(method, reason)
        # Once per client address a minute: a client retrying a bad token must not flood the log.
        address = peer.rpartition(":")[0] or peer
        now = self._clock()
        if now - self._logged_at.get(address, float("-inf")) < LOG_EVERY_S:
            return
        if len(self._logged_at) >= MAX_LOGGED_PEERS:
            self._logged_at.clear()
        self._logged_at[address] = now
        log.warning("refused %s from %s: %s token (not logged again for this address for %.0f s)",
                    method, peer, reason, LOG_EVERY_S)


def _digests(tokens: frozenset[str]) -> tuple[bytes, ...]:
    return tuple(hashlib.sha256(token.encode()).digest() for token in sorted(tokens))


def _read(path: Path | None, flag: str) -> bytes | None:
    if path is None:
        return None
    try:
        return Path(path).read_bytes()
    except OSError as error:
        raise ValueError(f"{flag}: cannot read {path}: {error.strerror}") from None
