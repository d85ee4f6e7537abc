"""The raw clickstream a plugin's `get_fine_tuning_builder(clickstream)` receives: one
`SessionWithEvents` per stored session, mirroring the proto `Session` of the ingest service."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from google.protobuf import json_format

from services.api.embedding_studio.v1 import clickstream_pb2 as pb


def _struct(struct: Any) -> dict[str, Any]:
    # json_format is slow and most results carry no meta: skip it for the empty ones.
    return json_format.MessageToDict(struct) if struct.fields else {}


@dataclass(frozen=True)
class ShownResult:
    """One result the search engine showed: `rank` is the engine's score, not the position."""

    object_id: str
    rank: float = 0.0
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class SessionEvent:
    """One user action on a shown result; an empty `event_type` means "click", as in the API."""

    event_id: str
    object_id: str
    event_type: str = "click"
    created_at: int = 0
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class SessionWithEvents:
    """A stored search session with every event stored for it; `search_results` in shown order."""

    session_id: str
    search_query: str
    search_results: list[ShownResult]
    search_meta: dict[str, Any] = field(default_factory=dict)
    user_id: str = ""
    created_at: int = 0
    is_irrelevant: bool = False
    events: list[SessionEvent] = field(default_factory=list)

    @classmethod
    def from_proto(cls, session: pb.Session) -> SessionWithEvents:
        return cls(
            session_id=session.session_id,
            search_query=session.search_query,
            search_results=[
                ShownResult(object_id=r.object_id, rank=r.rank, meta=_struct(r.meta))
                for r in session.search_results
            ],
            search_meta=_struct(session.search_meta),
            user_id=session.user_id,
            created_at=session.created_at,
            is_irrelevant=session.is_irrelevant,
            events=[
                SessionEvent(event_id=e.event_id, object_id=e.object_id, event_type=e.event_type or "click",
                             created_at=e.created_at, meta=_struct(e.meta))
                for e in session.events
            ],
        )
