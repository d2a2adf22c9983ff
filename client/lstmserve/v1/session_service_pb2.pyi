from lstmserve.v1 import model_pb2 as _model_pb2
from lstmserve.v1 import prediction_service_pb2 as _prediction_service_pb2
from lstmserve.v1 import tensor_pb2 as _tensor_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class CreateSessionRequest(_message.Message):
    __slots__ = ("model", "prepared")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    PREPARED_FIELD_NUMBER: _ClassVar[int]
    model: _model_pb2.ModelSpec
    prepared: bool
    def __init__(self, model: _Optional[_Union[_model_pb2.ModelSpec, _Mapping]] = ..., prepared: _Optional[bool] = ...) -> None: ...

class SessionInfo(_message.Message):
    __slots__ = ("session_id", "model", "kind", "step_inputs", "steps_before_first_answer", "state_bytes", "idle_timeout_seconds", "position")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    STEP_INPUTS_FIELD_NUMBER: _ClassVar[int]
    STEPS_BEFORE_FIRST_ANSWER_FIELD_NUMBER: _ClassVar[int]
    STATE_BYTES_FIELD_NUMBER: _ClassVar[int]
    IDLE_TIMEOUT_SECONDS_FIELD_NUMBER: _ClassVar[int]
    POSITION_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    model: _model_pb2.ModelSpec
    kind: _model_pb2.SessionKind
    step_inputs: _containers.RepeatedCompositeFieldContainer[_tensor_pb2.TensorSpec]
    steps_before_first_answer: int
    state_bytes: int
    idle_timeout_seconds: float
    position: int
    def __init__(self, session_id: _Optional[str] = ..., model: _Optional[_Union[_model_pb2.ModelSpec, _Mapping]] = ..., kind: _Optional[_Union[_model_pb2.SessionKind, str]] = ..., step_inputs: _Optional[_Iterable[_Union[_tensor_pb2.TensorSpec, _Mapping]]] = ..., steps_before_first_answer: _Optional[int] = ..., state_bytes: _Optional[int] = ..., idle_timeout_seconds: _Optional[float] = ..., position: _Optional[int] = ...) -> None: ...

class StepRequest(_message.Message):
    __slots__ = ("session_id", "inputs", "mode")
    class InputsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: _tensor_pb2.Tensor
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[_tensor_pb2.Tensor, _Mapping]] = ...) -> None: ...
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    INPUTS_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    inputs: _containers.MessageMap[str, _tensor_pb2.Tensor]
    mode: _model_pb2.PredictionMode
    def __init__(self, session_id: _Optional[str] = ..., inputs: _Optional[_Mapping[str, _tensor_pb2.Tensor]] = ..., mode: _Optional[_Union[_model_pb2.PredictionMode, str]] = ...) -> None: ...

class StepResponse(_message.Message):
    __slots__ = ("session_id", "position", "answered", "missing_steps", "outputs", "labels")
    class OutputsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: _tensor_pb2.Tensor
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[_tensor_pb2.Tensor, _Mapping]] = ...) -> None: ...
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: _prediction_service_pb2.StringList
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[_prediction_service_pb2.StringList, _Mapping]] = ...) -> None: ...
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    POSITION_FIELD_NUMBER: _ClassVar[int]
    ANSWERED_FIELD_NUMBER: _ClassVar[int]
    MISSING_STEPS_FIELD_NUMBER: _ClassVar[int]
    OUTPUTS_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    position: int
    answered: int
    missing_steps: int
    outputs: _containers.MessageMap[str, _tensor_pb2.Tensor]
    labels: _containers.MessageMap[str, _prediction_service_pb2.StringList]
    def __init__(self, session_id: _Optional[str] = ..., position: _Optional[int] = ..., answered: _Optional[int] = ..., missing_steps: _Optional[int] = ..., outputs: _Optional[_Mapping[str, _tensor_pb2.Tensor]] = ..., labels: _Optional[_Mapping[str, _prediction_service_pb2.StringList]] = ...) -> None: ...

class SessionRequest(_message.Message):
    __slots__ = ("session_id",)
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    def __init__(self, session_id: _Optional[str] = ...) -> None: ...

class EndSessionResponse(_message.Message):
    __slots__ = ("steps",)
    STEPS_FIELD_NUMBER: _ClassVar[int]
    steps: int
    def __init__(self, steps: _Optional[int] = ...) -> None: ...

class ResetRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class StreamRequest(_message.Message):
    __slots__ = ("open", "step", "reset")
    OPEN_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    RESET_FIELD_NUMBER: _ClassVar[int]
    open: CreateSessionRequest
    step: StepRequest
    reset: ResetRequest
    def __init__(self, open: _Optional[_Union[CreateSessionRequest, _Mapping]] = ..., step: _Optional[_Union[StepRequest, _Mapping]] = ..., reset: _Optional[_Union[ResetRequest, _Mapping]] = ...) -> None: ...

class StepError(_message.Message):
    __slots__ = ("code", "message")
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    code: int
    message: str
    def __init__(self, code: _Optional[int] = ..., message: _Optional[str] = ...) -> None: ...

class StreamResponse(_message.Message):
    __slots__ = ("opened", "step", "reset", "error")
    OPENED_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    RESET_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    opened: SessionInfo
    step: StepResponse
    reset: SessionInfo
    error: StepError
    def __init__(self, opened: _Optional[_Union[SessionInfo, _Mapping]] = ..., step: _Optional[_Union[StepResponse, _Mapping]] = ..., reset: _Optional[_Union[SessionInfo, _Mapping]] = ..., error: _Optional[_Union[StepError, _Mapping]] = ...) -> None: ...

class ForecastRequest(_message.Message):
    __slots__ = ("model", "history", "horizon")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    HISTORY_FIELD_NUMBER: _ClassVar[int]
    HORIZON_FIELD_NUMBER: _ClassVar[int]
    model: _model_pb2.ModelSpec
    history: _tensor_pb2.Tensor
    horizon: int
    def __init__(self, model: _Optional[_Union[_model_pb2.ModelSpec, _Mapping]] = ..., history: _Optional[_Union[_tensor_pb2.Tensor, _Mapping]] = ..., horizon: _Optional[int] = ...) -> None: ...

class ForecastResponse(_message.Message):
    __slots__ = ("model", "forecast", "method")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    FORECAST_FIELD_NUMBER: _ClassVar[int]
    METHOD_FIELD_NUMBER: _ClassVar[int]
    model: _model_pb2.ModelSpec
    forecast: _tensor_pb2.Tensor
    method: str
    def __init__(self, model: _Optional[_Union[_model_pb2.ModelSpec, _Mapping]] = ..., forecast: _Optional[_Union[_tensor_pb2.Tensor, _Mapping]] = ..., method: _Optional[str] = ...) -> None: ...
