from google.protobuf import struct_pb2 as _struct_pb2
from google.rpc import code_pb2 as _code_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Team(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    TEAM_UNSPECIFIED: _ClassVar[Team]
    TEAM_CHAMPION: _ClassVar[Team]
    TEAM_CHALLENGER: _ClassVar[Team]

class BatchStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    BATCH_STATUS_UNSPECIFIED: _ClassVar[BatchStatus]
    BATCH_STATUS_COLLECTING: _ClassVar[BatchStatus]
    BATCH_STATUS_RELEASED: _ClassVar[BatchStatus]
TEAM_UNSPECIFIED: Team
TEAM_CHAMPION: Team
TEAM_CHALLENGER: Team
BATCH_STATUS_UNSPECIFIED: BatchStatus
BATCH_STATUS_COLLECTING: BatchStatus
BATCH_STATUS_RELEASED: BatchStatus

class SearchResult(_message.Message):
    __slots__ = ("object_id", "rank", "meta", "team")
    OBJECT_ID_FIELD_NUMBER: _ClassVar[int]
    RANK_FIELD_NUMBER: _ClassVar[int]
    META_FIELD_NUMBER: _ClassVar[int]
    TEAM_FIELD_NUMBER: _ClassVar[int]
    object_id: str
    rank: float
    meta: _struct_pb2.Struct
    team: Team
    def __init__(self, object_id: _Optional[str] = ..., rank: _Optional[float] = ..., meta: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., team: _Optional[_Union[Team, str]] = ...) -> None: ...

class Event(_message.Message):
    __slots__ = ("event_id", "object_id", "event_type", "created_at", "meta")
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    OBJECT_ID_FIELD_NUMBER: _ClassVar[int]
    EVENT_TYPE_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    META_FIELD_NUMBER: _ClassVar[int]
    event_id: str
    object_id: str
    event_type: str
    created_at: int
    meta: _struct_pb2.Struct
    def __init__(self, event_id: _Optional[str] = ..., object_id: _Optional[str] = ..., event_type: _Optional[str] = ..., created_at: _Optional[int] = ..., meta: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ...) -> None: ...

class Session(_message.Message):
    __slots__ = ("session_id", "search_query", "search_results", "search_meta", "user_id", "created_at", "is_irrelevant", "events", "batch_id", "session_number", "experiment_id")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    SEARCH_QUERY_FIELD_NUMBER: _ClassVar[int]
    SEARCH_RESULTS_FIELD_NUMBER: _ClassVar[int]
    SEARCH_META_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    IS_IRRELEVANT_FIELD_NUMBER: _ClassVar[int]
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    BATCH_ID_FIELD_NUMBER: _ClassVar[int]
    SESSION_NUMBER_FIELD_NUMBER: _ClassVar[int]
    EXPERIMENT_ID_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    search_query: str
    search_results: _containers.RepeatedCompositeFieldContainer[SearchResult]
    search_meta: _struct_pb2.Struct
    user_id: str
    created_at: int
    is_irrelevant: bool
    events: _containers.RepeatedCompositeFieldContainer[Event]
    batch_id: str
    session_number: int
    experiment_id: str
    def __init__(self, session_id: _Optional[str] = ..., search_query: _Optional[str] = ..., search_results: _Optional[_Iterable[_Union[SearchResult, _Mapping]]] = ..., search_meta: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., user_id: _Optional[str] = ..., created_at: _Optional[int] = ..., is_irrelevant: _Optional[bool] = ..., events: _Optional[_Iterable[_Union[Event, _Mapping]]] = ..., batch_id: _Optional[str] = ..., session_number: _Optional[int] = ..., experiment_id: _Optional[str] = ...) -> None: ...

class Batch(_message.Message):
    __slots__ = ("batch_id", "number", "status", "session_count", "release_id", "created_at", "released_at")
    BATCH_ID_FIELD_NUMBER: _ClassVar[int]
    NUMBER_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    SESSION_COUNT_FIELD_NUMBER: _ClassVar[int]
    RELEASE_ID_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    RELEASED_AT_FIELD_NUMBER: _ClassVar[int]
    batch_id: str
    number: int
    status: BatchStatus
    session_count: int
    release_id: str
    created_at: int
    released_at: int
    def __init__(self, batch_id: _Optional[str] = ..., number: _Optional[int] = ..., status: _Optional[_Union[BatchStatus, str]] = ..., session_count: _Optional[int] = ..., release_id: _Optional[str] = ..., created_at: _Optional[int] = ..., released_at: _Optional[int] = ...) -> None: ...

class RegisterSessionRequest(_message.Message):
    __slots__ = ("session_id", "search_query", "search_results", "search_meta", "user_id", "created_at", "is_irrelevant", "events", "experiment_id")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    SEARCH_QUERY_FIELD_NUMBER: _ClassVar[int]
    SEARCH_RESULTS_FIELD_NUMBER: _ClassVar[int]
    SEARCH_META_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    IS_IRRELEVANT_FIELD_NUMBER: _ClassVar[int]
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    EXPERIMENT_ID_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    search_query: str
    search_results: _containers.RepeatedCompositeFieldContainer[SearchResult]
    search_meta: _struct_pb2.Struct
    user_id: str
    created_at: int
    is_irrelevant: bool
    events: _containers.RepeatedCompositeFieldContainer[Event]
    experiment_id: str
    def __init__(self, session_id: _Optional[str] = ..., search_query: _Optional[str] = ..., search_results: _Optional[_Iterable[_Union[SearchResult, _Mapping]]] = ..., search_meta: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., user_id: _Optional[str] = ..., created_at: _Optional[int] = ..., is_irrelevant: _Optional[bool] = ..., events: _Optional[_Iterable[_Union[Event, _Mapping]]] = ..., experiment_id: _Optional[str] = ...) -> None: ...

class RegisterSessionResponse(_message.Message):
    __slots__ = ("session", "duplicate")
    SESSION_FIELD_NUMBER: _ClassVar[int]
    DUPLICATE_FIELD_NUMBER: _ClassVar[int]
    session: Session
    duplicate: bool
    def __init__(self, session: _Optional[_Union[Session, _Mapping]] = ..., duplicate: _Optional[bool] = ...) -> None: ...

class PushEventsRequest(_message.Message):
    __slots__ = ("session_id", "events")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    events: _containers.RepeatedCompositeFieldContainer[Event]
    def __init__(self, session_id: _Optional[str] = ..., events: _Optional[_Iterable[_Union[Event, _Mapping]]] = ...) -> None: ...

class PushEventsResponse(_message.Message):
    __slots__ = ("accepted", "duplicate")
    ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    DUPLICATE_FIELD_NUMBER: _ClassVar[int]
    accepted: int
    duplicate: int
    def __init__(self, accepted: _Optional[int] = ..., duplicate: _Optional[int] = ...) -> None: ...

class MarkSessionIrrelevantRequest(_message.Message):
    __slots__ = ("session_id",)
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    def __init__(self, session_id: _Optional[str] = ...) -> None: ...

class MarkSessionIrrelevantResponse(_message.Message):
    __slots__ = ("session",)
    SESSION_FIELD_NUMBER: _ClassVar[int]
    session: Session
    def __init__(self, session: _Optional[_Union[Session, _Mapping]] = ...) -> None: ...

class GetSessionRequest(_message.Message):
    __slots__ = ("session_id",)
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    def __init__(self, session_id: _Optional[str] = ...) -> None: ...

class GetSessionResponse(_message.Message):
    __slots__ = ("session",)
    SESSION_FIELD_NUMBER: _ClassVar[int]
    session: Session
    def __init__(self, session: _Optional[_Union[Session, _Mapping]] = ...) -> None: ...

class GetBatchRequest(_message.Message):
    __slots__ = ("batch_id",)
    BATCH_ID_FIELD_NUMBER: _ClassVar[int]
    batch_id: str
    def __init__(self, batch_id: _Optional[str] = ...) -> None: ...

class GetBatchResponse(_message.Message):
    __slots__ = ("batch",)
    BATCH_FIELD_NUMBER: _ClassVar[int]
    batch: Batch
    def __init__(self, batch: _Optional[_Union[Batch, _Mapping]] = ...) -> None: ...

class ReleaseBatchRequest(_message.Message):
    __slots__ = ("release_id",)
    RELEASE_ID_FIELD_NUMBER: _ClassVar[int]
    release_id: str
    def __init__(self, release_id: _Optional[str] = ...) -> None: ...

class ReleaseBatchResponse(_message.Message):
    __slots__ = ("released_batch", "next_batch", "duplicate")
    RELEASED_BATCH_FIELD_NUMBER: _ClassVar[int]
    NEXT_BATCH_FIELD_NUMBER: _ClassVar[int]
    DUPLICATE_FIELD_NUMBER: _ClassVar[int]
    released_batch: Batch
    next_batch: Batch
    duplicate: bool
    def __init__(self, released_batch: _Optional[_Union[Batch, _Mapping]] = ..., next_batch: _Optional[_Union[Batch, _Mapping]] = ..., duplicate: _Optional[bool] = ...) -> None: ...

class StreamBatchSessionsRequest(_message.Message):
    __slots__ = ("batch_id", "after_number")
    BATCH_ID_FIELD_NUMBER: _ClassVar[int]
    AFTER_NUMBER_FIELD_NUMBER: _ClassVar[int]
    batch_id: str
    after_number: int
    def __init__(self, batch_id: _Optional[str] = ..., after_number: _Optional[int] = ...) -> None: ...

class StreamBatchSessionsResponse(_message.Message):
    __slots__ = ("session",)
    SESSION_FIELD_NUMBER: _ClassVar[int]
    session: Session
    def __init__(self, session: _Optional[_Union[Session, _Mapping]] = ...) -> None: ...

class IngestRequest(_message.Message):
    __slots__ = ("session", "events", "irrelevant")
    SESSION_FIELD_NUMBER: _ClassVar[int]
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    IRRELEVANT_FIELD_NUMBER: _ClassVar[int]
    session: RegisterSessionRequest
    events: PushEventsRequest
    irrelevant: MarkSessionIrrelevantRequest
    def __init__(self, session: _Optional[_Union[RegisterSessionRequest, _Mapping]] = ..., events: _Optional[_Union[PushEventsRequest, _Mapping]] = ..., irrelevant: _Optional[_Union[MarkSessionIrrelevantRequest, _Mapping]] = ...) -> None: ...

class IngestError(_message.Message):
    __slots__ = ("index", "code", "reason")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    CODE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    index: int
    code: _code_pb2.Code
    reason: str
    def __init__(self, index: _Optional[int] = ..., code: _Optional[_Union[_code_pb2.Code, str]] = ..., reason: _Optional[str] = ...) -> None: ...

class IngestResponse(_message.Message):
    __slots__ = ("messages", "sessions_accepted", "sessions_duplicate", "events_accepted", "events_duplicate", "irrelevant_marks", "rejected", "errors")
    MESSAGES_FIELD_NUMBER: _ClassVar[int]
    SESSIONS_ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    SESSIONS_DUPLICATE_FIELD_NUMBER: _ClassVar[int]
    EVENTS_ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    EVENTS_DUPLICATE_FIELD_NUMBER: _ClassVar[int]
    IRRELEVANT_MARKS_FIELD_NUMBER: _ClassVar[int]
    REJECTED_FIELD_NUMBER: _ClassVar[int]
    ERRORS_FIELD_NUMBER: _ClassVar[int]
    messages: int
    sessions_accepted: int
    sessions_duplicate: int
    events_accepted: int
    events_duplicate: int
    irrelevant_marks: int
    rejected: int
    errors: _containers.RepeatedCompositeFieldContainer[IngestError]
    def __init__(self, messages: _Optional[int] = ..., sessions_accepted: _Optional[int] = ..., sessions_duplicate: _Optional[int] = ..., events_accepted: _Optional[int] = ..., events_duplicate: _Optional[int] = ..., irrelevant_marks: _Optional[int] = ..., rejected: _Optional[int] = ..., errors: _Optional[_Iterable[_Union[IngestError, _Mapping]]] = ...) -> None: ...

class GetExperimentOutcomeRequest(_message.Message):
    __slots__ = ("experiment_id",)
    EXPERIMENT_ID_FIELD_NUMBER: _ClassVar[int]
    experiment_id: str
    def __init__(self, experiment_id: _Optional[str] = ...) -> None: ...

class ExperimentOutcome(_message.Message):
    __slots__ = ("experiment_id", "sessions", "wins", "losses", "ties")
    EXPERIMENT_ID_FIELD_NUMBER: _ClassVar[int]
    SESSIONS_FIELD_NUMBER: _ClassVar[int]
    WINS_FIELD_NUMBER: _ClassVar[int]
    LOSSES_FIELD_NUMBER: _ClassVar[int]
    TIES_FIELD_NUMBER: _ClassVar[int]
    experiment_id: str
    sessions: int
    wins: int
    losses: int
    ties: int
    def __init__(self, experiment_id: _Optional[str] = ..., sessions: _Optional[int] = ..., wins: _Optional[int] = ..., losses: _Optional[int] = ..., ties: _Optional[int] = ...) -> None: ...

class GetExperimentOutcomeResponse(_message.Message):
    __slots__ = ("outcome",)
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    outcome: ExperimentOutcome
    def __init__(self, outcome: _Optional[_Union[ExperimentOutcome, _Mapping]] = ...) -> None: ...
