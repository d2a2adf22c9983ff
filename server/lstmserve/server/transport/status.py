"""The one table from runtime errors to gRPC status codes, applied to every handler by `guarded`."""

from __future__ import annotations

import asyncio
import functools
import logging
import re
import uuid

import grpc

from lstmserve.client.tensors import TensorDecodeError
from lstmserve.server import errors
from lstmserve.server.transport.observe import note_incident

log = logging.getLogger(__name__)

INCIDENT = re.compile(r"incident ([0-9a-f]{12})")

STATUS_BY_ERROR: dict[type[Exception], grpc.StatusCode] = {
    errors.InvalidInput: grpc.StatusCode.INVALID_ARGUMENT,
    TensorDecodeError: grpc.StatusCode.INVALID_ARGUMENT,
    errors.ModelNotFound: grpc.StatusCode.NOT_FOUND,
    errors.ModeNotSupported: grpc.StatusCode.FAILED_PRECONDITION,
    errors.ModelNotReady: grpc.StatusCode.UNAVAILABLE,
    errors.Overloaded: grpc.StatusCode.RESOURCE_EXHAUSTED,
    errors.ModelLoadError: grpc.StatusCode.FAILED_PRECONDITION,
    errors.ControlDisabled: grpc.StatusCode.PERMISSION_DENIED,
    errors.ModelFailed: grpc.StatusCode.INTERNAL,
    errors.SessionNotFound: grpc.StatusCode.NOT_FOUND,
    errors.CannotStep: grpc.StatusCode.FAILED_PRECONDITION,
    errors.SessionModelGone: grpc.StatusCode.FAILED_PRECONDITION,
}


def status_for(error: Exception) -> tuple[grpc.StatusCode, str]:
    """The status and caller-facing message for an error raised while handling a call."""
    for error_type in type(error).__mro__:
        if error_type in STATUS_BY_ERROR:
            return STATUS_BY_ERROR[error_type], str(error)
    # An unknown failure's text may hold paths or internals: log it, answer with a reference.
    incident = uuid.uuid4().hex[:12]
    log.error("internal error %s", incident, exc_info=error)
    return grpc.StatusCode.INTERNAL, f"internal server error (incident {incident}; see server log)"


def guarded(handler):
    """Wraps a coroutine handler so every exception becomes a status with a clear message, never UNKNOWN.

    A decorator rather than a server interceptor: grpc.aio awaits an interceptor's coroutine before
    every call, where this adds one frame to the handler itself.
    """
    method = handler.__name__

    @functools.wraps(handler)
    async def guard(self, request, context):
        # The servicer's observer (metrics, access log) sees every call, its status and its duration.
        token, code = self.observer.start(method), grpc.StatusCode.OK
        try:
            return await handler(self, request, context)
        except asyncio.CancelledError:
            code = grpc.StatusCode.CANCELLED  # the caller went away (or the server stopped): not an OK
            raise
        except Exception as error:  # noqa: BLE001 (the point of this guard)
            if context.code() is not None and not isinstance(error, errors.ServingError):
                code = context.code()
                raise  # already aborted by the handler itself
            code, message = status_for(error)
            if code is grpc.StatusCode.INTERNAL:  # the access log names the incident the log holds
                note_incident(INCIDENT.search(message).group(1) if INCIDENT.search(message) else "")
            await context.abort(code, message)
        finally:
            self.observer.finish(token, code, context)
    return guard
