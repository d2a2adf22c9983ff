"""StatsService: each model engine's counters, so a benchmark can see the batch sizes it caused."""

from __future__ import annotations

from lstmserve.server.serving.model import LoadedModel
from lstmserve.server.serving.registry import ModelRegistry
from lstmserve.server.transport.observe import ObservedServicer
from lstmserve.server.transport.status import guarded
from lstmserve.v1 import model_pb2 as mpb
from lstmserve.v1 import stats_pb2 as spb
from lstmserve.v1 import stats_pb2_grpc as spb_grpc


class StatsServicer(spb_grpc.StatsServiceServicer, ObservedServicer):
    def __init__(self, registry: ModelRegistry) -> None:
        self.registry = registry

    @guarded
    async def GetModelStats(self, request: spb.GetModelStatsRequest, context) -> spb.GetModelStatsResponse:
        if request.model.name:
            models = [self.registry.get(request.model.name, request.model.version)]
        else:
            models = self.registry.all()
        return spb.GetModelStatsResponse(models=[stats_to_wire(model) for model in models])


def stats_to_wire(model: LoadedModel) -> spb.ModelStats:
    stats = model.stats()
    return spb.ModelStats(
        model=mpb.ModelSpec(name=model.name, version=model.version),
        requests=stats.requests, rows=stats.rows, batches=stats.batches,
        rejected=stats.rejected, failed_batches=stats.failed_batches,
        batch_sizes=[spb.BatchSizeCount(rows=rows, batches=count)
                     for rows, count in sorted(stats.batch_rows.items())],
    )
