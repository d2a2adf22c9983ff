"""Every call's way in: request bytes decoded without ever raising, calls and request bytes in flight
bounded, new calls refused while the server drains; health checks always answered.

grpc.aio decodes a request before any handler or `guarded` runs, and answers a decoding failure with
UNKNOWN and a traceback in the log. So every method is registered here with no deserializer: the
handler below receives the raw bytes, checks the caller's token (when the server has a token file) and
the limits before spending anything on them (a refused 60 MB request is never parsed), parses them
itself, and answers bytes that are no valid message with INVALID_ARGUMENT and at most one log line a
minute.

Everything runs on the server's one event loop, so the counters need no lock.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import grpc
from google.protobuf.message import DecodeError

from lstmserve.server.errors import InvalidInput
from lstmserve.server.transport.auth import TokenAuth
from lstmserve.server.transport.status import status_for

log = logging.getLogger(__name__)

MiB = 1024 * 1024
# Probes answer from memory in microseconds, and an orchestrator that sees them fail restarts a server
# that is only busy: they are never counted, refused for load, or refused while draining (health then
# says NOT_SERVING itself, and ServerReady false).
EXEMPT_METHODS = ("/grpc.health.v1.Health/", "/inference.GRPCInferenceService/ServerLive",
                  "/inference.GRPCInferenceService/ServerReady", "/inference.GRPCInferenceService/ModelReady")
# The pause a refused caller is told to take (gRPC's retry pushback trailer, and the message).
RETRY_AFTER_MS = 100
UNDECODABLE_LOG_EVERY_S = 60.0
# A draining server stops once its calls are answered and no new one has come for this long.
QUIET_S = 0.2


@dataclass(frozen=True)
class CallLimits:
    """What one server takes on at once. Calls beyond `max_concurrent_calls`, or whose request would take
    the bytes of requests in flight past `max_inflight_bytes`, get RESOURCE_EXHAUSTED at once."""

    max_concurrent_calls: int = 1024
    max_inflight_bytes: int = 256 * MiB
    max_message_bytes: int = 64 * MiB

    def __post_init__(self) -> None:
        if min(self.max_concurrent_calls, self.max_inflight_bytes, self.max_message_bytes) < 1:
            raise ValueError("--max-concurrent-calls, --max-inflight-bytes and --max-message-bytes must be "
                             "1 or more")
        if self.max_inflight_bytes < self.max_message_bytes:
            raise ValueError(f"--max-inflight-bytes ({self.max_inflight_bytes}) must be at least "
                             f"--max-message-bytes ({self.max_message_bytes}): a request of the largest "
                             "size accepted could never be admitted")

    def grpc_options(self) -> list[tuple[str, int]]:
        """The gRPC server options these limits imply."""
        # gRPC queues calls that have arrived before the server asks for them (grpc.aio asks for one
        # per method at a time), and past 1,000 queued (its default) it drops them at random as
        # CANCELLED, health checks included. The queue is raised well past the calls admitted, so
        # every call reaches admission and is answered: OK, or RESOURCE_EXHAUSTED with a retry hint.
        queued = max(16 * self.max_concurrent_calls, 10_000)
        return [("grpc.max_send_message_length", self.max_message_bytes),
                ("grpc.max_receive_message_length", self.max_message_bytes),
                ("grpc.server.max_pending_requests", queued),
                ("grpc.server.max_pending_requests_hard_limit", 2 * queued)]


DEFAULT_LIMITS = CallLimits()


class Admission:
    """Wraps method handlers; counts the calls and request bytes they hold. `on_refused(method, reason)`
    hears of every refusal (reason: overload, inflight_bytes, draining or undecodable), for metrics.
    With `auth`, every method it guards first needs an accepted token (UNAUTHENTICATED otherwise)."""

    def __init__(self, limits: CallLimits = DEFAULT_LIMITS,
                 on_refused: Callable[[str, str], None] = lambda method, reason: None,
                 auth: TokenAuth | None = None) -> None:
        self.limits = limits
        self.on_refused = on_refused
        self.auth = auth
        self.calls = 0
        self.bytes = 0
        self.draining = False
        self._last_refusal = 0.0
        self._undecodable = _Throttled(UNDECODABLE_LOG_EVERY_S)

    def register(self, server: grpc.aio.Server, add: Callable[[object], None]) -> None:
        """Run a generated `add_*_to_server` (as `add(target)`) and register its methods on `server`,
        each wrapped by this admission."""
        collected = _Collected()
        add(collected)
        for service, handlers in collected.services.items():
            wrapped = {name: self.wrap(f"/{service}/{name}", handler) for name, handler in handlers.items()}
            server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service, wrapped),))
            server.add_registered_method_handlers(service, wrapped)

    def register_unknown_methods(self, server: grpc.aio.Server) -> None:
        """Answer every method no service has (registered last): UNAUTHENTICATED without an accepted
        token, so a caller without one learns nothing of what the server offers; else UNIMPLEMENTED."""
        server.add_generic_rpc_handlers((_UnknownMethods(self._undecodable, self.on_refused, self.auth),))

    async def drained(self, timeout: float) -> bool:
        """Refuse new calls (UNAVAILABLE) and wait up to `timeout` s for the admitted ones to finish,
        then for callers to stop sending new ones (QUIET_S without one): a call that reaches a server
        as it stops is answered CANCELLED by gRPC itself (grpc/grpc#41785), not UNAVAILABLE."""
        self.draining = True
        self._last_refusal = time.monotonic()
        deadline = self._last_refusal + timeout
        while (self.calls or time.monotonic() - self._last_refusal < QUIET_S) and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        return self.calls == 0

    def wrap(self, method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        parse = _Parser(method, handler.request_deserializer, self._undecodable, self.on_refused,
                        self.auth if self.auth is not None and self.auth.guards(method) else None)
        exempt = method.startswith(EXEMPT_METHODS)
        if handler.request_streaming:
            # Messages are read as they come (an async iterator, or context.read()): gRPC keeps decoding
            # them, and the iterator the handler gets answers a decoding failure as undecodable bytes.
            behavior = handler.stream_stream or handler.stream_unary
            return method_handler(self._streaming(behavior, parse), True, handler.response_streaming,
                                  handler.request_deserializer, handler.response_serializer)
        behavior = handler.unary_unary or handler.unary_stream
        if not (inspect.iscoroutinefunction(behavior) or inspect.isasyncgenfunction(behavior)):
            wrapped = _in_thread(behavior, parse)
        elif exempt:
            wrapped = self._exempt(behavior, parse)
        elif inspect.isasyncgenfunction(behavior):
            wrapped = self._admitted_stream(behavior, parse)
        else:
            wrapped = self._admitted(behavior, parse)
        return method_handler(wrapped, False, handler.response_streaming,
                              response_serializer=handler.response_serializer)

    def _admitted(self, behavior, parse: _Parser):
        """The handler of a counted method: refused while draining or beyond a limit, else decoded.
        (The per-call path: written out in full rather than through _enter, one coroutine fewer.)"""
        limits, deserialize, auth = self.limits, parse.deserialize, parse.auth

        async def admit(raw: bytes, context):
            if auth is not None and (refusal := auth.refusal(context.invocation_metadata())) is not None:
                await auth.refuse(parse.method, refusal, context)
            size = len(raw)
            if self.draining or self.calls >= limits.max_concurrent_calls or \
                    self.bytes + size > limits.max_inflight_bytes:
                await self._refuse(parse.method, context, size)
            try:
                request = deserialize(raw)
            except Exception as error:  # noqa: BLE001 (any failure to parse is the caller's bytes)
                await parse.refuse(error, size, context)
            self.calls += 1
            self.bytes += size
            try:
                return await behavior(request, context)
            finally:
                self.calls -= 1
                self.bytes -= size
        return admit

    def _exempt(self, behavior, parse: _Parser):
        if inspect.isasyncgenfunction(behavior):
            async def stream(raw: bytes, context):
                await parse.authenticate(context)
                async for response in behavior(await parse(raw, context), context):
                    yield response
            return stream

        async def answer(raw: bytes, context):
            await parse.authenticate(context)
            return await behavior(await parse(raw, context), context)
        return answer

    def _admitted_stream(self, behavior, parse: _Parser):
        """A counted method that streams its answer: counted until its last message."""
        async def stream(raw: bytes, context):
            request = await self._enter(parse, raw, context)
            try:
                async for response in behavior(request, context):
                    yield response
            finally:
                self._leave(len(raw))
        return stream

    def _streaming(self, behavior, parse: _Parser):
        """A client-streaming method (a session's stream, reflection): refused while draining, but not
        counted as a call: a stream may stay open for hours, and sessions have their own limit
        (--max-sessions), which the concurrent-call limit must not undercut."""
        async def enter(context) -> None:
            await parse.authenticate(context)
            if self.draining:
                await self._refuse(parse.method, context, 0)

        if inspect.isasyncgenfunction(behavior):
            async def stream(requests, context):
                await enter(context)
                async for response in behavior(parse.guard(requests, context), context):
                    yield response
            return stream

        async def answer(requests, context):
            await enter(context)
            return await behavior(parse.guard(requests, context), context)
        return answer

    async def _enter(self, parse: _Parser, raw: bytes, context):
        """Admit one call (or refuse it) and decode its request."""
        await parse.authenticate(context)
        size, limits = len(raw), self.limits
        if self.draining or self.calls >= limits.max_concurrent_calls or \
                self.bytes + size > limits.max_inflight_bytes:
            await self._refuse(parse.method, context, size)
        request = await parse(raw, context)
        self.calls += 1
        self.bytes += size
        return request

    def _leave(self, size: int) -> None:
        self.calls -= 1
        self.bytes -= size

    async def _refuse(self, method: str, context, size: int) -> None:
        limits = self.limits
        over_calls = self.calls >= limits.max_concurrent_calls
        reason = "draining" if self.draining else "overload" if over_calls else "inflight_bytes"
        self.on_refused(method, reason)
        if self.draining:
            self._last_refusal = time.monotonic()
            await context.abort(grpc.StatusCode.UNAVAILABLE,
                                "server is shutting down; retry (another replica answers)")
        if over_calls:
            message = (f"server is answering {self.calls} calls, its limit (--max-concurrent-calls "
                       f"{limits.max_concurrent_calls})")
        else:
            message = (f"server holds {self.bytes} bytes of requests in flight and this one has {size} "
                       f"(--max-inflight-bytes {limits.max_inflight_bytes})")
        await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED,
                            f"{message}; retry in about {RETRY_AFTER_MS} ms, with backoff",
                            trailing_metadata=(("grpc-retry-pushback-ms", str(RETRY_AFTER_MS)),))


class _Parser:
    """One method's request decoder that answers undecodable bytes with INVALID_ARGUMENT, never UNKNOWN."""

    def __init__(self, method: str, deserializer, throttle: _Throttled,
                 on_refused: Callable[[str, str], None], auth: TokenAuth | None = None) -> None:
        self.method = method
        self.on_refused = on_refused
        self.auth = auth  # None: the method needs no token
        self.deserialize = deserializer or (lambda raw: raw)
        message_type = getattr(deserializer, "__self__", None)  # FromString is the class's method
        name = getattr(getattr(message_type, "DESCRIPTOR", None), "full_name", None)
        self.message = f"request is not a valid {name or 'request of ' + method}"
        self.throttle = throttle

    async def authenticate(self, context) -> None:
        """Ends the call UNAUTHENTICATED unless it carries an accepted token (when it needs one)."""
        auth = self.auth
        if auth is not None and (refusal := auth.refusal(context.invocation_metadata())) is not None:
            await auth.refuse(self.method, refusal, context)

    async def __call__(self, raw: bytes, context):
        try:
            return self.deserialize(raw)
        except Exception as error:  # noqa: BLE001 (any failure to parse is the caller's bytes)
            await self.refuse(error, len(raw), context)

    async def guard(self, requests, context):
        """The messages of a client stream, gRPC's decoding failures answered as undecodable bytes."""
        iterator = requests.__aiter__()
        while True:
            try:
                request = await iterator.__anext__()
            except StopAsyncIteration:
                return
            except DecodeError as error:
                await self.refuse(error, None, context)
            yield request

    async def refuse(self, error: Exception, size: int | None, context) -> None:
        await context.abort(*self.status(error, size, context))

    def status(self, error: Exception, size: int | None, context) -> tuple[grpc.StatusCode, str]:
        """INVALID_ARGUMENT and its message for undecodable bytes, logged at most once a minute."""
        self.on_refused(self.method, "undecodable")
        suppressed = self.throttle.ready()
        if suppressed is not None:
            log.warning("refused undecodable bytes (%s) for %s from %s (%s)%s; such lines at most every "
                        "%.0f s", "a streamed message" if size is None else size, self.method, context.peer(),
                        type(error).__name__,
                        f", and {suppressed} more since the last line" if suppressed else "",
                        self.throttle.every_s)
        code, message = status_for(InvalidInput(self.message))
        return code, message if size is None else f"{message} ({size} bytes)"


class _Throttled:
    """At most one log line every `every_s` seconds; `ready` says how many were held back meanwhile."""

    def __init__(self, every_s: float) -> None:
        self.every_s = every_s
        self._last = float("-inf")
        self._held = 0

    def ready(self) -> int | None:
        now = time.monotonic()
        if now - self._last < self.every_s:
            self._held += 1
            return None
        held, self._held, self._last = self._held, 0, now
        return held


class _UnknownMethods(grpc.GenericRpcHandler):
    def __init__(self, throttle: _Throttled, on_refused: Callable[[str, str], None],
                 auth: TokenAuth | None) -> None:
        self.throttle, self.on_refused, self.auth = throttle, on_refused, auth

    def service(self, handler_call_details) -> grpc.RpcMethodHandler:
        method = handler_call_details.method
        parse = _Parser(method, None, self.throttle, self.on_refused, self.auth)

        async def unknown(requests, context):
            # Streams both ways: any caller's shape of call gets the status; nothing it sent is read.
            await parse.authenticate(context)
            await context.abort(grpc.StatusCode.UNIMPLEMENTED,
                                f"unknown method {method[:100]!r}: this server has no such service or method")
            yield  # an async generator, as a streaming handler must be

        return method_handler(unknown, True, True)


class _Collected:
    """Stands in for the server while a generated `add_*_to_server` registers its service."""

    def __init__(self) -> None:
        self.services: dict[str, dict[str, grpc.RpcMethodHandler]] = {}

    def add_generic_rpc_handlers(self, handlers: Iterable) -> None:
        pass  # the same methods arrive through add_registered_method_handlers

    def add_registered_method_handlers(self, service: str, handlers: dict) -> None:
        self.services[service] = dict(handlers)


def _in_thread(behavior, parse: _Parser):
    """A plain function stays one, so grpc.aio runs it on its thread pool as before (lstmserve has none:
    only generated placeholders of methods a library leaves unimplemented, such as Health/List)."""
    def answer(raw: bytes, context):
        auth = parse.auth
        if auth is not None and (refusal := auth.refusal(context.invocation_metadata())) is not None:
            auth.refuse_in_thread(parse.method, refusal, context)
        try:
            request = parse.deserialize(raw)
        except Exception as error:  # noqa: BLE001 (any failure to parse is the caller's bytes)
            context.abort(*parse.status(error, len(raw), context))
        return behavior(request, context)
    return answer


def method_handler(behavior, request_streaming: bool, response_streaming: bool, request_deserializer=None,
                   response_serializer=None) -> grpc.RpcMethodHandler:
    """A handler of the given streaming shape (receiving requests as bytes unless given a deserializer)."""
    make = {
        (False, False): grpc.unary_unary_rpc_method_handler,
        (False, True): grpc.unary_stream_rpc_method_handler,
        (True, False): grpc.stream_unary_rpc_method_handler,
        (True, True): grpc.stream_stream_rpc_method_handler,
    }[request_streaming, response_streaming]
    return make(behavior, request_deserializer=request_deserializer, response_serializer=response_serializer)
