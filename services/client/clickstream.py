"""`ClickstreamClient`: what a search backend calls to send its users' search sessions to ingest.

    from services.client import ClickstreamClient, SearchResult, Event

    with ClickstreamClient("127.0.0.1:50051") as clicks:
        clicks.register_session("3f1c", "running shoes", [SearchResult(object_id="sku-1", rank=0.91)])
        clicks.push_events("3f1c", [Event(event_id="e-1", object_id="sku-1")])

Every call is idempotent by the contract's ids (`session_id`, `(session_id, event_id)`, `release_id`),
so a call that nothing answered (UNAVAILABLE, DEADLINE_EXCEEDED) is asked again under the client's
`RetryPolicy`; what still fails is raised as a domain error (`InvalidArgument` naming the field,
`NotFound`, `AlreadyExists`, `FailedPrecondition`, `Unavailable`, ...: `services.client.calls`)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from google.protobuf import struct_pb2

from services.api.embedding_studio.v1 import clickstream_pb2 as pb
from services.api.embedding_studio.v1 import clickstream_pb2_grpc
from services.client.calls import RetryPolicy, ServiceClient, call
from services.common.settings import Limits, Settings

# One message of an `ingest` bulk: a session, more events of one, or an irrelevant mark.
IngestItem = pb.RegisterSessionRequest | pb.PushEventsRequest | pb.MarkSessionIrrelevantRequest
_ONEOF = {pb.RegisterSessionRequest: "session", pb.PushEventsRequest: "events",
          pb.MarkSessionIrrelevantRequest: "irrelevant"}
_COUNTS = ("messages", "sessions_accepted", "sessions_duplicate", "events_accepted", "events_duplicate",
           "irrelevant_marks", "rejected")


def _struct(values: dict[str, Any] | None) -> struct_pb2.Struct | None:
    if values is None:
        return None
    meta = struct_pb2.Struct()
    meta.update(values)
    return meta


class ClickstreamClient(ServiceClient):
    """A blocking client of `embedding_studio.v1.ClickstreamService` at `address` (default: the
    settings' `ES_INGEST_ADDR`). `settings` (default: read from the environment, as the services read
    theirs) gives TLS and the bearer token (`ES_AUTH_TOKEN`); `timeout_s` bounds each call, and
    `retry` says how a call that nothing answered is asked again."""

    def __init__(self, address: str | None = None, *, settings: Settings | None = None, timeout_s: float = 30.0,
                 retry: RetryPolicy | None = None, limits: Limits | None = None) -> None:
        settings = settings or Settings()
        super().__init__(address or settings.ingest_addr, clickstream_pb2_grpc.ClickstreamServiceStub,
                         settings=settings, timeout_s=timeout_s, retry=retry, limits=limits)

    def register_session(self, session_id: str, query: str, results: Sequence[pb.SearchResult], *,
                         user_id: str = "", events: Sequence[pb.Event] = (), irrelevant: bool = False,
                         meta: dict[str, Any] | None = None, created_at: int = 0,
                         experiment_id: str = "") -> pb.RegisterSessionResponse:
        """Registers one search session: the query, the results shown (in the order shown, each with the
        ranker's score), optionally its first events and the irrelevant mark. `created_at` (Unix
        seconds; 0 = the server's clock) dates it. A session that showed an online experiment's
        interleaved list names the experiment and each result its `team` (`services.client.interleaving`).
        Sending the same session again is answered with `duplicate=True`; different content under a used
        `session_id` is `AlreadyExists`."""
        return self._call("RegisterSession", pb.RegisterSessionRequest(
            session_id=session_id, search_query=query, search_results=results, search_meta=_struct(meta),
            user_id=user_id, created_at=created_at, is_irrelevant=irrelevant, events=events,
            experiment_id=experiment_id))

    def push_events(self, session_id: str, events: Sequence[pb.Event]) -> pb.PushEventsResponse:
        """Adds events (clicks, add-to-carts, ...) to a registered session; an event id already stored
        for the session counts as a duplicate."""
        return self._call("PushEvents", pb.PushEventsRequest(session_id=session_id, events=events))

    def mark_irrelevant(self, session_id: str) -> None:
        """Says the session's results did not answer its query at all (the user gave up)."""
        self._call("MarkSessionIrrelevant", pb.MarkSessionIrrelevantRequest(session_id=session_id))

    def get_session(self, session_id: str) -> pb.Session:
        return self._call("GetSession", pb.GetSessionRequest(session_id=session_id)).session

    def get_batch(self, batch_id: str = "") -> pb.Batch:
        """A batch by id; without one, the batch collecting new sessions now."""
        return self._call("GetBatch", pb.GetBatchRequest(batch_id=batch_id)).batch

    def release_batch(self, release_id: str) -> pb.Batch:
        """Closes the collecting batch for training (and opens the next); the same `release_id` again
        answers the batch it released."""
        return self._call("ReleaseBatch", pb.ReleaseBatchRequest(release_id=release_id)).released_batch

    def ingest(self, items: Iterable[IngestItem], chunk_size: int = 500, timeout_s: float = 300.0
               ) -> pb.IngestResponse:
        """Sends many sessions, events and marks through the `Ingest` stream, `chunk_size` messages a
        stream; a stream that nothing answered is sent again whole (what it had stored comes back as
        duplicates). Returns the summed summary; each rejection's `index` is the item's place in `items`
        (a rejected item stored nothing; the others are kept)."""
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1, not {chunk_size}")
        summary, chunk, start = pb.IngestResponse(), [], 0
        for item in items:
            kind = _ONEOF.get(type(item))
            if kind is None:
                raise TypeError(f"ingest takes RegisterSessionRequest, PushEventsRequest or "
                                f"MarkSessionIrrelevantRequest, not {type(item).__name__}")
            chunk.append(pb.IngestRequest(**{kind: item}))
            if len(chunk) == chunk_size:
                self._ingest_chunk(chunk, start, summary, timeout_s)
                start, chunk = start + len(chunk), []
        if chunk:
            self._ingest_chunk(chunk, start, summary, timeout_s)
        return summary

    def _ingest_chunk(self, chunk: list[pb.IngestRequest], start: int, summary: pb.IngestResponse,
                      timeout_s: float) -> None:
        part = call(lambda: self._stub.Ingest(iter(chunk), timeout=timeout_s), self.address, self._retry)
        for error in part.errors:
            summary.errors.add(index=start + error.index, code=error.code, reason=error.reason)
        for name in _COUNTS:
            setattr(summary, name, getattr(summary, name) + getattr(part, name))
