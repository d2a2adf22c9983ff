"""OpenTelemetry traces for `--otel`: a span per call from the official gRPC instrumentation, and child
spans for a prediction's stages (decode, queue wait, model run, encode).

OpenTelemetry itself is imported only when tracing is on. Off, `stage` hands back one shared null
context and the engine's timing hook stays unset: a few attribute reads per call, no OpenTelemetry code.
"""

from __future__ import annotations

import contextlib

from lstmserve.server.engine.base import engine_timing

_NULL = contextlib.nullcontext()
_tracer = None


def stage(name: str):
    """A child span around one stage of a call when tracing is on; a shared null context when off."""
    return _NULL if _tracer is None else _tracer.start_as_current_span(name)


@contextlib.contextmanager
def engine_stages():
    """Around an engine call: spans for the time a request queued and the time its batch ran, from the
    clock readings the batcher takes (on its own thread, where no span can be opened)."""
    if _tracer is None:
        yield
        return
    readings: list[tuple[int, int, int]] = []
    token = engine_timing.set(readings.append)
    try:
        yield
    finally:
        engine_timing.reset(token)
        for queued, started, finished in readings:
            _tracer.start_span("queue wait", start_time=queued).end(end_time=started)
            _tracer.start_span("model run", start_time=started).end(end_time=finished)


def enable(tracer_provider=None) -> list:
    """Turn tracing on for this process; the gRPC server interceptor that opens each call's span.

    Without a provider, spans go over OTLP to where the standard OTEL_EXPORTER_OTLP_* variables say
    (localhost:4317 by default), batched off the event loop."""
    global _tracer
    from opentelemetry.instrumentation.grpc import aio_server_interceptor
    if tracer_provider is None:
        tracer_provider = _otlp_provider()
    _tracer = tracer_provider.get_tracer("lstmserve.server")
    return [aio_server_interceptor(tracer_provider=tracer_provider)]


def _otlp_provider():
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor
    provider = TracerProvider(resource=Resource.create({"service.name": "lstmserve"}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    return provider


def disable() -> None:
    """Back to no tracing (tests that turned it on for one server)."""
    global _tracer
    _tracer = None

