from lstmserve.v1 import tensor_pb2 as _tensor_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class PredictionMode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PREDICTION_MODE_UNSPECIFIED: _ClassVar[PredictionMode]
    PREDICTION_MODE_VALUES: _ClassVar[PredictionMode]
    PREDICTION_MODE_CLASSES: _ClassVar[PredictionMode]
    PREDICTION_MODE_PROBABILITIES: _ClassVar[PredictionMode]

class TaskKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    TASK_KIND_UNSPECIFIED: _ClassVar[TaskKind]
    TASK_KIND_REGRESSION: _ClassVar[TaskKind]
    TASK_KIND_CLASSIFICATION: _ClassVar[TaskKind]

class SessionKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SESSION_KIND_UNSPECIFIED: _ClassVar[SessionKind]
    SESSION_KIND_NONE: _ClassVar[SessionKind]
    SESSION_KIND_WINDOW: _ClassVar[SessionKind]
    SESSION_KIND_STATE: _ClassVar[SessionKind]
PREDICTION_MODE_UNSPECIFIED: PredictionMode
PREDICTION_MODE_VALUES: PredictionMode
PREDICTION_MODE_CLASSES: PredictionMode
PREDICTION_MODE_PROBABILITIES: PredictionMode
TASK_KIND_UNSPECIFIED: TaskKind
TASK_KIND_REGRESSION: TaskKind
TASK_KIND_CLASSIFICATION: TaskKind
SESSION_KIND_UNSPECIFIED: SessionKind
SESSION_KIND_NONE: SessionKind
SESSION_KIND_WINDOW: SessionKind
SESSION_KIND_STATE: SessionKind

class ModelSpec(_message.Message):
    __slots__ = ("name", "version", "version_label")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    VERSION_LABEL_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: str
    version_label: str
    def __init__(self, name: _Optional[str] = ..., version: _Optional[str] = ..., version_label: _Optional[str] = ...) -> None: ...

class OutputSpec(_message.Message):
    __slots__ = ("tensor", "activation", "supported_modes", "class_labels")
    TENSOR_FIELD_NUMBER: _ClassVar[int]
    ACTIVATION_FIELD_NUMBER: _ClassVar[int]
    SUPPORTED_MODES_FIELD_NUMBER: _ClassVar[int]
    CLASS_LABELS_FIELD_NUMBER: _ClassVar[int]
    tensor: _tensor_pb2.TensorSpec
    activation: str
    supported_modes: _containers.RepeatedScalarFieldContainer[PredictionMode]
    class_labels: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, tensor: _Optional[_Union[_tensor_pb2.TensorSpec, _Mapping]] = ..., activation: _Optional[str] = ..., supported_modes: _Optional[_Iterable[_Union[PredictionMode, str]]] = ..., class_labels: _Optional[_Iterable[str]] = ...) -> None: ...

class PreparationStep(_message.Message):
    __slots__ = ("kind", "features", "parameters_json")
    KIND_FIELD_NUMBER: _ClassVar[int]
    FEATURES_FIELD_NUMBER: _ClassVar[int]
    PARAMETERS_JSON_FIELD_NUMBER: _ClassVar[int]
    kind: str
    features: _containers.RepeatedScalarFieldContainer[str]
    parameters_json: str
    def __init__(self, kind: _Optional[str] = ..., features: _Optional[_Iterable[str]] = ..., parameters_json: _Optional[str] = ...) -> None: ...

class Preparation(_message.Message):
    __slots__ = ("input_steps", "output_steps", "raw_timesteps", "raw_features", "description")
    INPUT_STEPS_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_STEPS_FIELD_NUMBER: _ClassVar[int]
    RAW_TIMESTEPS_FIELD_NUMBER: _ClassVar[int]
    RAW_FEATURES_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    input_steps: _containers.RepeatedCompositeFieldContainer[PreparationStep]
    output_steps: _containers.RepeatedCompositeFieldContainer[PreparationStep]
    raw_timesteps: int
    raw_features: _containers.RepeatedScalarFieldContainer[str]
    description: str
    def __init__(self, input_steps: _Optional[_Iterable[_Union[PreparationStep, _Mapping]]] = ..., output_steps: _Optional[_Iterable[_Union[PreparationStep, _Mapping]]] = ..., raw_timesteps: _Optional[int] = ..., raw_features: _Optional[_Iterable[str]] = ..., description: _Optional[str] = ...) -> None: ...

class SessionSupport(_message.Message):
    __slots__ = ("kind", "reason", "steps_before_first_answer", "state_bytes", "max_sessions", "idle_timeout_seconds")
    KIND_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    STEPS_BEFORE_FIRST_ANSWER_FIELD_NUMBER: _ClassVar[int]
    STATE_BYTES_FIELD_NUMBER: _ClassVar[int]
    MAX_SESSIONS_FIELD_NUMBER: _ClassVar[int]
    IDLE_TIMEOUT_SECONDS_FIELD_NUMBER: _ClassVar[int]
    kind: SessionKind
    reason: str
    steps_before_first_answer: int
    state_bytes: int
    max_sessions: int
    idle_timeout_seconds: float
    def __init__(self, kind: _Optional[_Union[SessionKind, str]] = ..., reason: _Optional[str] = ..., steps_before_first_answer: _Optional[int] = ..., state_bytes: _Optional[int] = ..., max_sessions: _Optional[int] = ..., idle_timeout_seconds: _Optional[float] = ...) -> None: ...

class ForecastSupport(_message.Message):
    __slots__ = ("supported", "reason", "feature", "model_horizon", "max_horizon")
    SUPPORTED_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    FEATURE_FIELD_NUMBER: _ClassVar[int]
    MODEL_HORIZON_FIELD_NUMBER: _ClassVar[int]
    MAX_HORIZON_FIELD_NUMBER: _ClassVar[int]
    supported: bool
    reason: str
    feature: str
    model_horizon: int
    max_horizon: int
    def __init__(self, supported: _Optional[bool] = ..., reason: _Optional[str] = ..., feature: _Optional[str] = ..., model_horizon: _Optional[int] = ..., max_horizon: _Optional[int] = ...) -> None: ...

class ModelMetadata(_message.Message):
    __slots__ = ("model", "task", "inputs", "outputs", "preparation", "keras_version", "backend", "sha256", "file_size_bytes", "compatibility_steps", "training_json", "sessions", "forecast")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    TASK_FIELD_NUMBER: _ClassVar[int]
    INPUTS_FIELD_NUMBER: _ClassVar[int]
    OUTPUTS_FIELD_NUMBER: _ClassVar[int]
    PREPARATION_FIELD_NUMBER: _ClassVar[int]
    KERAS_VERSION_FIELD_NUMBER: _ClassVar[int]
    BACKEND_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    FILE_SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    COMPATIBILITY_STEPS_FIELD_NUMBER: _ClassVar[int]
    TRAINING_JSON_FIELD_NUMBER: _ClassVar[int]
    SESSIONS_FIELD_NUMBER: _ClassVar[int]
    FORECAST_FIELD_NUMBER: _ClassVar[int]
    model: ModelSpec
    task: TaskKind
    inputs: _containers.RepeatedCompositeFieldContainer[_tensor_pb2.TensorSpec]
    outputs: _containers.RepeatedCompositeFieldContainer[OutputSpec]
    preparation: Preparation
    keras_version: str
    backend: str
    sha256: str
    file_size_bytes: int
    compatibility_steps: _containers.RepeatedScalarFieldContainer[str]
    training_json: str
    sessions: SessionSupport
    forecast: ForecastSupport
    def __init__(self, model: _Optional[_Union[ModelSpec, _Mapping]] = ..., task: _Optional[_Union[TaskKind, str]] = ..., inputs: _Optional[_Iterable[_Union[_tensor_pb2.TensorSpec, _Mapping]]] = ..., outputs: _Optional[_Iterable[_Union[OutputSpec, _Mapping]]] = ..., preparation: _Optional[_Union[Preparation, _Mapping]] = ..., keras_version: _Optional[str] = ..., backend: _Optional[str] = ..., sha256: _Optional[str] = ..., file_size_bytes: _Optional[int] = ..., compatibility_steps: _Optional[_Iterable[str]] = ..., training_json: _Optional[str] = ..., sessions: _Optional[_Union[SessionSupport, _Mapping]] = ..., forecast: _Optional[_Union[ForecastSupport, _Mapping]] = ...) -> None: ...
