"""The Python client of Embedding Studio, for search backends: `ClickstreamClient` sends search sessions
and their events to ingest, `RegistryClient` says which model version(s) to serve and downloads them,
and `team_draft` interleaves a champion's and a challenger's rankings during an online experiment.
Both clients read TLS and the bearer token from the environment as the services do (`ES_TLS_*`,
`ES_AUTH_TOKEN`), retry what nothing answered under a `RetryPolicy` (every call is idempotent by the
contract's ids) and raise the services' domain errors (`services.common.errors`). `SearchResult` and
`Event` are the contract's messages (`clickstream.proto`)."""

from services.api.embedding_studio.v1.clickstream_pb2 import (
    Event,
    MarkSessionIrrelevantRequest,
    PushEventsRequest,
    RegisterSessionRequest,
    SearchResult,
)
from services.client.calls import RetryPolicy, translate
from services.client.channels import open_aio_channel, open_channel
from services.client.clickstream import ClickstreamClient
from services.client.interleaving import Interleaved, session_winner, team_draft
from services.client.registry import Downloaded, DownloadError, RegistryClient
from services.common.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ServiceError,
    Unauthenticated,
    Unavailable,
)

__all__ = [
    "AlreadyExists", "ClickstreamClient", "DownloadError", "Downloaded", "Event", "FailedPrecondition",
    "Interleaved", "InvalidArgument", "MarkSessionIrrelevantRequest", "NotFound", "PermissionDenied",
    "PushEventsRequest", "RegisterSessionRequest", "RegistryClient", "RetryPolicy", "SearchResult", "ServiceError",
    "Unauthenticated", "Unavailable", "open_aio_channel", "open_channel", "session_winner", "team_draft", "translate",
]
