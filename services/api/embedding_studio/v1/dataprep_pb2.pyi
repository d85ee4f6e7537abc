from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class DatasetStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DATASET_STATUS_UNSPECIFIED: _ClassVar[DatasetStatus]
    DATASET_STATUS_PENDING: _ClassVar[DatasetStatus]
    DATASET_STATUS_READY: _ClassVar[DatasetStatus]
    DATASET_STATUS_FAILED: _ClassVar[DatasetStatus]
DATASET_STATUS_UNSPECIFIED: DatasetStatus
DATASET_STATUS_PENDING: DatasetStatus
DATASET_STATUS_READY: DatasetStatus
DATASET_STATUS_FAILED: DatasetStatus

class Dataset(_message.Message):
    __slots__ = ("dataset_id", "fine_tuning_method", "plugin_version", "batch_id", "status", "uri", "train_sessions", "test_sessions", "items", "error", "created_at")
    DATASET_ID_FIELD_NUMBER: _ClassVar[int]
    FINE_TUNING_METHOD_FIELD_NUMBER: _ClassVar[int]
    PLUGIN_VERSION_FIELD_NUMBER: _ClassVar[int]
    BATCH_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    URI_FIELD_NUMBER: _ClassVar[int]
    TRAIN_SESSIONS_FIELD_NUMBER: _ClassVar[int]
    TEST_SESSIONS_FIELD_NUMBER: _ClassVar[int]
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    dataset_id: str
    fine_tuning_method: str
    plugin_version: str
    batch_id: str
    status: DatasetStatus
    uri: str
    train_sessions: int
    test_sessions: int
    items: int
    error: str
    created_at: int
    def __init__(self, dataset_id: _Optional[str] = ..., fine_tuning_method: _Optional[str] = ..., plugin_version: _Optional[str] = ..., batch_id: _Optional[str] = ..., status: _Optional[_Union[DatasetStatus, str]] = ..., uri: _Optional[str] = ..., train_sessions: _Optional[int] = ..., test_sessions: _Optional[int] = ..., items: _Optional[int] = ..., error: _Optional[str] = ..., created_at: _Optional[int] = ...) -> None: ...

class PrepareDatasetRequest(_message.Message):
    __slots__ = ("fine_tuning_method", "batch_id", "task_id")
    FINE_TUNING_METHOD_FIELD_NUMBER: _ClassVar[int]
    BATCH_ID_FIELD_NUMBER: _ClassVar[int]
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    fine_tuning_method: str
    batch_id: str
    task_id: str
    def __init__(self, fine_tuning_method: _Optional[str] = ..., batch_id: _Optional[str] = ..., task_id: _Optional[str] = ...) -> None: ...

class PrepareDatasetResponse(_message.Message):
    __slots__ = ("dataset",)
    DATASET_FIELD_NUMBER: _ClassVar[int]
    dataset: Dataset
    def __init__(self, dataset: _Optional[_Union[Dataset, _Mapping]] = ...) -> None: ...

class GetDatasetRequest(_message.Message):
    __slots__ = ("fine_tuning_method", "batch_id", "plugin_version")
    FINE_TUNING_METHOD_FIELD_NUMBER: _ClassVar[int]
    BATCH_ID_FIELD_NUMBER: _ClassVar[int]
    PLUGIN_VERSION_FIELD_NUMBER: _ClassVar[int]
    fine_tuning_method: str
    batch_id: str
    plugin_version: str
    def __init__(self, fine_tuning_method: _Optional[str] = ..., batch_id: _Optional[str] = ..., plugin_version: _Optional[str] = ...) -> None: ...

class GetDatasetResponse(_message.Message):
    __slots__ = ("dataset",)
    DATASET_FIELD_NUMBER: _ClassVar[int]
    dataset: Dataset
    def __init__(self, dataset: _Optional[_Union[Dataset, _Mapping]] = ...) -> None: ...
