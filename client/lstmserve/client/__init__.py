"""lstmserve Python SDK: call a running lstmserve server with numpy arrays; no TensorFlow needed."""

from lstmserve.client.aio import AsyncClient
from lstmserve.client.client import Client
from lstmserve.client.errors import LstmserveError
from lstmserve.client.tensors import TensorDecodeError, from_tensor, to_tensor

__all__ = ["AsyncClient", "Client", "LstmserveError", "TensorDecodeError", "from_tensor", "to_tensor"]
