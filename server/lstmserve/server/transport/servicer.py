"""PredictionService: decode, call the runtime, encode. No model logic lives here.

Handlers are coroutines on the server's event loop: the model itself runs on its engine's thread
(only a tiny model's compiled twin runs in place), so the loop stays free for health and metadata calls.
"""

from __future__ import annotations

from lstmserve.server.serving.registry import ModelRegistry
from lstmserve.server.serving.sessions import DEFAULT_SESSION_LIMITS, SessionLimits
from lstmserve.server.transport import converters
from lstmserve.server.transport.observe import ObservedServicer, note_call
from lstmserve.server.transport.status import guarded
from lstmserve.server.transport.tracing import engine_stages, stage
from lstmserve.v1 import prediction_service_pb2 as pb
from lstmserve.v1 import prediction_service_pb2_grpc as pb_grpc


class PredictionServicer(pb_grpc.PredictionServiceServicer, ObservedServicer):
    def __init__(self, registry: ModelRegistry, limits: SessionLimits = DEFAULT_SESSION_LIMITS) -> None:
        self.registry = registry
        self.limits = limits  # shown in metadata

    @guarded
    async def Predict(self, request: pb.PredictRequest, context) -> pb.PredictResponse:
        spec = request.model
        # The lease keeps this version open until the call is answered, even if a reload takes it
        # out of service meanwhile.
        with self.registry.lease(spec.name, spec.version, spec.version_label) as model:
            mode = converters.mode_from_wire(request.mode)
            with stage("decode"):
                inputs = converters.inputs_from_wire(request)
            note_call(model.name, model.version, mode.value, converters.rows_of(inputs))
            with engine_stages():
                prediction = await model.predict_async(inputs, mode, prepared=request.prepared)
        with stage("encode"):
            return converters.prediction_to_wire(model, prediction)

    @guarded
    async def GetModelMetadata(self, request: pb.GetModelMetadataRequest,
                         context) -> pb.GetModelMetadataResponse:
        spec = request.model
        model = self.registry.get(spec.name, spec.version, spec.version_label)
        note_call(model.name, model.version)
        return pb.GetModelMetadataResponse(metadata=converters.metadata_to_wire(model, self.limits))

    @guarded
    async def ListModels(self, request: pb.ListModelsRequest, context) -> pb.ListModelsResponse:
        return pb.ListModelsResponse(
            models=[converters.metadata_to_wire(model, self.limits) for model in self.registry.all()]
        )
