"""SessionService: streaming sessions and forecasts. Decode, call the runtime, encode.

Unary calls name their session by id; in StreamSession the stream is the session, ended in `finally`
however the stream ends (half-close, cancellation, a client that went away). A step that fails inside
a stream is answered in-band and the stream goes on; only an error that ends the session ends the stream.
"""

from __future__ import annotations

from lstmserve.client.tensors import from_tensor
from lstmserve.server.errors import InvalidInput, SessionModelGone, SessionNotFound
from lstmserve.server.serving.forecast import forecast_model
from lstmserve.server.serving.sessions import Session, SessionManager
from lstmserve.server.transport import converters, session_wire
from lstmserve.server.transport.observe import ObservedServicer
from lstmserve.server.transport.status import guarded, status_for
from lstmserve.v1 import session_service_pb2 as spb
from lstmserve.v1 import session_service_pb2_grpc as spb_grpc

SERVICE_NAME = spb.DESCRIPTOR.services_by_name["SessionService"].full_name


class SessionServicer(spb_grpc.SessionServiceServicer, ObservedServicer):
    def __init__(self, manager: SessionManager) -> None:
        self.manager = manager

    @guarded
    async def CreateSession(self, request: spb.CreateSessionRequest, context) -> spb.SessionInfo:
        session = self.manager.create(request.model.name, request.model.version, request.prepared)
        return session_wire.info_to_wire(session, self.manager.limits)

    @guarded
    async def Step(self, request: spb.StepRequest, context) -> spb.StepResponse:
        session = self.manager.get(request.session_id)
        return await self._step(session, request)

    @guarded
    async def ResetSession(self, request: spb.SessionRequest, context) -> spb.SessionInfo:
        session = self.manager.get(request.session_id)
        session.reset()
        return session_wire.info_to_wire(session, self.manager.limits)

    @guarded
    async def EndSession(self, request: spb.SessionRequest, context) -> spb.EndSessionResponse:
        return spb.EndSessionResponse(steps=self.manager.end(request.session_id).position)

    @guarded
    async def Forecast(self, request: spb.ForecastRequest, context) -> spb.ForecastResponse:
        model = self.manager.registry.get(request.model.name, request.model.version)
        history = from_tensor(request.history, "history")
        values = await forecast_model(model, history, request.horizon, self.manager.limits)
        return session_wire.forecast_to_wire(model, values, model.forecasting.method(request.horizon))

    async def StreamSession(self, requests, context):
        session = None
        try:
            async for request in requests:
                if session is None:
                    session = await self._open(request, context)
                    yield spb.StreamResponse(opened=session_wire.info_to_wire(session, self.manager.limits))
                else:
                    yield await self._stream_message(session, request, context)
        finally:
            if session is not None:
                self.manager.discard(session, "ended with its stream")

    async def _open(self, request: spb.StreamRequest, context) -> Session:
        try:
            if request.WhichOneof("message") != "open":
                raise InvalidInput("a stream's first message must be `open` (the model to start a session "
                                   f"on); got {request.WhichOneof('message') or 'an empty message'}")
            return self.manager.create(request.open.model.name, request.open.model.version,
                                       request.open.prepared)
        except Exception as error:  # noqa: BLE001 (every failure becomes the stream's status)
            await context.abort(*status_for(error))

    async def _stream_message(self, session: Session, request: spb.StreamRequest,
                              context) -> spb.StreamResponse:
        kind = request.WhichOneof("message")
        try:
            self.manager.touch(session)  # marks it used; an expired or ended session ends the stream
            if kind == "step":
                answer = spb.StreamResponse()
                await self._step(session, request.step, answer.step)
                return answer
            if kind == "reset":
                session.reset()
                return spb.StreamResponse(reset=session_wire.info_to_wire(session, self.manager.limits))
            raise InvalidInput(f"this stream's session is open; send `step` or `reset` messages, not "
                               f"{kind or 'an empty message'}")
        except (SessionNotFound, SessionModelGone) as error:
            await context.abort(*status_for(error))
        except Exception as error:  # noqa: BLE001 (answered in-band: the session is as it was)
            code, message = status_for(error)
            return spb.StreamResponse(error=spb.StepError(code=code.value[0], message=message))

    async def _step(self, session: Session, request: spb.StepRequest,
                    into: spb.StepResponse | None = None) -> spb.StepResponse:
        mode = converters.mode_from_wire(request.mode)
        inputs = session_wire.steps_from_wire(request)
        try:
            result = await session.step(inputs, mode)
        except SessionModelGone:
            self.manager.discard(session, "ended: its model version was unloaded")
            raise
        return session_wire.step_to_wire(session, result, into)

