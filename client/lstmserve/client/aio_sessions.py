"""AsyncSession: the asyncio twin of Session (`async with client.session("m") as s: await s.step(x)`)."""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator, Iterable
from typing import Any

import grpc

from lstmserve.client import _sessions as ses
from lstmserve.client._messages import Inputs
from lstmserve.client.errors import LstmserveError
from lstmserve.v1 import session_service_pb2 as spb
from lstmserve.v1 import session_service_pb2_grpc as spb_grpc


class AsyncSession:
    """Opened by `await` or `async with`; then the same calls as Session, awaited."""

    def __init__(self, stub: spb_grpc.SessionServiceStub, model: str | None, *, version: str | None = None,
                 prepared: bool = False, stream: bool = True, timeout: float = 10.0,
                 metadata: tuple = ()) -> None:
        self._stub, self._timeout, self._metadata, self._stream = stub, timeout, metadata, stream
        self._open = ses.open_request(model, version, prepared)
        self._call = None
        self.info: Any = None
        self.closed = False

    @property
    def id(self) -> str:
        return self.info.session_id

    async def open(self) -> AsyncSession:
        try:
            if self._stream:
                self._call = self._stub.StreamSession(metadata=self._metadata)
                await self._call.write(spb.StreamRequest(open=self._open))
                self.info = ses.read_stream(await self._read(), "opened")
            else:
                self.info = await self._stub.CreateSession(self._open, timeout=self._timeout,
                                                           metadata=self._metadata)
        except grpc.RpcError as error:
            raise LstmserveError.from_rpc_error(error) from None
        return self

    def __await__(self):
        return self.open().__await__()

    async def step(self, x: Inputs, *, mode: str = "values", labels: bool = False,
                   timeout: float | None = None) -> ses.StepResult:
        request = ses.step_request(x, mode, self.info.step_inputs, self.id)
        if not self._stream:
            return ses.read_step(await self._unary(self._stub.Step, request, timeout), labels)
        return ses.read_step(await self._exchange(spb.StreamRequest(step=request), "step"), labels)

    async def stream(self, steps: Iterable[Inputs] | AsyncIterable[Inputs], *, mode: str = "values",
                     labels: bool = False, window: int = 32) -> AsyncIterator[ses.StepResult]:
        """Send each item as one step message, up to `window` ahead of the answers; yield answers in order."""
        pending = 0
        async for x in _aiter(steps):
            if not self._stream:
                yield await self.step(x, mode=mode, labels=labels)
                continue
            await self._write(spb.StreamRequest(step=ses.step_request(x, mode, self.info.step_inputs)))
            pending += 1
            if pending >= window:
                yield ses.read_step(ses.read_stream(await self._read(), "step"), labels)
                pending -= 1
        for _ in range(pending):
            yield ses.read_step(ses.read_stream(await self._read(), "step"), labels)

    async def reset(self, *, timeout: float | None = None) -> None:
        if self._stream:
            self.info = await self._exchange(spb.StreamRequest(reset=spb.ResetRequest()), "reset")
        else:
            self.info = await self._unary(self._stub.ResetSession, spb.SessionRequest(session_id=self.id),
                                          timeout)

    async def close(self) -> None:
        if self.closed or self.info is None:
            return
        self.closed = True
        if self._stream:
            await self._call.done_writing()
            while await self._call.read() is not grpc.aio.EOF:
                pass
            return
        try:
            await self._stub.EndSession(spb.SessionRequest(session_id=self.id), timeout=self._timeout,
                                        metadata=self._metadata)
        except grpc.RpcError as error:
            if error.code() != grpc.StatusCode.NOT_FOUND:
                raise LstmserveError.from_rpc_error(error) from None

    async def __aenter__(self) -> AsyncSession:
        return await self.open() if self.info is None else self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def _exchange(self, request: spb.StreamRequest, kind: str) -> Any:
        await self._write(request)
        return ses.read_stream(await self._read(), kind)

    async def _write(self, request: spb.StreamRequest) -> None:
        if self.closed:
            raise LstmserveError(grpc.StatusCode.FAILED_PRECONDITION, "the session is closed")
        try:
            await self._call.write(request)
        except grpc.RpcError as error:
            self.closed = True
            raise LstmserveError.from_rpc_error(error) from None

    async def _read(self) -> spb.StreamResponse:
        try:
            response = await self._call.read()
        except grpc.RpcError as error:
            self.closed = True
            raise LstmserveError.from_rpc_error(error) from None
        if response is grpc.aio.EOF:
            self.closed = True
            raise LstmserveError(await self._call.code(), await self._call.details() or "stream ended")
        return response

    async def _unary(self, method, request, timeout: float | None):
        try:
            return await method(request, timeout=self._timeout if timeout is None else timeout,
                                metadata=self._metadata)
        except grpc.RpcError as error:
            raise LstmserveError.from_rpc_error(error) from None


async def _aiter(items):
    if hasattr(items, "__aiter__"):
        async for item in items:
            yield item
    else:
        for item in items:
            yield item
