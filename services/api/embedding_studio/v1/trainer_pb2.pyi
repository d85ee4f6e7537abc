from google.protobuf import struct_pb2 as _struct_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class TaskStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    TASK_STATUS_UNSPECIFIED: _ClassVar[TaskStatus]
    TASK_STATUS_PENDING: _ClassVar[TaskStatus]
    TASK_STATUS_PROCESSING: _ClassVar[TaskStatus]
    TASK_STATUS_DONE: _ClassVar[TaskStatus]
    TASK_STATUS_CANCELED: _ClassVar[TaskStatus]
    TASK_STATUS_ERROR: _ClassVar[TaskStatus]

class TaskStage(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    TASK_STAGE_UNSPECIFIED: _ClassVar[TaskStage]
    TASK_STAGE_DATAPREP: _ClassVar[TaskStage]
    TASK_STAGE_LOADING: _ClassVar[TaskStage]
    TASK_STAGE_TRAINING: _ClassVar[TaskStage]
    TASK_STAGE_EVALUATING: _ClassVar[TaskStage]
    TASK_STAGE_SUBMITTING: _ClassVar[TaskStage]
    TASK_STAGE_DONE: _ClassVar[TaskStage]
    TASK_STAGE_ERROR: _ClassVar[TaskStage]
    TASK_STAGE_CANCELED: _ClassVar[TaskStage]
TASK_STATUS_UNSPECIFIED: TaskStatus
TASK_STATUS_PENDING: TaskStatus
TASK_STATUS_PROCESSING: TaskStatus
TASK_STATUS_DONE: TaskStatus
TASK_STATUS_CANCELED: TaskStatus
TASK_STATUS_ERROR: TaskStatus
TASK_STAGE_UNSPECIFIED: TaskStage
TASK_STAGE_DATAPREP: TaskStage
TASK_STAGE_LOADING: TaskStage
TASK_STAGE_TRAINING: TaskStage
TASK_STAGE_EVALUATING: TaskStage
TASK_STAGE_SUBMITTING: TaskStage
TASK_STAGE_DONE: TaskStage
TASK_STAGE_ERROR: TaskStage
TASK_STAGE_CANCELED: TaskStage

class TaskProgress(_message.Message):
    __slots__ = ("stage", "trial", "trials_total", "epoch", "epochs_total", "step", "steps_total", "metrics", "metrics_step")
    class MetricsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    STAGE_FIELD_NUMBER: _ClassVar[int]
    TRIAL_FIELD_NUMBER: _ClassVar[int]
    TRIALS_TOTAL_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    EPOCHS_TOTAL_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    STEPS_TOTAL_FIELD_NUMBER: _ClassVar[int]
    METRICS_FIELD_NUMBER: _ClassVar[int]
    METRICS_STEP_FIELD_NUMBER: _ClassVar[int]
    stage: TaskStage
    trial: int
    trials_total: int
    epoch: int
    epochs_total: int
    step: int
    steps_total: int
    metrics: _containers.ScalarMap[str, float]
    metrics_step: int
    def __init__(self, stage: _Optional[_Union[TaskStage, str]] = ..., trial: _Optional[int] = ..., trials_total: _Optional[int] = ..., epoch: _Optional[int] = ..., epochs_total: _Optional[int] = ..., step: _Optional[int] = ..., steps_total: _Optional[int] = ..., metrics: _Optional[_Mapping[str, float]] = ..., metrics_step: _Optional[int] = ...) -> None: ...

class Task(_message.Message):
    __slots__ = ("task_id", "fine_tuning_method", "batch_id", "status", "idempotency_key", "metadata", "created_at", "updated_at", "progress", "error", "model_version", "best_model_url", "promoted", "attempt", "worker", "requeued", "max_trials", "experiment_id")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    FINE_TUNING_METHOD_FIELD_NUMBER: _ClassVar[int]
    BATCH_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    BEST_MODEL_URL_FIELD_NUMBER: _ClassVar[int]
    PROMOTED_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    WORKER_FIELD_NUMBER: _ClassVar[int]
    REQUEUED_FIELD_NUMBER: _ClassVar[int]
    MAX_TRIALS_FIELD_NUMBER: _ClassVar[int]
    EXPERIMENT_ID_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    fine_tuning_method: str
    batch_id: str
    status: TaskStatus
    idempotency_key: str
    metadata: _struct_pb2.Struct
    created_at: int
    updated_at: int
    progress: TaskProgress
    error: str
    model_version: str
    best_model_url: str
    promoted: bool
    attempt: int
    worker: str
    requeued: int
    max_trials: int
    experiment_id: str
    def __init__(self, task_id: _Optional[str] = ..., fine_tuning_method: _Optional[str] = ..., batch_id: _Optional[str] = ..., status: _Optional[_Union[TaskStatus, str]] = ..., idempotency_key: _Optional[str] = ..., metadata: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., created_at: _Optional[int] = ..., updated_at: _Optional[int] = ..., progress: _Optional[_Union[TaskProgress, _Mapping]] = ..., error: _Optional[str] = ..., model_version: _Optional[str] = ..., best_model_url: _Optional[str] = ..., promoted: _Optional[bool] = ..., attempt: _Optional[int] = ..., worker: _Optional[str] = ..., requeued: _Optional[int] = ..., max_trials: _Optional[int] = ..., experiment_id: _Optional[str] = ...) -> None: ...

class CreateTaskRequest(_message.Message):
    __slots__ = ("fine_tuning_method", "batch_id", "metadata", "idempotency_key", "max_trials")
    FINE_TUNING_METHOD_FIELD_NUMBER: _ClassVar[int]
    BATCH_ID_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    MAX_TRIALS_FIELD_NUMBER: _ClassVar[int]
    fine_tuning_method: str
    batch_id: str
    metadata: _struct_pb2.Struct
    idempotency_key: str
    max_trials: int
    def __init__(self, fine_tuning_method: _Optional[str] = ..., batch_id: _Optional[str] = ..., metadata: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., idempotency_key: _Optional[str] = ..., max_trials: _Optional[int] = ...) -> None: ...

class CreateTaskResponse(_message.Message):
    __slots__ = ("task", "duplicate")
    TASK_FIELD_NUMBER: _ClassVar[int]
    DUPLICATE_FIELD_NUMBER: _ClassVar[int]
    task: Task
    duplicate: bool
    def __init__(self, task: _Optional[_Union[Task, _Mapping]] = ..., duplicate: _Optional[bool] = ...) -> None: ...

class GetTaskRequest(_message.Message):
    __slots__ = ("task_id",)
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    def __init__(self, task_id: _Optional[str] = ...) -> None: ...

class GetTaskResponse(_message.Message):
    __slots__ = ("task",)
    TASK_FIELD_NUMBER: _ClassVar[int]
    task: Task
    def __init__(self, task: _Optional[_Union[Task, _Mapping]] = ...) -> None: ...

class ListTasksRequest(_message.Message):
    __slots__ = ("fine_tuning_method", "status", "page_size", "page_token")
    FINE_TUNING_METHOD_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    fine_tuning_method: str
    status: TaskStatus
    page_size: int
    page_token: str
    def __init__(self, fine_tuning_method: _Optional[str] = ..., status: _Optional[_Union[TaskStatus, str]] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListTasksResponse(_message.Message):
    __slots__ = ("tasks", "next_page_token")
    TASKS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    tasks: _containers.RepeatedCompositeFieldContainer[Task]
    next_page_token: str
    def __init__(self, tasks: _Optional[_Iterable[_Union[Task, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class CancelTaskRequest(_message.Message):
    __slots__ = ("task_id",)
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    def __init__(self, task_id: _Optional[str] = ...) -> None: ...

class CancelTaskResponse(_message.Message):
    __slots__ = ("task",)
    TASK_FIELD_NUMBER: _ClassVar[int]
    task: Task
    def __init__(self, task: _Optional[_Union[Task, _Mapping]] = ...) -> None: ...

class RestartTaskRequest(_message.Message):
    __slots__ = ("task_id",)
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    def __init__(self, task_id: _Optional[str] = ...) -> None: ...

class RestartTaskResponse(_message.Message):
    __slots__ = ("task",)
    TASK_FIELD_NUMBER: _ClassVar[int]
    task: Task
    def __init__(self, task: _Optional[_Union[Task, _Mapping]] = ...) -> None: ...

class WatchTaskRequest(_message.Message):
    __slots__ = ("task_id",)
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    def __init__(self, task_id: _Optional[str] = ...) -> None: ...

class WatchTaskResponse(_message.Message):
    __slots__ = ("task",)
    TASK_FIELD_NUMBER: _ClassVar[int]
    task: Task
    def __init__(self, task: _Optional[_Union[Task, _Mapping]] = ...) -> None: ...
