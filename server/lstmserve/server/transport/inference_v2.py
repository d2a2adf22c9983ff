"""GRPCInferenceService (Open Inference Protocol, KServe V2) over the same registry as lstmserve.v1.

Decode, look up, run, encode, as PredictionServicer does; the conversions live in inference_v2_codec.
Every handler is `guarded`, so a bad V2 request gets the status and message lstmserve.v1 would give.
The repository extension is ModelService's status, load and unload under V2's names. A V2 version
string that is not a number is read as a version label ("stable").
"""

from __future__ import annotations

from importlib import metadata

from grpc_health.v1 import health, health_pb2

from lstmserve.inference.v2 import grpc_predict_v2_pb2 as v2
from lstmserve.inference.v2 import grpc_predict_v2_pb2_grpc as v2_grpc
from lstmserve.server.errors import InvalidInput, ModelNotFound, ModelNotReady, shown
from lstmserve.server.serving.heads import Mode
from lstmserve.server.serving.registry import ModelRegistry, VersionState
from lstmserve.server.transport import inference_v2_codec as codec
from lstmserve.server.transport.converters import rows_of
from lstmserve.server.transport.model_service import ModelControl
from lstmserve.server.transport.observe import NULL_OBSERVER, ObservedServicer, Observer, note_call
from lstmserve.server.transport.status import guarded

SERVICE_NAME = v2.DESCRIPTOR.services_by_name["GRPCInferenceService"].full_name
# Triton's words for a version's state in RepositoryIndex.
V2_STATE = {VersionState.AVAILABLE: "READY", VersionState.LOADING: "LOADING",
            VersionState.UNLOADING: "UNLOADING", VersionState.FAILED: "UNAVAILABLE",
            VersionState.UNLOADED: "UNAVAILABLE"}
UNLOAD_PARAMETERS = ("unload_dependents",)  # no ensembles here: accepted, nothing depends on a model


class InferenceV2Servicer(v2_grpc.GRPCInferenceServiceServicer, ObservedServicer):
    def __init__(self, registry: ModelRegistry, health_servicer: health.aio.HealthServicer,
                 control: ModelControl) -> None:
        self.registry = registry
        self.control = control
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
            self.registry.get(request.name, *_version_or_label(request.version))
        except (ModelNotReady, ModelNotFound):
            return v2.ModelReadyResponse(ready=False)
        return v2.ModelReadyResponse(ready=True)

    @guarded
    async def ServerMetadata(self, request: v2.ServerMetadataRequest,
                             context) -> v2.ServerMetadataResponse:
        return self.metadata

    @guarded
    async def ModelMetadata(self, request: v2.ModelMetadataRequest, context) -> v2.ModelMetadataResponse:
        return codec.model_metadata(self.registry.get(request.name, *_version_or_label(request.version)))

    @guarded
    async def ModelInfer(self, request: v2.ModelInferRequest, context) -> v2.ModelInferResponse:
        with self.registry.lease(request.model_name, *_version_or_label(request.model_version)) as model:
            inputs = codec.inputs_from_request(request)
            outputs = codec.requested_outputs(request, model)
            prepared = codec.prepared_flag(request)
            note_call(model.name, model.version, Mode.VALUES.value, rows_of(inputs))
            # Values mode for every output: classification ranks the sigmoid/softmax values themselves.
            prediction = await model.predict_async(inputs, Mode.VALUES, prepared=prepared)
        return codec.response_from_prediction(model, prediction, outputs, request.id)

    @guarded
    async def RepositoryIndex(self, request: v2.RepositoryIndexRequest,
                              context) -> v2.RepositoryIndexResponse:
        _check_repository(request.repository_name)
        index = v2.RepositoryIndexResponse()
        for status in self.registry.status():
            for version in status.versions:
                state = V2_STATE[version.state]
                if not request.ready or state == "READY":
                    index.models.add(name=status.name, version=version.version, state=state,
                                     reason=version.reason)
        return index

    @guarded
    async def RepositoryModelLoad(self, request: v2.RepositoryModelLoadRequest,
                                  context) -> v2.RepositoryModelLoadResponse:
        self.control.require()
        _check_repository(request.repository_name)
        _check_parameters(request.parameters, "RepositoryModelLoad", ())
        await self.control.load(request.model_name)
        return v2.RepositoryModelLoadResponse()

    @guarded
    async def RepositoryModelUnload(self, request: v2.RepositoryModelUnloadRequest,
                                    context) -> v2.RepositoryModelUnloadResponse:
        self.control.require()
        _check_repository(request.repository_name)
        _check_parameters(request.parameters, "RepositoryModelUnload", UNLOAD_PARAMETERS)
        await self.control.unload(request.model_name)
        return v2.RepositoryModelUnloadResponse()


def _version_or_label(version: str) -> tuple[str, str]:
    """(version, label): V2 has one string; a number is a version, anything else a label."""
    return (version, "") if not version or (version.isascii() and version.isdigit()) else ("", version)


def _check_repository(name: str) -> None:
    if name:
        raise ModelNotFound(f"no repository named '{shown(name, 60)}'; this server has one model repository: "
                            "leave repository_name empty")


def _check_parameters(parameters, rpc: str, allowed: tuple[str, ...]) -> None:
    # Triton's load takes a model's config or its files in parameters; lstmserve serves only files
    # already in its repository, so nothing that arrives over the network becomes a model.
    unknown = sorted(key for key in parameters if key not in allowed)
    if unknown:
        raise InvalidInput(f"{rpc} takes no parameter '{shown(unknown[0], 60)}' (accepted: "
                           f"{list(allowed) or 'none'}); lstmserve loads only the model files already in "
                           "its repository")


def add_to_server(server, registry: ModelRegistry, health_servicer: health.aio.HealthServicer,
                  control: ModelControl, observer: Observer = NULL_OBSERVER) -> None:
    """Register the V2 service on `server` (a grpc.aio.Server, or admission's stand-in for one)."""
    servicer = InferenceV2Servicer(registry, health_servicer, control)
    servicer.observer = observer
    v2_grpc.add_GRPCInferenceServiceServicer_to_server(servicer, server)


def _server_version() -> str:
    try:
        return metadata.version("lstmserve-server")
    except metadata.PackageNotFoundError:  # run from a source tree without installing
        return "unknown"
