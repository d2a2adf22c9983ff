"""ModelService: the state of every version, and load, unload and rescan through the model repository.

Decode, call the repository, encode. The repository checks every name and version before it touches a
path, and does the work on its own thread; a handler awaits it without blocking the event loop.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from lstmserve.server.errors import ControlDisabled
from lstmserve.server.serving.registry import ModelRegistry, ModelStatus, VersionState
from lstmserve.server.serving.repository import Repository
from lstmserve.server.serving.repository_files import check_name
from lstmserve.server.transport.observe import ObservedServicer
from lstmserve.server.transport.status import guarded
from lstmserve.v1 import model_service_pb2 as msp
from lstmserve.v1 import model_service_pb2_grpc as msp_grpc

SERVICE_NAME = msp.DESCRIPTOR.services_by_name["ModelService"].full_name
STATE_TO_WIRE = {
    VersionState.LOADING: msp.VERSION_STATE_LOADING,
    VersionState.AVAILABLE: msp.VERSION_STATE_AVAILABLE,
    VersionState.UNLOADING: msp.VERSION_STATE_UNLOADING,
    VersionState.FAILED: msp.VERSION_STATE_FAILED,
    VersionState.UNLOADED: msp.VERSION_STATE_UNLOADED,
}


@dataclass(frozen=True)
class ModelControl:
    """What load, unload and rescan calls reach (lstmserve.v1 and the V2 repository extension alike):
    the repository, unless the server runs without one or with --no-model-control."""

    repository: Repository | None = None
    enabled: bool = True
    off_reason: str = ("model control is off on this server (--no-model-control): models change only "
                       "through its repository directory")

    async def load(self, name: str, version: str = "") -> ModelStatus:
        return await asyncio.wrap_future(self.require().load(name, version))

    async def unload(self, name: str, version: str = "") -> ModelStatus:
        return await asyncio.wrap_future(self.require().unload(name, version))

    async def rescan(self) -> list[ModelStatus]:
        return await asyncio.wrap_future(self.require().rescan())

    def require(self) -> Repository:
        """The repository; ControlDisabled (PERMISSION_DENIED) when control is off or there is none."""
        if not self.enabled:
            raise ControlDisabled(self.off_reason)
        if self.repository is None:
            raise ControlDisabled("this server has no model repository to load from or unload to")
        return self.repository


class ModelServicer(msp_grpc.ModelServiceServicer, ObservedServicer):
    def __init__(self, registry: ModelRegistry, control: ModelControl) -> None:
        self.registry = registry
        self.control = control

    @guarded
    async def GetModelStatus(self, request: msp.GetModelStatusRequest,
                             context) -> msp.GetModelStatusResponse:
        name = check_name(request.name) if request.name else ""
        return msp.GetModelStatusResponse(models=[status_to_wire(s) for s in self.registry.status(name)])

    @guarded
    async def LoadModel(self, request: msp.LoadModelRequest, context) -> msp.LoadModelResponse:
        status = await self.control.load(request.name, request.version)
        return msp.LoadModelResponse(status=status_to_wire(status))

    @guarded
    async def UnloadModel(self, request: msp.UnloadModelRequest, context) -> msp.UnloadModelResponse:
        status = await self.control.unload(request.name, request.version)
        return msp.UnloadModelResponse(status=status_to_wire(status))

    @guarded
    async def ReloadRepository(self, request: msp.ReloadRepositoryRequest,
                               context) -> msp.ReloadRepositoryResponse:
        statuses = await self.control.rescan()
        return msp.ReloadRepositoryResponse(models=[status_to_wire(s) for s in statuses])


def status_to_wire(status: ModelStatus) -> msp.ModelStatus:
    return msp.ModelStatus(
        name=status.name, version_policy=status.version_policy, problem=status.problem,
        versions=[msp.VersionStatus(version=v.version, state=STATE_TO_WIRE[v.state], reason=v.reason,
                                    labels=list(v.labels), is_default=v.is_default, file=v.file)
                  for v in status.versions],
    )
