"""AsyncClient: the asyncio twin of Client, same methods, awaited."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import grpc

from lstmserve.client import _messages as msg
from lstmserve.client import _sessions as ses
from lstmserve.client.aio_sessions import AsyncSession
from lstmserve.client.channel import DEFAULT_TARGET, Pem, Target, channel_spec
from lstmserve.client.client import DEFAULT_TIMEOUT_S, LOAD_TIMEOUT_S
from lstmserve.client.errors import LstmserveError
from lstmserve.client.tensors import from_tensor
from lstmserve.v1 import model_pb2 as mpb
from lstmserve.v1 import model_service_pb2 as msp
from lstmserve.v1 import model_service_pb2_grpc as msp_grpc
from lstmserve.v1 import prediction_service_pb2 as pb
from lstmserve.v1 import prediction_service_pb2_grpc as pb_grpc
from lstmserve.v1 import session_service_pb2_grpc as spb_grpc


class AsyncClient:
    """`async with AsyncClient("localhost:8500") as client: await client.predict(x)`.

    Takes Client's target, TLS, token and options arguments, with the same meaning.
    """

    def __init__(self, target: Target = DEFAULT_TARGET, *, model: str | None = None,
                 timeout: float = DEFAULT_TIMEOUT_S, tls: bool = False,
                 root_certificates: Pem | None = None, client_cert: Pem | None = None,
                 client_key: Pem | None = None, token: str | None = None,
                 health_check: bool | None = None,
                 options: Sequence[tuple[str, Any]] = ()) -> None:
        spec = channel_spec(target, tls=tls, root_certificates=root_certificates,
                            client_cert=client_cert, client_key=client_key, token=token,
                            health_check=health_check, options=options)
        self.target = target
        self.model = model
        self.timeout = timeout
        self._metadata = spec.metadata
        self._channel = spec.open_aio()
        self._stub = pb_grpc.PredictionServiceStub(self._channel)
        self._models = msp_grpc.ModelServiceStub(self._channel)
        self._sessions = spb_grpc.SessionServiceStub(self._channel)
        self._health = self._channel.unary_unary(msg.HEALTH_CHECK)

    async def predict(self, x: msg.Inputs, *, model: str | None = None,
                      version: msg.Version | None = None, label: str | None = None,
                      prepared: bool = False, timeout: float | None = None) -> msg.Outputs:
        response = await self._predict(x, mpb.PREDICTION_MODE_VALUES, model, version, label, prepared,
                                       timeout)
        return msg.read_outputs(response)

    async def predict_classes(self, x: msg.Inputs, *, labels: bool = False,
                              model: str | None = None, version: msg.Version | None = None,
                              label: str | None = None, prepared: bool = False,
                              timeout: float | None = None) -> msg.Outputs:
        response = await self._predict(x, mpb.PREDICTION_MODE_CLASSES, model, version, label, prepared,
                                       timeout)
        return msg.read_labels(response) if labels else msg.read_outputs(response)

    async def predict_proba(self, x: msg.Inputs, *, model: str | None = None,
                            version: msg.Version | None = None, label: str | None = None,
                            prepared: bool = False, timeout: float | None = None) -> msg.Outputs:
        response = await self._predict(x, mpb.PREDICTION_MODE_PROBABILITIES, model, version, label,
                                       prepared, timeout)
        return msg.read_outputs(response)

    def session(self, model: str | None = None, *, version: str | None = None, prepared: bool = False,
                stream: bool = True, timeout: float | None = None) -> AsyncSession:
        """`async with client.session("m") as s: await s.step(x)` (or `s = await client.session("m")`)."""
        return AsyncSession(self._sessions, model or self.model, version=version, prepared=prepared,
                            stream=stream, timeout=self.timeout if timeout is None else timeout,
                            metadata=self._metadata)

    async def stream(self, steps, model: str | None = None, *, mode: str = "values", labels: bool = False,
                     version: str | None = None, prepared: bool = False):
        """One session over an iterable or async iterable of step messages; yields answers in order."""
        async with self.session(model, version=version, prepared=prepared) as session:
            async for result in session.stream(steps, mode=mode, labels=labels):
                yield result

    async def forecast(self, history, horizon: int, *, model: str | None = None,
                       version: str | None = None, timeout: float | None = None):
        array, squeeze = ses.history_array(history)
        request = ses.forecast_request(array, horizon, model or self.model, version)
        response = await self._call(self._sessions.Forecast, request, timeout)
        values = from_tensor(response.forecast, "forecast")
        return values[0] if squeeze else values

    async def metadata(self, model: str | None = None, *, version: msg.Version | None = None,
                       label: str | None = None, timeout: float | None = None) -> mpb.ModelMetadata:
        request = pb.GetModelMetadataRequest(model=msg.model_spec(model or self.model, version, label))
        return (await self._call(self._stub.GetModelMetadata, request, timeout)).metadata

    async def models(self, *, timeout: float | None = None) -> list[mpb.ModelMetadata]:
        response = await self._call(self._stub.ListModels, pb.ListModelsRequest(), timeout)
        return list(response.models)

    async def model_status(self, model: str | None = None, *,
                           timeout: float | None = None) -> list[msp.ModelStatus]:
        request = msp.GetModelStatusRequest(name=model or "")
        return list((await self._call(self._models.GetModelStatus, request, timeout)).models)

    async def load_model(self, model: str, version: msg.Version | None = None, *,
                         timeout: float | None = None) -> msp.ModelStatus:
        request = msg.load_request(model, version)
        return (await self._call(self._models.LoadModel, request, timeout or LOAD_TIMEOUT_S)).status

    async def unload_model(self, model: str, version: msg.Version | None = None, *,
                           timeout: float | None = None) -> msp.ModelStatus:
        request = msg.unload_request(model, version)
        return (await self._call(self._models.UnloadModel, request, timeout)).status

    async def reload_repository(self, *, timeout: float | None = None) -> list[msp.ModelStatus]:
        request = msp.ReloadRepositoryRequest()
        response = await self._call(self._models.ReloadRepository, request, timeout or LOAD_TIMEOUT_S)
        return list(response.models)

    async def health(self, service: str = "", *, timeout: float | None = None) -> str:
        raw = await self._call(self._health, msg.encode_health_request(service), timeout)
        return msg.decode_health_response(raw)

    async def close(self) -> None:
        await self._channel.close()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def _predict(self, x, mode, model, version, label, prepared, timeout) -> pb.PredictResponse:
        request = msg.predict_request(x, mode, model or self.model, version, prepared, label)
        return await self._call(self._stub.Predict, request, timeout)

    async def _call(self, method: Any, request: Any, timeout: float | None) -> Any:
        try:
            return await method(request, timeout=self.timeout if timeout is None else timeout,
                                metadata=self._metadata)
        except grpc.RpcError as error:
            raise LstmserveError.from_rpc_error(error) from None
