"""lstmserve Python SDK: call a running lstmserve server with numpy arrays; no TensorFlow needed."""

from lstmserve.client._sessions import StepResult
from lstmserve.client.aio import AsyncClient
from lstmserve.client.aio_sessions import AsyncSession
from lstmserve.client.client import Client
from lstmserve.client.errors import LstmserveError
from lstmserve.client.sessions import Session
from lstmserve.client.tensors import TensorDecodeError, from_tensor, to_tensor

__all__ = ["AsyncClient", "AsyncSession", "Client", "LstmserveError", "Session", "StepResult",
           "TensorDecodeError", "from_tensor", "to_tensor"]
