"""The SDK's one exception type: a failed call, with the server's gRPC status code kept."""

from __future__ import annotations

import grpc


class LstmserveError(Exception):
    """A call to the server failed. `.code` is the grpc.StatusCode, `.message` the server's words."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(f"{code.name}: {message}")
        self.code = code
        self.message = message

    @classmethod
    def from_rpc_error(cls, error: grpc.RpcError) -> LstmserveError:
        # Every RpcError raised by a call is also a grpc.Call carrying code() and details().
        code = error.code() if hasattr(error, "code") else grpc.StatusCode.UNKNOWN
        details = error.details() if hasattr(error, "details") else str(error)
        return cls(code, details or "")
