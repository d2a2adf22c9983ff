"""Builds the gRPC server: prediction, stats, model and session services (guarded handlers), standard
health (for the server and for each model), reflection, every method behind admission (limits,
undecodable bytes, draining); and drains it."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Sequence
from concurrent import futures
from dataclasses import dataclass

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection, reflection_pb2_grpc

from lstmserve.server.serving.registry import ModelRegistry
from lstmserve.server.serving.sessions import DEFAULT_SESSION_LIMITS, SessionLimits, SessionManager
from lstmserve.server.transport import inference_v2, model_service
from lstmserve.server.transport.admission import DEFAULT_LIMITS, Admission, CallLimits
from lstmserve.server.transport.auth import TokenAuth
from lstmserve.server.transport.model_service import ModelControl, ModelServicer
from lstmserve.server.transport.observe import NULL_OBSERVER, Observer
from lstmserve.server.transport.servicer import PredictionServicer
from lstmserve.server.transport.session_servicer import SERVICE_NAME as SESSION_SERVICE_NAME
from lstmserve.server.transport.session_servicer import SessionServicer
from lstmserve.server.transport.stats import StatsServicer
from lstmserve.v1 import model_service_pb2_grpc as msp_grpc
from lstmserve.v1 import prediction_service_pb2 as pb
from lstmserve.v1 import prediction_service_pb2_grpc as pb_grpc
from lstmserve.v1 import session_service_pb2_grpc as sspb_grpc
from lstmserve.v1 import stats_pb2 as spb
from lstmserve.v1 import stats_pb2_grpc as spb_grpc

log = logging.getLogger(__name__)

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["PredictionService"].full_name
STATS_SERVICE_NAME = spb.DESCRIPTOR.services_by_name["StatsService"].full_name
NO_CONTROL = ModelControl()  # no repository: ModelService reports status and refuses the rest
REAPER = "lstmserve-session-expiry"


@dataclass
class RunningServer:
    """A grpc.aio server running on its own event-loop thread, driven from ordinary threads.

    Health answers for "" and SERVICE_NAME (the server: SERVING once `set_serving(True)`), and for
    SERVICE_NAME/NAME per model: SERVING while the server is and that model has an AVAILABLE version.
    A worker of `serve --processes N` also waits for its supervisor's gate (`set_gate`): SERVING only
    while every worker is ready; alone, the gate stays open.
    """

    server: grpc.aio.Server
    port: int
    registry: ModelRegistry
    health: health.aio.HealthServicer
    loop: asyncio.AbstractEventLoop
    thread: threading.Thread
    admission: Admission
    serving: bool = False
    sessions: SessionManager | None = None
    gate_open: bool = True

    def set_serving(self, serving: bool) -> None:
        self.serving = serving
        self._call(self._publish_health())

    def set_gate(self, open_: bool) -> None:
        """The supervisor's word (any thread): every worker ready, or not."""
        self.gate_open = open_
        try:
            asyncio.run_coroutine_threadsafe(self._publish_health(), self.loop)
        except RuntimeError:  # the loop has closed: the server is gone
            pass

    def drain(self, grace: float) -> bool:
        """Graceful shutdown: health NOT_SERVING at once (the server's and every model's), new calls
        UNAVAILABLE, and up to `grace` s for the calls already admitted (queued ones included) to be
        answered; then the server stops. Closing the models is the caller's (the repository's). False
        when calls were still running at the end of the grace."""
        if self.loop.is_closed():
            return True
        started = time.monotonic()
        self.serving = False
        self._call(self.health.enter_graceful_shutdown())
        # The port stays open meanwhile: a call that arrives is answered UNAVAILABLE (and retried on
        # another replica) rather than left in gRPC's queue, which a stopping server answers CANCELLED.
        finished = self._call(self.admission.drained(grace), timeout=grace + 30)
        self.stop(grace=max(0.0, grace - (time.monotonic() - started)))
        return finished

    def stop(self, grace: float | None = None) -> None:
        if self.loop.is_closed():
            return
        self.set_serving(False)
        self._call(self.server.stop(grace), timeout=(grace or 0) + 30)
        self._call(_stop_expiry())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=30)
        self.loop.close()

    def model_changed(self, name: str) -> None:
        """The registry's listener (any thread): publish that model's health on the loop."""
        try:
            asyncio.run_coroutine_threadsafe(self._publish_model(name), self.loop)
        except RuntimeError:  # the loop has closed: the server is gone, nobody asks any more
            pass

    async def _publish_health(self) -> None:
        status = _status(self.serving and self.gate_open)
        for service in ("", SERVICE_NAME):
            await self.health.set(service, status)
        for name in self.registry.names():
            await self._publish_model(name)

    async def _publish_model(self, name: str) -> None:
        serving = self.serving and self.gate_open and self.registry.available(name)
        await self.health.set(model_health_name(name), _status(serving))

    def _call(self, coroutine, timeout: float = 30):
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)


def model_health_name(name: str) -> str:
    """The grpc.health.v1 service name of one model, as a Kubernetes probe names it."""
    return f"{SERVICE_NAME}/{name}"


def _status(serving: bool) -> int:
    return health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING


def create_server(registry: ModelRegistry, address: str = "127.0.0.1:0", workers: int = 32, *,
                  credentials: grpc.ServerCredentials | None = None,
                  auth: TokenAuth | None = None,
                  interceptors: Sequence[grpc.aio.ServerInterceptor] = (),
                  control: ModelControl = NO_CONTROL, observer: Observer = NULL_OBSERVER,
                  sessions: SessionLimits = DEFAULT_SESSION_LIMITS,
                  limits: CallLimits = DEFAULT_LIMITS, reuse_port: bool = False) -> RunningServer:
    """A started server on `address` (port 0 picks a free port), NOT_SERVING until told otherwise.

    One event loop answers every call (no thread per call, so no contention for the interpreter lock
    between calls); models run on their batchers' threads (tiny compiled twins in place). `workers`
    threads serve any handler that is not a coroutine. `credentials` (transport.auth.server_credentials)
    make the port TLS only; `auth` (transport.auth.TokenAuth) makes calls need a bearer token;
    `interceptors` see every call (the tracing one, with --otel);
    `control` is what ModelService's load, unload and rescan reach (none: they are refused).
    `observer` (transport.observe) counts and logs every call the servicers answer.
    `sessions` bounds streaming sessions (idle time, sessions per model, forecast horizon); `limits`
    bound the calls and request bytes taken on at once (transport.admission). `reuse_port`: the
    port is shared with the other workers of `serve --processes N` (SO_REUSEPORT); otherwise a port in
    use is an error.
    """
    manager = SessionManager(registry, sessions)
    if auth is not None and observer.metrics is not None:
        auth.on_rejected = observer.metrics.count_auth_rejection
    admission = (Admission(limits, observer.metrics.count_admission_refusal, auth)
                 if observer.metrics is not None else Admission(limits, auth=auth))
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="grpc-loop", daemon=True)
    thread.start()
    try:
        server, port, health_servicer = asyncio.run_coroutine_threadsafe(
            _start(registry, address, workers, credentials, tuple(interceptors), control, observer, manager,
                   admission, reuse_port),
            loop).result(60)
    except BaseException:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=30)
        raise
    running = RunningServer(server, port, registry, health_servicer, loop, thread, admission,
                            sessions=manager)
    registry.subscribe(running.model_changed)
    running.set_serving(False)
    return running


async def _start(registry: ModelRegistry, address: str, workers: int,
                 credentials: grpc.ServerCredentials | None, interceptors: tuple, control: ModelControl,
                 observer: Observer, manager: SessionManager, admission: Admission, reuse_port: bool):
    server = grpc.aio.server(
        futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="rpc"),
        interceptors=interceptors,
        options=[*admission.limits.grpc_options(), ("grpc.so_reuseport", int(reuse_port))],
    )
    prediction, stats = PredictionServicer(registry, manager.limits), StatsServicer(registry)
    models, session_servicer = ModelServicer(registry, control), SessionServicer(manager)
    for servicer in (prediction, stats, models, session_servicer):
        servicer.observer = observer
    health_servicer = health.aio.HealthServicer()
    names = (SERVICE_NAME, STATS_SERVICE_NAME, model_service.SERVICE_NAME, SESSION_SERVICE_NAME,
             health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
             inference_v2.SERVICE_NAME, reflection.SERVICE_NAME)
    for add in (
        lambda target: pb_grpc.add_PredictionServiceServicer_to_server(prediction, target),
        lambda target: sspb_grpc.add_SessionServiceServicer_to_server(session_servicer, target),
        lambda target: spb_grpc.add_StatsServiceServicer_to_server(stats, target),
        lambda target: msp_grpc.add_ModelServiceServicer_to_server(models, target),
        lambda target: health_pb2_grpc.add_HealthServicer_to_server(health_servicer, target),
        # The Open Inference Protocol (KServe V2) on the same port, over the same registry.
        lambda target: inference_v2.add_to_server(target, registry, health_servicer, control, observer),
        lambda target: reflection_pb2_grpc.add_ServerReflectionServicer_to_server(
            reflection.aio.ReflectionServicer(names), target),
    ):
        admission.register(server, add)
    admission.register_unknown_methods(server)
    try:
        port = (server.add_secure_port(address, credentials) if credentials is not None
                else server.add_insecure_port(address))
    except RuntimeError as error:  # grpc.aio raises where the sync server returned 0
        raise OSError(f"cannot listen on {address}") from error
    if port == 0:
        raise OSError(f"cannot listen on {address}")
    await server.start()
    asyncio.get_running_loop().create_task(_expire_idle_sessions(manager), name=REAPER)
    return server, port, health_servicer


async def _stop_expiry() -> None:
    for task in [t for t in asyncio.all_tasks() if t.get_name() == REAPER]:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def _expire_idle_sessions(manager: SessionManager) -> None:
    """Ends idle sessions a few times per idle period, so their memory goes back without a call."""
    interval = min(max(manager.limits.idle_seconds / 4, 0.05), 5.0)
    while True:
        await asyncio.sleep(interval)
        ended = manager.expire_idle()
        if ended:
            log.debug("%d idle sessions expired", ended)

