"""The control channel between the supervisor of `serve --processes N` and each worker: one socket pair,
one word a line.

worker -> supervisor: "ready" once the models given at start are loaded and warm.
supervisor -> worker: "serve" once every worker is ready, "hold" while one is not: a worker's health
reports SERVING only while it is ready itself AND the supervisor says "serve" (calls are answered either
way). When the supervisor is gone (killed), the worker reads the end of the channel and stops itself as
if sent SIGTERM, so no worker outlives its supervisor by more than its drain.

A pair of sockets rather than the worker's standard streams: `--access-log -` writes to standard output,
and standard input stays free. Nothing here imports TensorFlow or grpc: the supervisor uses it too.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
from collections.abc import Callable

log = logging.getLogger("lstmserve.server")

READY, SERVE, HOLD = "ready", "serve", "hold"
MAX_LINE = 64  # every word is short; a longer line is not ours
FLEET_CONTROL_REASON = ("model control is off with --processes N: each worker would load or unload on its "
                        "own; change the repository directory (watched) or send SIGHUP to the supervisor")


def worker_flag(index: int, fd: int) -> str:
    """The hidden --fleet-worker value: the worker's index and the descriptor of its end of the channel."""
    return f"{index}:{fd}"


class Channel:
    """A socket pair: one end per side, each read on a thread of its own, lines handed to a callback."""

    def __init__(self, own: socket.socket, peer: socket.socket | None = None) -> None:
        self.own, self.peer = own, peer
        self._send_lock = threading.Lock()

    @classmethod
    def pair(cls) -> Channel:
        """The supervisor's end, with the worker's (`peer`) still open until the worker is spawned."""
        own, peer = socket.socketpair()
        peer.set_inheritable(True)
        return cls(own, peer)

    def spawned(self) -> None:
        """The worker holds its end now: close ours of it, so its death reads as the end here."""
        if self.peer is not None:
            self.peer.close()
            self.peer = None

    def send(self, word: str) -> bool:
        """Best effort: False once the other side is gone."""
        try:
            with self._send_lock:
                self.own.sendall(f"{word}\n".encode("ascii"))
        except OSError:
            return False
        return True

    def read(self, on_line: Callable[[str], None], on_end: Callable[[], None], name: str) -> None:
        """Hand every line to `on_line` from a daemon thread, then call `on_end` once the channel ends."""
        threading.Thread(target=self._read, args=(on_line, on_end), name=name, daemon=True).start()

    def close(self) -> None:
        self.spawned()
        try:
            self.own.shutdown(socket.SHUT_RDWR)  # wakes our reading thread
        except OSError:
            pass
        self.own.close()

    def _read(self, on_line: Callable[[str], None], on_end: Callable[[], None]) -> None:
        try:
            with self.own.makefile("r", encoding="ascii", errors="replace", newline="\n") as lines:
                while line := lines.readline(MAX_LINE + 1):
                    on_line(line.strip())
        except (OSError, ValueError):  # closed under us: the same as its end
            pass
        on_end()


class WorkerLink:
    """A worker's end of the channel: says when it is ready, hears whether the fleet serves."""

    def __init__(self, index: int, channel: Channel) -> None:
        self.index, self.channel = index, channel

    @classmethod
    def from_flag(cls, value: str | None) -> WorkerLink | None:
        """The link that --fleet-worker INDEX:FD names; None for a server on its own."""
        if value is None:
            return None
        index, _, fd = value.partition(":")
        if not (index.isdigit() and fd.isdigit()):
            raise ValueError(f"--fleet-worker is INDEX:FD (set by the supervisor); got {value!r}")
        # Until the repository's SIGHUP handler is in place, a forwarded SIGHUP must not end the worker
        # (its default action): a worker still loading reads the whole repository anyway.
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        return cls(int(index), Channel(socket.socket(fileno=int(fd))))

    def attach(self, running) -> None:
        """Health through the supervisor's gate (closed until it says "serve"); the supervisor gone ends
        the worker as SIGTERM would."""
        running.set_gate(False)

        def heard(word: str) -> None:
            if word in (SERVE, HOLD):
                running.set_gate(word == SERVE)
            else:
                log.warning("the supervisor said %r; expected %r or %r", word[:MAX_LINE], SERVE, HOLD)

        self.channel.read(heard, self._orphaned, name="fleet-link")

    def ready(self) -> None:
        log.info("ready: every model given at start is loaded and warm; SERVING once every worker is")
        self.channel.send(READY)

    def _orphaned(self) -> None:
        log.warning("the supervisor is gone; stopping")
        os.kill(os.getpid(), signal.SIGTERM)
