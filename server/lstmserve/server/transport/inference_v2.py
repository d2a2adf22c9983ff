"""GRPCInferenceService (Open Inference Protocol, KServe V2) over the same registry as lstmserve.v1.

Decode, look up, run, encode, as PredictionServicer does; the conversions live in inference_v2_codec.
Every handler is `guarded`, so a bad V2 request gets the status and message lstmserve.v1 would give.
"""

from __future__ import annotations

from importlib import metadata

import grpc
from grpc_health.v1 import health, health_pb2

from lstmserve.inference.v2 import grpc_predict_v2_pb2 as v2
from lstmserve.inference.v2 import grpc_predict_v2_pb2_grpc as v2_grpc
from lstmserve.server.errors import ModelNotFound, ModelNotReady
from lstmserve.server.serving.heads import Mode
from lstmserve.server.serving.registry import ModelRegistry
from lstmserve.server.transport import inference_v2_codec as codec
from lstmserve.server.transport.converters import rows_of
from lstmserve.server.transport.observe import NULL_OBSERVER, ObservedServicer, Observer, note_call
from lstmserve.server.transport.status import guarded

SERVICE_NAME = v2.DESCRIPTOR.services_by_name["GRPCInferenceService"].full_name
REPOSITORY_UNIMPLEMENTED = (
    "the model repository extension ({rpc}) is not served yet: lstmserve loads the models named on "
    "its command line; use ModelReady or ModelMetadata to see them"
)


class InferenceV2Servicer(v2_grpc.GRPCInferenceServiceServicer, ObservedServicer):
    def __init__(self, registry: ModelRegistry, health_servicer: health.aio.HealthServicer) -> None:
        self.registry = registry
        # Server readiness is the standard health's overall status: SERVING once every model given at
        # start-up is loaded and warmed, NOT_SERVING again while the server drains.
        self.health = health_servicer
        self.metadata = codec.server_metadata(_server_version())

    @guarded
    async def ServerLive(self, request: v2.ServerLiveRequest, context) -> v2.ServerLiveResponse:
        return v2.ServerLiveResponse(live=True)

    @guarded
    async def ServerReady(self, request: v2.ServerReadyRequest, context) -> v2.ServerReadyResponse:
        status = await self.health.Check(health_pb2.HealthCheckRequest(service=""), context)
        return v2.ServerReadyResponse(ready=status.status == health_pb2.HealthCheckResponse.SERVING)

    @guarded
    async def ModelReady(self, request: v2.ModelReadyRequest, context) -> v2.ModelReadyResponse:
        # The protocol asks a yes/no question: a model still loading, or unknown, is simply not ready.
        try:
            self.registry.get(request.name, request.version)
        except (ModelNotReady, ModelNotFound):
            return v2.ModelReadyResponse(ready=False)
        return v2.ModelReadyResponse(ready=True)

    @guarded
    async def ServerMetadata(self, request: v2.ServerMetadataRequest,
                             context) -> v2.ServerMetadataResponse:
        return self.metadata

    @guarded
    async def ModelMetadata(self, request: v2.ModelMetadataRequest, context) -> v2.ModelMetadataResponse:
        return codec.model_metadata(self.registry.get(request.name, request.version))

    @guarded
    async def ModelInfer(self, request: v2.ModelInferRequest, context) -> v2.ModelInferResponse:
        model = self.registry.get(request.model_name, request.model_version)
        inputs = codec.inputs_from_request(request)
        outputs = codec.requested_outputs(request, model)
        prepared = codec.prepared_flag(request)
        note_call(model.name, model.version, Mode.VALUES.value, rows_of(inputs))
        # Values mode for every output: classification ranks the sigmoid/softmax values themselves.
        prediction = await model.predict_async(inputs, Mode.VALUES, prepared=prepared)
        return codec.response_from_prediction(model, prediction, outputs, request.id)

    # The repository extension waits for the lifecycle issue's ModelService (load and unload at run
    # time); until then it says so rather than pretending to a repository it does not have.
    @guarded
    async def RepositoryIndex(self, request, context) -> v2.RepositoryIndexResponse:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED,
                            REPOSITORY_UNIMPLEMENTED.format(rpc="RepositoryIndex"))

    @guarded
    async def RepositoryModelLoad(self, request, context) -> v2.RepositoryModelLoadResponse:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED,
                            REPOSITORY_UNIMPLEMENTED.format(rpc="RepositoryModelLoad"))

    @guarded
    async def RepositoryModelUnload(self, request, context) -> v2.RepositoryModelUnloadResponse:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED,
                            REPOSITORY_UNIMPLEMENTED.format(rpc="RepositoryModelUnload"))


def add_to_server(server: grpc.aio.Server, registry: ModelRegistry,
                  health_servicer: health.aio.HealthServicer, observer: Observer = NULL_OBSERVER) -> None:
    servicer = InferenceV2Servicer(registry, health_servicer)
    servicer.observer = observer
    v2_grpc.add_GRPCInferenceServiceServicer_to_server(servicer, server)


def _server_version() -> str:
    try:
        return metadata.version("lstmserve-server")
    except metadata.PackageNotFoundError:  # run from a source tree without installing
        return "unknown"
