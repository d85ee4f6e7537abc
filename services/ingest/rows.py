"""Between the contract's messages and the clickstream database's rows: batch ids, Struct columns as
JSON, a registration's fingerprint, and the session, batch and event rows as messages."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from google.protobuf import json_format, struct_pb2

from services.api.embedding_studio.v1 import clickstream_pb2 as pb
from services.common.checks import parse_batch_id
from services.common.errors import InvalidArgument
from services.ingest.schema import COLLECTING


def batch_id_of(number: int) -> str:
    return f"batch-{number}"


def batch_number(batch_id: str) -> int:
    return parse_batch_id("batch_id", batch_id)


def struct_dict(value: struct_pb2.Struct) -> dict[str, Any]:
    # MessageToDict costs microseconds even on an empty Struct, and most metas are empty.
    return json_format.MessageToDict(value) if value.fields else {}


def struct_json(value: struct_pb2.Struct) -> str | None:
    return json.dumps(json_format.MessageToDict(value), sort_keys=True, separators=(",", ":")) if value.fields else None


def fill_struct(target: struct_pb2.Struct, text: str | None) -> None:
    if text:
        target.update(json.loads(text))


def registration_fingerprint(request: pb.RegisterSessionRequest) -> str:
    """The content a retry must repeat: everything but the events and the irrelevant mark, which are
    applied idempotently on their own. (Stored fingerprints depend on this exact form.)"""
    in_experiment = bool(request.experiment_id)
    content: dict[str, Any] = {
        "q": request.search_query,
        "r": [[r.object_id, r.rank, struct_dict(r.meta), *([r.team] if in_experiment else [])]
              for r in request.search_results],
        "m": struct_dict(request.search_meta),
        "u": request.user_id,
        "t": request.created_at,
    }
    if in_experiment:
        content["x"] = request.experiment_id
    return hashlib.sha256(json.dumps(content, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def batch_message(row: Any) -> pb.Batch:
    return pb.Batch(
        batch_id=batch_id_of(row.number),
        number=row.number,
        status=pb.BATCH_STATUS_COLLECTING if row.status == COLLECTING else pb.BATCH_STATUS_RELEASED,
        session_count=row.session_count,
        release_id=row.release_id or "",
        created_at=row.created_at,
        released_at=row.released_at or 0,
    )



def session_message(row: Mapping[str, Any], results: Iterable[Mapping[str, Any]],
             event_rows: Iterable[Mapping[str, Any]]) -> pb.Session:
    """A session message from its stored row, its decoded results and its event rows."""
    session = pb.Session(
        session_id=row["session_id"],
        search_query=row["search_query"],
        user_id=row["user_id"],
        created_at=row["created_at"],
        is_irrelevant=row["is_irrelevant"],
        batch_id=batch_id_of(row["batch_number"]),
        session_number=row["session_number"],
        experiment_id=row.get("experiment_id") or "",
    )
    fill_struct(session.search_meta, row["search_meta"])
    for result in results:
        item = session.search_results.add(object_id=result["object_id"], rank=result["rank"],
                                          team=result.get("team", pb.TEAM_UNSPECIFIED))
        if result["meta"]:
            item.meta.update(result["meta"])
    for e in event_rows:
        item = session.events.add(event_id=e["event_id"], object_id=e["object_id"], event_type=e["event_type"],
                                  created_at=e["created_at"])
        fill_struct(item.meta, e["meta"])
    return session


EVENT_COLUMNS = ("session_id", "event_id", "object_id", "event_type", "created_at", "meta")


def event_rows_of(session_id: str, new_events: Sequence[pb.Event], now: int) -> list[dict[str, Any]]:
    return [
        {
            "session_id": session_id,
            "event_id": e.event_id,
            "object_id": e.object_id,
            "event_type": e.event_type or "click",
            "created_at": e.created_at or now,
            "meta": struct_json(e.meta),
        }
        for e in new_events
    ]



def shown_ids(request: pb.RegisterSessionRequest) -> frozenset[str]:
    return frozenset(r.object_id for r in request.search_results)


def check_shown(shown: frozenset[str], new_events: Sequence[pb.Event]) -> None:
    for i, item in enumerate(new_events):
        if item.object_id not in shown:
            raise InvalidArgument(f"events[{i}].object_id",
                                  f"'{item.object_id}' is not among the session's search_results")

