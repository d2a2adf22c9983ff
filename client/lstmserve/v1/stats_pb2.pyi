from lstmserve.v1 import model_pb2 as _model_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class GetModelStatsRequest(_message.Message):
    __slots__ = ("model",)
    MODEL_FIELD_NUMBER: _ClassVar[int]
    model: _model_pb2.ModelSpec
    def __init__(self, model: _Optional[_Union[_model_pb2.ModelSpec, _Mapping]] = ...) -> None: ...

class BatchSizeCount(_message.Message):
    __slots__ = ("rows", "batches")
    ROWS_FIELD_NUMBER: _ClassVar[int]
    BATCHES_FIELD_NUMBER: _ClassVar[int]
    rows: int
    batches: int
    def __init__(self, rows: _Optional[int] = ..., batches: _Optional[int] = ...) -> None: ...

class ModelStats(_message.Message):
    __slots__ = ("model", "requests", "rows", "batches", "rejected", "failed_batches", "batch_sizes")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    REQUESTS_FIELD_NUMBER: _ClassVar[int]
    ROWS_FIELD_NUMBER: _ClassVar[int]
    BATCHES_FIELD_NUMBER: _ClassVar[int]
    REJECTED_FIELD_NUMBER: _ClassVar[int]
    FAILED_BATCHES_FIELD_NUMBER: _ClassVar[int]
    BATCH_SIZES_FIELD_NUMBER: _ClassVar[int]
    model: _model_pb2.ModelSpec
    requests: int
    rows: int
    batches: int
    rejected: int
    failed_batches: int
    batch_sizes: _containers.RepeatedCompositeFieldContainer[BatchSizeCount]
    def __init__(self, model: _Optional[_Union[_model_pb2.ModelSpec, _Mapping]] = ..., requests: _Optional[int] = ..., rows: _Optional[int] = ..., batches: _Optional[int] = ..., rejected: _Optional[int] = ..., failed_batches: _Optional[int] = ..., batch_sizes: _Optional[_Iterable[_Union[BatchSizeCount, _Mapping]]] = ...) -> None: ...

class GetModelStatsResponse(_message.Message):
    __slots__ = ("models",)
    MODELS_FIELD_NUMBER: _ClassVar[int]
    models: _containers.RepeatedCompositeFieldContainer[ModelStats]
    def __init__(self, models: _Optional[_Iterable[_Union[ModelStats, _Mapping]]] = ...) -> None: ...
