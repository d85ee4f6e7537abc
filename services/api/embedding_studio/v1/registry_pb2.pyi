from services.api.embedding_studio.v1 import clickstream_pb2 as _clickstream_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class RunStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    RUN_STATUS_UNSPECIFIED: _ClassVar[RunStatus]
    RUN_STATUS_RUNNING: _ClassVar[RunStatus]
    RUN_STATUS_SCHEDULED: _ClassVar[RunStatus]
    RUN_STATUS_FINISHED: _ClassVar[RunStatus]
    RUN_STATUS_FAILED: _ClassVar[RunStatus]
    RUN_STATUS_KILLED: _ClassVar[RunStatus]

class ExperimentState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    EXPERIMENT_STATE_UNSPECIFIED: _ClassVar[ExperimentState]
    EXPERIMENT_STATE_RUNNING: _ClassVar[ExperimentState]
    EXPERIMENT_STATE_CHALLENGER_WON: _ClassVar[ExperimentState]
    EXPERIMENT_STATE_CHAMPION_KEPT: _ClassVar[ExperimentState]
    EXPERIMENT_STATE_STOPPED: _ClassVar[ExperimentState]
RUN_STATUS_UNSPECIFIED: RunStatus
RUN_STATUS_RUNNING: RunStatus
RUN_STATUS_SCHEDULED: RunStatus
RUN_STATUS_FINISHED: RunStatus
RUN_STATUS_FAILED: RunStatus
RUN_STATUS_KILLED: RunStatus
EXPERIMENT_STATE_UNSPECIFIED: ExperimentState
EXPERIMENT_STATE_RUNNING: ExperimentState
EXPERIMENT_STATE_CHALLENGER_WON: ExperimentState
EXPERIMENT_STATE_CHAMPION_KEPT: ExperimentState
EXPERIMENT_STATE_STOPPED: ExperimentState

class HeldOutScores(_message.Message):
    __slots__ = ("ndcg_at_10", "mrr_at_10", "recall_at", "queries")
    class RecallAtEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: int
        value: float
        def __init__(self, key: _Optional[int] = ..., value: _Optional[float] = ...) -> None: ...
    NDCG_AT_10_FIELD_NUMBER: _ClassVar[int]
    MRR_AT_10_FIELD_NUMBER: _ClassVar[int]
    RECALL_AT_FIELD_NUMBER: _ClassVar[int]
    QUERIES_FIELD_NUMBER: _ClassVar[int]
    ndcg_at_10: float
    mrr_at_10: float
    recall_at: _containers.ScalarMap[int, float]
    queries: int
    def __init__(self, ndcg_at_10: _Optional[float] = ..., mrr_at_10: _Optional[float] = ..., recall_at: _Optional[_Mapping[int, float]] = ..., queries: _Optional[int] = ...) -> None: ...

class ModelVersion(_message.Message):
    __slots__ = ("fine_tuning_method", "version", "is_initial", "batch_id", "iteration_id", "run_id", "task_id", "params", "scores", "is_best", "reason", "compared_version", "compared_scores", "sha256", "size_bytes", "created_at")
    class ParamsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    FINE_TUNING_METHOD_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    IS_INITIAL_FIELD_NUMBER: _ClassVar[int]
    BATCH_ID_FIELD_NUMBER: _ClassVar[int]
    ITERATION_ID_FIELD_NUMBER: _ClassVar[int]
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    PARAMS_FIELD_NUMBER: _ClassVar[int]
    SCORES_FIELD_NUMBER: _ClassVar[int]
    IS_BEST_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    COMPARED_VERSION_FIELD_NUMBER: _ClassVar[int]
    COMPARED_SCORES_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    fine_tuning_method: str
    version: str
    is_initial: bool
    batch_id: str
    iteration_id: str
    run_id: str
    task_id: str
    params: _containers.ScalarMap[str, str]
    scores: HeldOutScores
    is_best: bool
    reason: str
    compared_version: str
    compared_scores: HeldOutScores
    sha256: str
    size_bytes: int
    created_at: int
    def __init__(self, fine_tuning_method: _Optional[str] = ..., version: _Optional[str] = ..., is_initial: _Optional[bool] = ..., batch_id: _Optional[str] = ..., iteration_id: _Optional[str] = ..., run_id: _Optional[str] = ..., task_id: _Optional[str] = ..., params: _Optional[_Mapping[str, str]] = ..., scores: _Optional[_Union[HeldOutScores, _Mapping]] = ..., is_best: _Optional[bool] = ..., reason: _Optional[str] = ..., compared_version: _Optional[str] = ..., compared_scores: _Optional[_Union[HeldOutScores, _Mapping]] = ..., sha256: _Optional[str] = ..., size_bytes: _Optional[int] = ..., created_at: _Optional[int] = ...) -> None: ...

class RegisterInitialModelRequest(_message.Message):
    __slots__ = ("fine_tuning_method",)
    FINE_TUNING_METHOD_FIELD_NUMBER: _ClassVar[int]
    fine_tuning_method: str
    def __init__(self, fine_tuning_method: _Optional[str] = ...) -> None: ...

class RegisterInitialModelResponse(_message.Message):
    __slots__ = ("model",)
    MODEL_FIELD_NUMBER: _ClassVar[int]
    model: ModelVersion
    def __init__(self, model: _Optional[_Union[ModelVersion, _Mapping]] = ...) -> None: ...

class GetBestModelRequest(_message.Message):
    __slots__ = ("fine_tuning_method",)
    FINE_TUNING_METHOD_FIELD_NUMBER: _ClassVar[int]
    fine_tuning_method: str
    def __init__(self, fine_tuning_method: _Optional[str] = ...) -> None: ...

class GetBestModelResponse(_message.Message):
    __slots__ = ("model",)
    MODEL_FIELD_NUMBER: _ClassVar[int]
    model: ModelVersion
    def __init__(self, model: _Optional[_Union[ModelVersion, _Mapping]] = ...) -> None: ...

class ListModelVersionsRequest(_message.Message):
    __slots__ = ("fine_tuning_method", "page_size", "page_token")
    FINE_TUNING_METHOD_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    fine_tuning_method: str
    page_size: int
    page_token: str
    def __init__(self, fine_tuning_method: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListModelVersionsResponse(_message.Message):
    __slots__ = ("versions", "next_page_token")
    VERSIONS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    versions: _containers.RepeatedCompositeFieldContainer[ModelVersion]
    next_page_token: str
    def __init__(self, versions: _Optional[_Iterable[_Union[ModelVersion, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class Run(_message.Message):
    __slots__ = ("run_id", "status", "params", "metrics")
    class ParamsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    class MetricsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    PARAMS_FIELD_NUMBER: _ClassVar[int]
    METRICS_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    status: RunStatus
    params: _containers.ScalarMap[str, str]
    metrics: _containers.ScalarMap[str, float]
    def __init__(self, run_id: _Optional[str] = ..., status: _Optional[_Union[RunStatus, str]] = ..., params: _Optional[_Mapping[str, str]] = ..., metrics: _Optional[_Mapping[str, float]] = ...) -> None: ...

class Iteration(_message.Message):
    __slots__ = ("iteration_id", "name", "fine_tuning_method", "batch_id", "runs")
    ITERATION_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    FINE_TUNING_METHOD_FIELD_NUMBER: _ClassVar[int]
    BATCH_ID_FIELD_NUMBER: _ClassVar[int]
    RUNS_FIELD_NUMBER: _ClassVar[int]
    iteration_id: str
    name: str
    fine_tuning_method: str
    batch_id: str
    runs: _containers.RepeatedCompositeFieldContainer[Run]
    def __init__(self, iteration_id: _Optional[str] = ..., name: _Optional[str] = ..., fine_tuning_method: _Optional[str] = ..., batch_id: _Optional[str] = ..., runs: _Optional[_Iterable[_Union[Run, _Mapping]]] = ...) -> None: ...

class ListIterationsRequest(_message.Message):
    __slots__ = ("fine_tuning_method", "page_size", "page_token")
    FINE_TUNING_METHOD_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    fine_tuning_method: str
    page_size: int
    page_token: str
    def __init__(self, fine_tuning_method: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListIterationsResponse(_message.Message):
    __slots__ = ("iterations", "next_page_token")
    ITERATIONS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    iterations: _containers.RepeatedCompositeFieldContainer[Iteration]
    next_page_token: str
    def __init__(self, iterations: _Optional[_Iterable[_Union[Iteration, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class GetIterationRequest(_message.Message):
    __slots__ = ("iteration_id",)
    ITERATION_ID_FIELD_NUMBER: _ClassVar[int]
    iteration_id: str
    def __init__(self, iteration_id: _Optional[str] = ...) -> None: ...

class GetIterationResponse(_message.Message):
    __slots__ = ("iteration",)
    ITERATION_FIELD_NUMBER: _ClassVar[int]
    iteration: Iteration
    def __init__(self, iteration: _Optional[_Union[Iteration, _Mapping]] = ...) -> None: ...

class DownloadModelRequest(_message.Message):
    __slots__ = ("fine_tuning_method", "version")
    FINE_TUNING_METHOD_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    fine_tuning_method: str
    version: str
    def __init__(self, fine_tuning_method: _Optional[str] = ..., version: _Optional[str] = ...) -> None: ...

class ModelArchive(_message.Message):
    __slots__ = ("fine_tuning_method", "version", "sha256", "size_bytes")
    FINE_TUNING_METHOD_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    fine_tuning_method: str
    version: str
    sha256: str
    size_bytes: int
    def __init__(self, fine_tuning_method: _Optional[str] = ..., version: _Optional[str] = ..., sha256: _Optional[str] = ..., size_bytes: _Optional[int] = ...) -> None: ...

class DownloadModelResponse(_message.Message):
    __slots__ = ("archive", "chunk")
    ARCHIVE_FIELD_NUMBER: _ClassVar[int]
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    archive: ModelArchive
    chunk: bytes
    def __init__(self, archive: _Optional[_Union[ModelArchive, _Mapping]] = ..., chunk: _Optional[bytes] = ...) -> None: ...

class SubmitCandidateRequest(_message.Message):
    __slots__ = ("fine_tuning_method", "task_id", "batch_id", "run_id", "candidate_scores", "compared_version", "compared_scores")
    FINE_TUNING_METHOD_FIELD_NUMBER: _ClassVar[int]
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    BATCH_ID_FIELD_NUMBER: _ClassVar[int]
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    CANDIDATE_SCORES_FIELD_NUMBER: _ClassVar[int]
    COMPARED_VERSION_FIELD_NUMBER: _ClassVar[int]
    COMPARED_SCORES_FIELD_NUMBER: _ClassVar[int]
    fine_tuning_method: str
    task_id: str
    batch_id: str
    run_id: str
    candidate_scores: HeldOutScores
    compared_version: str
    compared_scores: HeldOutScores
    def __init__(self, fine_tuning_method: _Optional[str] = ..., task_id: _Optional[str] = ..., batch_id: _Optional[str] = ..., run_id: _Optional[str] = ..., candidate_scores: _Optional[_Union[HeldOutScores, _Mapping]] = ..., compared_version: _Optional[str] = ..., compared_scores: _Optional[_Union[HeldOutScores, _Mapping]] = ...) -> None: ...

class SubmitCandidateResponse(_message.Message):
    __slots__ = ("version", "promoted", "reason", "experiment_id")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    PROMOTED_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    EXPERIMENT_ID_FIELD_NUMBER: _ClassVar[int]
    version: ModelVersion
    promoted: bool
    reason: str
    experiment_id: str
    def __init__(self, version: _Optional[_Union[ModelVersion, _Mapping]] = ..., promoted: _Optional[bool] = ..., reason: _Optional[str] = ..., experiment_id: _Optional[str] = ...) -> None: ...

class Experiment(_message.Message):
    __slots__ = ("experiment_id", "fine_tuning_method", "champion_version", "challenger_version", "state", "reason", "sessions", "wins", "losses", "ties", "preference", "p_value", "alpha", "min_sessions", "max_sessions", "started_at", "decided_at")
    EXPERIMENT_ID_FIELD_NUMBER: _ClassVar[int]
    FINE_TUNING_METHOD_FIELD_NUMBER: _ClassVar[int]
    CHAMPION_VERSION_FIELD_NUMBER: _ClassVar[int]
    CHALLENGER_VERSION_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    SESSIONS_FIELD_NUMBER: _ClassVar[int]
    WINS_FIELD_NUMBER: _ClassVar[int]
    LOSSES_FIELD_NUMBER: _ClassVar[int]
    TIES_FIELD_NUMBER: _ClassVar[int]
    PREFERENCE_FIELD_NUMBER: _ClassVar[int]
    P_VALUE_FIELD_NUMBER: _ClassVar[int]
    ALPHA_FIELD_NUMBER: _ClassVar[int]
    MIN_SESSIONS_FIELD_NUMBER: _ClassVar[int]
    MAX_SESSIONS_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_FIELD_NUMBER: _ClassVar[int]
    DECIDED_AT_FIELD_NUMBER: _ClassVar[int]
    experiment_id: str
    fine_tuning_method: str
    champion_version: str
    challenger_version: str
    state: ExperimentState
    reason: str
    sessions: int
    wins: int
    losses: int
    ties: int
    preference: float
    p_value: float
    alpha: float
    min_sessions: int
    max_sessions: int
    started_at: int
    decided_at: int
    def __init__(self, experiment_id: _Optional[str] = ..., fine_tuning_method: _Optional[str] = ..., champion_version: _Optional[str] = ..., challenger_version: _Optional[str] = ..., state: _Optional[_Union[ExperimentState, str]] = ..., reason: _Optional[str] = ..., sessions: _Optional[int] = ..., wins: _Optional[int] = ..., losses: _Optional[int] = ..., ties: _Optional[int] = ..., preference: _Optional[float] = ..., p_value: _Optional[float] = ..., alpha: _Optional[float] = ..., min_sessions: _Optional[int] = ..., max_sessions: _Optional[int] = ..., started_at: _Optional[int] = ..., decided_at: _Optional[int] = ...) -> None: ...

class GetServingPlanRequest(_message.Message):
    __slots__ = ("fine_tuning_method",)
    FINE_TUNING_METHOD_FIELD_NUMBER: _ClassVar[int]
    fine_tuning_method: str
    def __init__(self, fine_tuning_method: _Optional[str] = ...) -> None: ...

class GetServingPlanResponse(_message.Message):
    __slots__ = ("champion", "challenger", "experiment_id")
    CHAMPION_FIELD_NUMBER: _ClassVar[int]
    CHALLENGER_FIELD_NUMBER: _ClassVar[int]
    EXPERIMENT_ID_FIELD_NUMBER: _ClassVar[int]
    champion: ModelVersion
    challenger: ModelVersion
    experiment_id: str
    def __init__(self, champion: _Optional[_Union[ModelVersion, _Mapping]] = ..., challenger: _Optional[_Union[ModelVersion, _Mapping]] = ..., experiment_id: _Optional[str] = ...) -> None: ...

class InterleaveRequest(_message.Message):
    __slots__ = ("experiment_id", "session_id", "champion_object_ids", "challenger_object_ids", "k")
    EXPERIMENT_ID_FIELD_NUMBER: _ClassVar[int]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    CHAMPION_OBJECT_IDS_FIELD_NUMBER: _ClassVar[int]
    CHALLENGER_OBJECT_IDS_FIELD_NUMBER: _ClassVar[int]
    K_FIELD_NUMBER: _ClassVar[int]
    experiment_id: str
    session_id: str
    champion_object_ids: _containers.RepeatedScalarFieldContainer[str]
    challenger_object_ids: _containers.RepeatedScalarFieldContainer[str]
    k: int
    def __init__(self, experiment_id: _Optional[str] = ..., session_id: _Optional[str] = ..., champion_object_ids: _Optional[_Iterable[str]] = ..., challenger_object_ids: _Optional[_Iterable[str]] = ..., k: _Optional[int] = ...) -> None: ...

class InterleavedResult(_message.Message):
    __slots__ = ("object_id", "team")
    OBJECT_ID_FIELD_NUMBER: _ClassVar[int]
    TEAM_FIELD_NUMBER: _ClassVar[int]
    object_id: str
    team: _clickstream_pb2.Team
    def __init__(self, object_id: _Optional[str] = ..., team: _Optional[_Union[_clickstream_pb2.Team, str]] = ...) -> None: ...

class InterleaveResponse(_message.Message):
    __slots__ = ("results",)
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[InterleavedResult]
    def __init__(self, results: _Optional[_Iterable[_Union[InterleavedResult, _Mapping]]] = ...) -> None: ...

class GetExperimentRequest(_message.Message):
    __slots__ = ("experiment_id",)
    EXPERIMENT_ID_FIELD_NUMBER: _ClassVar[int]
    experiment_id: str
    def __init__(self, experiment_id: _Optional[str] = ...) -> None: ...

class GetExperimentResponse(_message.Message):
    __slots__ = ("experiment",)
    EXPERIMENT_FIELD_NUMBER: _ClassVar[int]
    experiment: Experiment
    def __init__(self, experiment: _Optional[_Union[Experiment, _Mapping]] = ...) -> None: ...

class ListExperimentsRequest(_message.Message):
    __slots__ = ("fine_tuning_method", "page_size", "page_token")
    FINE_TUNING_METHOD_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    fine_tuning_method: str
    page_size: int
    page_token: str
    def __init__(self, fine_tuning_method: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListExperimentsResponse(_message.Message):
    __slots__ = ("experiments", "next_page_token")
    EXPERIMENTS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    experiments: _containers.RepeatedCompositeFieldContainer[Experiment]
    next_page_token: str
    def __init__(self, experiments: _Optional[_Iterable[_Union[Experiment, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...
