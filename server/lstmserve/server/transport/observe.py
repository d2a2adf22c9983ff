"""What every call leaves for an operator: Prometheus metrics and one JSON access-log line.

`guarded` (status.py) opens a CallRecord for each call and closes it with the status; handlers note what
they learn on the way (model, version, mode, rows) with `note_call`. Both ends cost a few microseconds,
and nothing when metrics and the access log are off (the observer is then the null one).
"""

from __future__ import annotations

import atexit
import contextvars
import logging
import logging.handlers
import queue
import sys
import time
from dataclasses import dataclass

import grpc

from lstmserve.server.transport.metrics import Metrics

ACCESS_LOGGER = "lstmserve.access"


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

    def __init__(self, metrics: Metrics | None = None, access_log: logging.Logger | None = None) -> None:
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
            self.access_log.info("call", extra=_access_fields(record, code, seconds, context))


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


def access_logger(destination: str, worker: int | None = None) -> logging.Logger:
    """A logger writing JSON lines to `destination` (a path, or '-' for stdout) from a thread of its own,
    so a slow disk never holds up the event loop.

    The workers of `serve --processes N` share the destination, each line tagged with its `worker`: a
    file is opened for appending (O_APPEND) and each line leaves in one write once formatted, so lines
    of several processes never interleave (a pipe keeps writes under 4 KiB whole)."""
    from pythonjsonlogger.json import JsonFormatter
    handler = (logging.StreamHandler(sys.stdout) if destination == "-"
               else logging.FileHandler(destination, encoding="utf-8"))
    handler.setFormatter(JsonFormatter("%(message)s", timestamp="time",  # ISO 8601, UTC
                                       static_fields=None if worker is None else {"worker": worker}))
    records: queue.SimpleQueue = queue.SimpleQueue()
    listener = logging.handlers.QueueListener(records, handler)
    listener.start()
    logger = logging.getLogger(ACCESS_LOGGER)
    logger.handlers[:] = [_Enqueue(records)]
    logger.setLevel(logging.INFO)
    logger.propagate = False  # access lines go to their own destination, not the server log
    logger.listener = listener  # kept alive with the logger
    # At exit, the lines still queued are written before logging.shutdown closes the file (atexit runs
    # the latest registration first); the listener's thread is a daemon and would just vanish.
    atexit.register(listener.stop)
    return logger


class _Enqueue(logging.handlers.QueueHandler):
    """Hands the record over unformatted: the listener's thread formats it, not the event loop."""

    def prepare(self, record: logging.LogRecord) -> logging.LogRecord:
        return record
