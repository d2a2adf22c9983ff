"""The one table from runtime errors to gRPC status codes, applied by a server interceptor."""

from __future__ import annotations

import inspect
import logging
import uuid

import grpc

from lstmserve.client.tensors import TensorDecodeError
from lstmserve.server.runtime import errors

log = logging.getLogger(__name__)

STATUS_BY_ERROR: dict[type[Exception], grpc.StatusCode] = {
    errors.InvalidInput: grpc.StatusCode.INVALID_ARGUMENT,
    TensorDecodeError: grpc.StatusCode.INVALID_ARGUMENT,
    errors.ModelNotFound: grpc.StatusCode.NOT_FOUND,
    errors.ModeNotSupported: grpc.StatusCode.FAILED_PRECONDITION,
    errors.ModelNotReady: grpc.StatusCode.UNAVAILABLE,
    errors.Overloaded: grpc.StatusCode.RESOURCE_EXHAUSTED,
    errors.ModelLoadError: grpc.StatusCode.FAILED_PRECONDITION,
    errors.ModelFailed: grpc.StatusCode.INTERNAL,
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


class ErrorInterceptor(grpc.aio.ServerInterceptor):
    """Turns every exception of a unary handler into a status with a clear message, never UNKNOWN."""

    def __init__(self) -> None:
        self._guarded: dict[str, grpc.RpcMethodHandler] = {}  # one wrapper per method, not per call

    async def intercept_service(self, continuation, handler_call_details):
        method = handler_call_details.method
        if method in self._guarded:
            return self._guarded[method]
        handler = await continuation(handler_call_details)
        if handler is None or handler.unary_unary is None:
            return handler
        self._guarded[method] = _guard(handler)
        return self._guarded[method]


def _guard(handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
    behaviour = handler.unary_unary

    async def guarded(request, context):
        try:
            answer = behaviour(request, context)
            return await answer if inspect.isawaitable(answer) else answer
        except Exception as error:  # noqa: BLE001 (the point of this interceptor)
            if context.code() is not None and not isinstance(error, errors.ServingError):
                raise  # already aborted by the handler itself
            code, message = status_for(error)
            await context.abort(code, message)

    return grpc.unary_unary_rpc_method_handler(
        guarded, request_deserializer=handler.request_deserializer,
        response_serializer=handler.response_serializer,
    )
