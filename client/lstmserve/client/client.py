"""Client: the blocking Python SDK for a running lstmserve server."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import grpc
import numpy as np

from lstmserve.client import _messages as msg
from lstmserve.client import _sessions as ses
from lstmserve.client.channel import DEFAULT_TARGET, Pem, Target, channel_spec
from lstmserve.client.errors import LstmserveError
from lstmserve.client.sessions import Session
from lstmserve.client.tensors import from_tensor
from lstmserve.v1 import model_pb2 as mpb
from lstmserve.v1 import model_service_pb2 as msp
from lstmserve.v1 import model_service_pb2_grpc as msp_grpc
from lstmserve.v1 import prediction_service_pb2 as pb
from lstmserve.v1 import prediction_service_pb2_grpc as pb_grpc
from lstmserve.v1 import session_service_pb2_grpc as spb_grpc

DEFAULT_TIMEOUT_S = 10.0
# Loading compiles and warms a model: seconds, a minute for a large one on a busy machine.
LOAD_TIMEOUT_S = 300.0


class Client:
    """Calls an lstmserve server: numpy in, numpy out, every call with a deadline.

    >>> with Client("localhost:8500") as client:
    ...     client.predict(x, model="seed")

    `target` is "host:port", a gRPC target ("dns:///name:port", "ipv4:a:p,b:p") or a list of "host:port":
    calls go round-robin, to replicas that report SERVING, and are retried on UNAVAILABLE (see
    lstmserve.client.channel). TLS with `tls=True` or any certificate (paths or PEM bytes); `token` (else
    $LSTMSERVE_TOKEN) goes with every call; `options` add or replace gRPC channel options.
    """

    def __init__(
        self, target: Target = DEFAULT_TARGET, *, model: str | None = None,
        timeout: float = DEFAULT_TIMEOUT_S, channel: grpc.Channel | None = None, tls: bool = False,
        root_certificates: Pem | None = None, client_cert: Pem | None = None,
        client_key: Pem | None = None, token: str | None = None,
        health_check: bool | None = None,
        options: Sequence[tuple[str, Any]] = (),
    ) -> None:
        spec = channel_spec(target, tls=tls, root_certificates=root_certificates,
                            client_cert=client_cert, client_key=client_key, token=token,
                            health_check=health_check, options=options)
        self.target = target
        self.model = model
        self.timeout = timeout
        self._metadata = spec.metadata
        self._channel = channel or spec.open()
        self._stub = pb_grpc.PredictionServiceStub(self._channel)
        self._models = msp_grpc.ModelServiceStub(self._channel)
        self._sessions = spb_grpc.SessionServiceStub(self._channel)
        self._health = self._channel.unary_unary(
            msg.HEALTH_CHECK, request_serializer=None, response_deserializer=None
        )

    def predict(self, x: msg.Inputs, *, model: str | None = None, version: msg.Version | None = None,
                label: str | None = None, prepared: bool = False,
                timeout: float | None = None) -> msg.Outputs:
        """Keras `predict`: the model's outputs (in raw units when the model carries a preparation).

        `version` (a number) or `label` (a name the model's config.json gives a version, such as
        "stable") picks a version; without either, the highest available one answers."""
        response = self._predict(x, mpb.PREDICTION_MODE_VALUES, model, version, label, prepared, timeout)
        return msg.read_outputs(response)

    def predict_classes(self, x: msg.Inputs, *, labels: bool = False, model: str | None = None,
                        version: msg.Version | None = None, label: str | None = None,
                        prepared: bool = False, timeout: float | None = None) -> msg.Outputs:
        """Keras's removed `predict_classes`: int64 class indices, or label strings with labels=True."""
        response = self._predict(x, mpb.PREDICTION_MODE_CLASSES, model, version, label, prepared, timeout)
        return msg.read_labels(response) if labels else msg.read_outputs(response)

    def predict_proba(self, x: msg.Inputs, *, model: str | None = None, version: msg.Version | None = None,
                      label: str | None = None, prepared: bool = False,
                      timeout: float | None = None) -> msg.Outputs:
        """Keras's removed `predict_proba`: class probabilities of a sigmoid or softmax output."""
        response = self._predict(
            x, mpb.PREDICTION_MODE_PROBABILITIES, model, version, label, prepared, timeout
        )
        return msg.read_outputs(response)

    def session(self, model: str | None = None, *, version: str | None = None, prepared: bool = False,
                stream: bool = True, timeout: float | None = None) -> Session:
        """A streaming session: `with client.session("m") as s: s.step(x)` sends only new steps.

        One stream by default (one server, ended with the stream); `stream=False` uses unary calls with
        the session's id. `timeout` bounds each unary call (a stream lives as long as the session)."""
        return Session(self._sessions, model or self.model, version=version, prepared=prepared,
                       stream=stream, timeout=self.timeout if timeout is None else timeout,
                       metadata=self._metadata)

    def stream(self, steps: Iterable[msg.Inputs], model: str | None = None, *, mode: str = "values",
               labels: bool = False, version: str | None = None,
               prepared: bool = False) -> Iterator[ses.StepResult]:
        """One session over an iterable of step messages: yields each message's answer, in order,
        without a round trip between steps; the session ends when the iterable (or the caller) does."""
        with self.session(model, version=version, prepared=prepared) as session:
            yield from session.stream(steps, mode=mode, labels=labels)

    def forecast(self, history, horizon: int, *, model: str | None = None, version: str | None = None,
                 timeout: float | None = None) -> np.ndarray:
        """`horizon` steps after `history` in its units: [T] or [T, features] gives [horizon];
        [batch, T, features] gives [batch, horizon]. For models whose file declares a forecast."""
        array, squeeze = ses.history_array(history)
        request = ses.forecast_request(array, horizon, model or self.model, version)
        response = self._call(self._sessions.Forecast, request, timeout)
        values = from_tensor(response.forecast, "forecast")
        return values[0] if squeeze else values

    def metadata(self, model: str | None = None, *, version: msg.Version | None = None,
                 label: str | None = None, timeout: float | None = None) -> mpb.ModelMetadata:
        """Signature, task, modes, labels, preparation and provenance of one model."""
        request = pb.GetModelMetadataRequest(model=msg.model_spec(model or self.model, version, label))
        return self._call(self._stub.GetModelMetadata, request, timeout).metadata

    def models(self, *, timeout: float | None = None) -> list[mpb.ModelMetadata]:
        """Metadata of every model the server holds."""
        return list(self._call(self._stub.ListModels, pb.ListModelsRequest(), timeout).models)

    def model_status(self, model: str | None = None, *,
                     timeout: float | None = None) -> list[msp.ModelStatus]:
        """Every version of one model (of every model without a name): LOADING, AVAILABLE, UNLOADING,
        FAILED or UNLOADED, with the reason."""
        request = msp.GetModelStatusRequest(name=model or "")
        return list(self._call(self._models.GetModelStatus, request, timeout).models)

    def load_model(self, model: str, version: msg.Version | None = None, *,
                   timeout: float | None = None) -> msp.ModelStatus:
        """Serve a version that is in the server's repository (what its version policy selects, without
        one), waiting until it is loaded and warm (deadline LOAD_TIMEOUT_S unless `timeout`)."""
        request = msg.load_request(model, version)
        return self._call(self._models.LoadModel, request, timeout or LOAD_TIMEOUT_S).status

    def unload_model(self, model: str, version: msg.Version | None = None, *,
                     timeout: float | None = None) -> msp.ModelStatus:
        """Stop serving a version (every version, without one); calls it already has finish on it."""
        request = msg.unload_request(model, version)
        return self._call(self._models.UnloadModel, request, timeout).status

    def reload_repository(self, *, timeout: float | None = None) -> list[msp.ModelStatus]:
        """Have the server scan its repository now and wait for the loads that starts."""
        request = msp.ReloadRepositoryRequest()
        return list(self._call(self._models.ReloadRepository, request, timeout or LOAD_TIMEOUT_S).models)

    def health(self, service: str = "", *, timeout: float | None = None) -> str:
        """The standard grpc.health.v1 status: 'SERVING', 'NOT_SERVING', ..."""
        raw = self._call(self._health, msg.encode_health_request(service), timeout)
        return msg.decode_health_response(raw)

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _predict(self, x, mode, model, version, label, prepared, timeout) -> pb.PredictResponse:
        request = msg.predict_request(x, mode, model or self.model, version, prepared, label)
        return self._call(self._stub.Predict, request, timeout)

    def _call(self, method: Callable[..., Any], request: Any, timeout: float | None) -> Any:
        try:
            return method(request, timeout=self.timeout if timeout is None else timeout,
                          metadata=self._metadata)
        except grpc.RpcError as error:
            raise LstmserveError.from_rpc_error(error) from None
