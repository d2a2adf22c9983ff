"""What every call leaves for an operator: Prometheus metrics and one JSON access-log line.

`guarded` (status.py) opens a CallRecord for each call and closes it with the status; handlers note what
they learn on the way (model, version, mode, rows) with `note_call`. Both ends cost a few microseconds,
and nothing when metrics and the access log are off (the observer is then the null one).
"""

from __future__ import annotations

import atexit
import contextvars
import json
import logging
import os
import queue
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime

import grpc

from lstmserve.server.transport.metrics import Metrics


@dataclass
class CallRecord:
    """One call as the access log and the metrics see it: never tensor contents, never credentials."""

    method: str
    started: float
    model: str = ""
    version: str = ""
    mode: str = ""
    rows: int = 0
    incident: str = ""


_current: contextvars.ContextVar[CallRecord | None] = contextvars.ContextVar("lstmserve_call", default=None)


def note_call(model: str = "", version: str = "", mode: str = "", rows: int = 0) -> None:
    """What a handler knows once it has found the model; ignored outside an observed call."""
    record = _current.get()
    if record is not None:
        record.model, record.version, record.mode, record.rows = model, version, mode, rows


def note_incident(incident: str) -> None:
    record = _current.get()
    if record is not None:
        record.incident = incident


class Observer:
    """Metrics and access log for every call; either may be None (off)."""

    def __init__(self, metrics: Metrics | None = None, access_log: AccessLog | None = None) -> None:
        self.metrics = metrics
        self.access_log = access_log
        self.enabled = metrics is not None or access_log is not None

    def start(self, method: str) -> contextvars.Token | None:
        if not self.enabled:
            return None
        if self.metrics is not None:
            self.metrics.started += 1
        return _current.set(CallRecord(method, time.perf_counter()))

    def finish(self, token: contextvars.Token | None, code: grpc.StatusCode, context) -> None:
        if token is None:
            return
        record = _current.get()
        _current.reset(token)
        seconds = time.perf_counter() - record.started
        if self.metrics is not None:
            self.metrics.finished += 1
            self.metrics.observe_call(record, code.name, seconds)
        if self.access_log is not None:
            self.access_log.write(_access_fields(record, code, seconds, context))


NULL_OBSERVER = Observer()


class ObservedServicer:
    """A servicer whose `guarded` handlers report to an observer (the null one unless the server sets it)."""

    observer: Observer = NULL_OBSERVER


def _access_fields(record: CallRecord, code: grpc.StatusCode, seconds: float, context) -> dict:
    fields = {"method": record.method, "peer": _peer(context), "model": record.model,
              "version": record.version, "mode": record.mode, "rows": record.rows, "status": code.name,
              "latency_ms": round(seconds * 1e3, 3)}
    if record.incident:
        fields["incident"] = record.incident
    return fields


def _peer(context) -> str:
    try:
        return context.peer()
    except Exception:  # noqa: BLE001 (a call torn down under us has no peer left to name)
        return ""


class AccessLog:
    """JSON lines, one per call, to `destination` (a path, or '-' for standard output), formatted and
    written by a thread of its own so a slow disk never holds up the event loop.

    The event loop only queues the call's fields (a few microseconds). The thread wakes once per
    FLUSH_S, not once per call: handing the interpreter lock to a writer thread for every line cost the
    server ~300 us of CPU per call on 2 cores (measured, seed model, 8 callers), where a batch costs
    one hand-over and one write. A line is one json.dumps of the call's fields: python-json-logger's
    JsonFormatter (which writes the server log's JSON lines) took 21 us a line through a LogRecord, against
    7 us, and every microsecond of it is taken from the event loop's interpreter lock. At most MAX_QUEUED
    lines wait: past that (a destination that stopped taking writes) lines are dropped and counted in the
    server log, rather than held in memory without a bound.

    The workers of `serve --processes N` share the destination, each line tagged with its `worker`: a file
    is opened for appending (O_APPEND) and written in whole lines, at most PIPE_BUF bytes a write, so lines
    of several processes never interleave, in a file or in a pipe."""

    FLUSH_S = 0.05
    PIPE_BUF = 4096  # what a pipe writes whole (POSIX: at least 512; Linux: 4096)
    MAX_QUEUED = 50_000  # about 25 s of calls at 2,000 a second; some 50 MB of queued fields

    def __init__(self, destination: str, worker: int | None = None) -> None:
        self._static = {"message": "call", **({} if worker is None else {"worker": worker})}
        self._fd = 1 if destination == "-" else os.open(destination, os.O_WRONLY | os.O_APPEND | os.O_CREAT,
                                                        0o640)
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._failed = False
        self.dropped = 0
        self._thread = threading.Thread(target=self._run, name="access-log", daemon=True)
        self._thread.start()
        # At exit, the lines still queued are written (the thread is a daemon and would just vanish).
        atexit.register(self.close)

    def write(self, fields: dict) -> None:
        """Queue one call's line (any thread)."""
        if self._queue.qsize() >= self.MAX_QUEUED:
            self.dropped += 1
            return
        self._queue.put((time.time(), fields))

    def close(self, timeout: float = 5.0) -> None:
        """Write what is queued, then stop; later lines are dropped."""
        if self._thread.is_alive():
            self._queue.put(_STOP)
            self._thread.join(timeout)
        if self._fd != 1 and not self._thread.is_alive():
            os.close(self._fd)
            self._fd = 1

    def _run(self) -> None:
        while True:
            batch = [self._queue.get()]
            time.sleep(self.FLUSH_S)
            while not self._queue.empty():
                batch.append(self._queue.get_nowait())
            self._emit([self._line(*item) for item in batch if item is not _STOP])
            self._report_dropped()
            if _STOP in batch:
                return

    def _report_dropped(self) -> None:
        dropped, self.dropped = self.dropped, 0
        if dropped:
            logging.getLogger(__name__).warning("access log: %d lines dropped, more than %d were waiting "
                                                "for the destination", dropped, self.MAX_QUEUED)

    def _line(self, created: float, fields: dict) -> bytes:
        when = datetime.fromtimestamp(created, UTC).isoformat()  # ISO 8601, UTC
        return (json.dumps({**self._static, **fields, "time": when}, default=str) + "\n").encode()

    def _emit(self, lines: list[bytes]) -> None:
        chunk = b""
        for line in lines:
            if chunk and len(chunk) + len(line) > self.PIPE_BUF:
                self._write(chunk)
                chunk = b""
            chunk += line
        if chunk:
            self._write(chunk)

    def _write(self, data: bytes) -> None:
        try:
            while data:
                data = data[os.write(self._fd, data):]
        except OSError as error:
            if not self._failed:  # once: a full disk must not flood the server log
                self._failed = True
                logging.getLogger(__name__).warning("access log: cannot write (%s); its lines are lost "
                                                    "until writing works again", error.strerror)
            return
        self._failed = False


_STOP = object()
