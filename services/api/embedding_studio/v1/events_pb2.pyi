from services.api.embedding_studio.v1 import clickstream_pb2 as _clickstream_pb2
from services.api.embedding_studio.v1 import dataprep_pb2 as _dataprep_pb2
from services.api.embedding_studio.v1 import registry_pb2 as _registry_pb2
from services.api.embedding_studio.v1 import trainer_pb2 as _trainer_pb2
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class BatchReleased(_message.Message):
    __slots__ = ("batch",)
    BATCH_FIELD_NUMBER: _ClassVar[int]
    batch: _clickstream_pb2.Batch
    def __init__(self, batch: _Optional[_Union[_clickstream_pb2.Batch, _Mapping]] = ...) -> None: ...

class DataPrepRequested(_message.Message):
    __slots__ = ("task_id", "fine_tuning_method", "batch_id", "attempt")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    FINE_TUNING_METHOD_FIELD_NUMBER: _ClassVar[int]
    BATCH_ID_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    fine_tuning_method: str
    batch_id: str
    attempt: int
    def __init__(self, task_id: _Optional[str] = ..., fine_tuning_method: _Optional[str] = ..., batch_id: _Optional[str] = ..., attempt: _Optional[int] = ...) -> None: ...

class DatasetReady(_message.Message):
    __slots__ = ("task_id", "dataset", "attempt")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    DATASET_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    dataset: _dataprep_pb2.Dataset
    attempt: int
    def __init__(self, task_id: _Optional[str] = ..., dataset: _Optional[_Union[_dataprep_pb2.Dataset, _Mapping]] = ..., attempt: _Optional[int] = ...) -> None: ...

class DatasetFailed(_message.Message):
    __slots__ = ("task_id", "dataset", "attempt")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    DATASET_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    dataset: _dataprep_pb2.Dataset
    attempt: int
    def __init__(self, task_id: _Optional[str] = ..., dataset: _Optional[_Union[_dataprep_pb2.Dataset, _Mapping]] = ..., attempt: _Optional[int] = ...) -> None: ...

class TaskUpdated(_message.Message):
    __slots__ = ("task",)
    TASK_FIELD_NUMBER: _ClassVar[int]
    task: _trainer_pb2.Task
    def __init__(self, task: _Optional[_Union[_trainer_pb2.Task, _Mapping]] = ...) -> None: ...

class ModelPromoted(_message.Message):
    __slots__ = ("model", "previous_version", "experiment")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    PREVIOUS_VERSION_FIELD_NUMBER: _ClassVar[int]
    EXPERIMENT_FIELD_NUMBER: _ClassVar[int]
    model: _registry_pb2.ModelVersion
    previous_version: str
    experiment: _registry_pb2.Experiment
    def __init__(self, model: _Optional[_Union[_registry_pb2.ModelVersion, _Mapping]] = ..., previous_version: _Optional[str] = ..., experiment: _Optional[_Union[_registry_pb2.Experiment, _Mapping]] = ...) -> None: ...

class ExperimentStarted(_message.Message):
    __slots__ = ("experiment",)
    EXPERIMENT_FIELD_NUMBER: _ClassVar[int]
    experiment: _registry_pb2.Experiment
    def __init__(self, experiment: _Optional[_Union[_registry_pb2.Experiment, _Mapping]] = ...) -> None: ...
