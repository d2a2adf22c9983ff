"""Session: one sequence kept on the server; send only its new steps (`with client.session("m") as s`).

By default a session is one bidirectional stream: it stays on one server of a balanced client, its
steps are answered in order, and it ends when the stream does (close(), the end of the `with`, or the
process going away). `stream=False` uses unary calls with the session's id instead, for callers that
cannot hold a stream; those must reach the server that created the session.
"""

from __future__ import annotations

import queue
from collections.abc import Iterable, Iterator
from typing import Any

import grpc

from lstmserve.client import _sessions as ses
from lstmserve.client._messages import Inputs
from lstmserve.client.errors import LstmserveError
from lstmserve.v1 import session_service_pb2 as spb
from lstmserve.v1 import session_service_pb2_grpc as spb_grpc

_END = object()


class Session:
    """`s.step(x)` sends 1..k new steps ([steps, features], or one step as [features]) and returns a
    StepResult; `s.reset()` starts the sequence again; `s.close()` ends the session."""

    def __init__(self, stub: spb_grpc.SessionServiceStub, model: str | None, *, version: str | None = None,
                 prepared: bool = False, stream: bool = True, timeout: float = 10.0,
                 metadata: tuple = ()) -> None:
        self._stub, self._timeout, self._metadata = stub, timeout, metadata
        self._stream = stream
        request = ses.open_request(model, version, prepared)
        try:
            if stream:
                self._requests: queue.SimpleQueue = queue.SimpleQueue()
                self._call = stub.StreamSession(self._outgoing(spb.StreamRequest(open=request)),
                                                metadata=metadata)
                self.info = ses.read_stream(next(self._call), "opened")
            else:
                self.info = stub.CreateSession(request, timeout=timeout, metadata=metadata)
        except grpc.RpcError as error:
            raise LstmserveError.from_rpc_error(error) from None
        self.closed = False

    @property
    def id(self) -> str:
        return self.info.session_id

    def step(self, x: Inputs, *, mode: str = "values", labels: bool = False,
             timeout: float | None = None) -> ses.StepResult:
        """Outputs for the new steps (mode "values", "classes" or "probabilities", as Predict)."""
        request = ses.step_request(x, mode, self.info.step_inputs, self.id)
        if not self._stream:
            return ses.read_step(self._unary(self._stub.Step, request, timeout), labels)
        return ses.read_step(self._exchange(spb.StreamRequest(step=request), "step"), labels)

    def stream(self, steps: Iterable[Inputs], *, mode: str = "values", labels: bool = False,
               window: int = 32) -> Iterator[ses.StepResult]:
        """Send every item of `steps` as one step message, up to `window` ahead of the answers, and
        yield the answers in order: no round trip between steps."""
        if not self._stream:
            for x in steps:
                yield self.step(x, mode=mode, labels=labels)
            return
        pending = 0
        for x in steps:
            self._requests.put(spb.StreamRequest(step=ses.step_request(x, mode, self.info.step_inputs)))
            pending += 1
            while pending >= window:
                yield ses.read_step(self._receive("step"), labels)
                pending -= 1
        while pending:
            yield ses.read_step(self._receive("step"), labels)
            pending -= 1

    def reset(self, *, timeout: float | None = None) -> None:
        """Back to an empty sequence on the same model version."""
        if self._stream:
            self.info = self._exchange(spb.StreamRequest(reset=spb.ResetRequest()), "reset")
        else:
            self.info = self._unary(self._stub.ResetSession, spb.SessionRequest(session_id=self.id), timeout)

    def close(self) -> None:
        """End the session (its state is freed on the server)."""
        if self.closed:
            return
        self.closed = True
        if self._stream:
            self._requests.put(_END)
            for _ in self._call:  # the server ends the stream once the requests end
                pass
        else:
            try:
                self._stub.EndSession(spb.SessionRequest(session_id=self.id), timeout=self._timeout,
                                      metadata=self._metadata)
            except grpc.RpcError as error:
                if error.code() != grpc.StatusCode.NOT_FOUND:  # already expired: nothing to end
                    raise LstmserveError.from_rpc_error(error) from None

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _outgoing(self, first: spb.StreamRequest) -> Iterator[spb.StreamRequest]:
        yield first
        while (item := self._requests.get()) is not _END:
            yield item

    def _exchange(self, request: spb.StreamRequest, kind: str) -> Any:
        self._requests.put(request)
        return self._receive(kind)

    def _receive(self, kind: str) -> Any:
        if self.closed:
            raise LstmserveError(grpc.StatusCode.FAILED_PRECONDITION, "the session is closed")
        try:
            return ses.read_stream(next(self._call), kind)
        except grpc.RpcError as error:
            self.closed = True
            raise LstmserveError.from_rpc_error(error) from None
        except StopIteration:
            self.closed = True
            raise LstmserveError(grpc.StatusCode.UNAVAILABLE,
                                 "the server ended the session's stream") from None

    def _unary(self, method, request, timeout: float | None):
        try:
            return method(request, timeout=self._timeout if timeout is None else timeout,
                          metadata=self._metadata)
        except grpc.RpcError as error:
            raise LstmserveError.from_rpc_error(error) from None
