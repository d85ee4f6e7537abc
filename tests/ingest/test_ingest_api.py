"""The ClickstreamService contract, through a real gRPC server, on SQLite and on PostgreSQL."""

from __future__ import annotations

import time

import grpc
import pytest
from google.rpc import code_pb2

from services.api.embedding_studio.v1 import clickstream_pb2 as pb
from services.common.errors import field_violation
from tests.conftest import MALFORMED_BATCH_IDS
from tests.ingest.helpers import click, session_request


def rpc_error(call, *args) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        call(*args)
    return info.value


def test_sessions_get_consecutive_numbers_in_the_collecting_batch(ingest) -> None:
    numbers = [ingest.RegisterSession(session_request(f"s{i}")).session.session_number for i in range(1, 4)]
    assert numbers == [1, 2, 3]
    stored = ingest.GetSession(pb.GetSessionRequest(session_id="s2")).session
    assert stored.batch_id == "batch-1"
    assert [r.object_id for r in stored.search_results] == ["item-0", "item-1", "item-2"]
    assert ingest.GetBatch(pb.GetBatchRequest()).batch.session_count == 3


def test_registering_the_same_session_again_returns_the_stored_one_without_moving_the_counter(ingest) -> None:
    first = ingest.RegisterSession(session_request("s1", created_at=int(time.time())))
    retry = ingest.RegisterSession(session_request("s1", created_at=first.session.created_at))
    assert retry.duplicate and not first.duplicate
    assert retry.session == first.session
    assert ingest.RegisterSession(session_request("s2")).session.session_number == 2
    assert ingest.GetBatch(pb.GetBatchRequest()).batch.session_count == 2


def test_different_content_under_a_known_session_id_is_already_exists_and_changes_nothing(ingest) -> None:
    stored = ingest.RegisterSession(session_request("s1")).session
    error = rpc_error(ingest.RegisterSession, session_request("s1", query="another query"))
    assert error.code() == grpc.StatusCode.ALREADY_EXISTS
    assert "s1" in error.details()
    assert ingest.GetSession(pb.GetSessionRequest(session_id="s1")).session == stored


def test_events_are_idempotent_on_session_and_event_id_and_default_to_click(ingest) -> None:
    ingest.RegisterSession(session_request("s1"))
    first = ingest.PushEvents(pb.PushEventsRequest(session_id="s1", events=[click("e1", "item-0")]))
    second = ingest.PushEvents(pb.PushEventsRequest(
        session_id="s1", events=[click("e1", "item-0"), click("e2", "item-2", event_type="add_to_cart")]))
    assert (first.accepted, first.duplicate) == (1, 0)
    assert (second.accepted, second.duplicate) == (1, 1)
    events = ingest.GetSession(pb.GetSessionRequest(session_id="s1")).session.events
    assert [(e.event_id, e.event_type) for e in events] == [("e1", "click"), ("e2", "add_to_cart")]


def test_events_for_an_unknown_session_are_not_found(ingest) -> None:
    error = rpc_error(ingest.PushEvents, pb.PushEventsRequest(session_id="ghost", events=[click("e1", "x")]))
    assert error.code() == grpc.StatusCode.NOT_FOUND
    assert "ghost" in error.details()


def test_a_click_on_an_object_the_session_did_not_show_refuses_the_whole_request(ingest) -> None:
    ingest.RegisterSession(session_request("s1"))
    error = rpc_error(ingest.PushEvents, pb.PushEventsRequest(
        session_id="s1", events=[click("e1", "item-0"), click("e2", "not-shown")]))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field_violation(error).field == "events[1].object_id"
    assert list(ingest.GetSession(pb.GetSessionRequest(session_id="s1")).session.events) == []


def test_a_session_keeps_all_its_events_with_no_cap(ingest) -> None:
    ingest.RegisterSession(session_request("s1", results=2))
    for chunk in range(5):
        ingest.PushEvents(pb.PushEventsRequest(session_id="s1", events=[
            click(f"e{chunk}-{i}", f"item-{i % 2}") for i in range(100)]))
    assert len(ingest.GetSession(pb.GetSessionRequest(session_id="s1")).session.events) == 500


def now() -> int:
    return int(time.time())


INVALID_SESSIONS = [
    ("empty session id", session_request(""), "session_id"),
    ("blank query", session_request("s", query=" "), "search_query"),
    ("no results", pb.RegisterSessionRequest(session_id="s", search_query="q"), "search_results"),
    ("repeated object id", pb.RegisterSessionRequest(session_id="s", search_query="q", search_results=[
        pb.SearchResult(object_id="a"), pb.SearchResult(object_id="a")]), "search_results[1].object_id"),
    ("empty object id", pb.RegisterSessionRequest(session_id="s", search_query="q", search_results=[
        pb.SearchResult(object_id="")]), "search_results[0].object_id"),
    ("rank not finite", pb.RegisterSessionRequest(session_id="s", search_query="q", search_results=[
        pb.SearchResult(object_id="a", rank=float("nan"))]), "search_results[0].rank"),
    ("id too long", session_request("s" * 257), "session_id"),
    ("query too long", session_request("s", query="q" * 4097), "search_query"),
    ("too many results", session_request("s", results=1001), "search_results"),
    ("created long ago", session_request("s", created_at=1), "created_at"),
    ("created in the future", session_request("s", created_at=now() + 3600), "created_at"),
    ("click on an unshown object", pb.RegisterSessionRequest(
        session_id="s", search_query="q", search_results=[pb.SearchResult(object_id="a")],
        events=[click("e1", "b")]), "events[0].object_id"),
    ("repeated event id", pb.RegisterSessionRequest(
        session_id="s", search_query="q", search_results=[pb.SearchResult(object_id="a")],
        events=[click("e1", "a"), click("e1", "a")]), "events[1].event_id"),
    # Valid UTF-8 for protobuf, but no PostgreSQL text column can hold a NUL character.
    ("NUL in the session id", session_request("s\x00"), "session_id"),
    ("NUL in the query", session_request("s", query="q\x00uery"), "search_query"),
    ("NUL in the user id", session_request("s", user_id="\x00"), "user_id"),
    ("NUL in an object id", pb.RegisterSessionRequest(session_id="s", search_query="q", search_results=[
        pb.SearchResult(object_id="a\x00")]), "search_results[0].object_id"),
]


@pytest.mark.parametrize(("request_", "field"), [(r, f) for _, r, f in INVALID_SESSIONS],
                         ids=[name for name, _, _ in INVALID_SESSIONS])
def test_a_bad_session_is_refused_naming_the_field_and_nothing_is_stored(ingest, request_, field) -> None:
    error = rpc_error(ingest.RegisterSession, request_)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field_violation(error).field == field
    assert error.details().startswith(field)
    assert ingest.GetBatch(pb.GetBatchRequest()).batch.session_count == 0


def test_oversized_meta_is_refused_naming_the_limit(ingest) -> None:
    request = session_request("s1")
    request.search_meta.update({"blob": "x" * 20_000})
    error = rpc_error(ingest.RegisterSession, request)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field_violation(error).field == "search_meta"
    assert "ES_MAX_META_BYTES" in error.details()


def _nested(levels: int, list_every: int = 0) -> dict:
    """A meta of `levels` nested objects (every `list_every`-th level a one-element list instead)."""
    value: object = "leaf"
    for level in range(levels - 1, 0, -1):
        value = [value] if list_every and level % list_every == 0 else {"k": value}
    return {"k": value}


def test_meta_nested_deeper_than_the_limit_is_refused_and_one_at_the_limit_reads_back(ingest) -> None:
    # 32 levels used to be stored and then broke every reply that carried it (protobuf's 100-level parse
    # limit): GetSession failed and the batch could not be prepared.
    for field, levels, list_every in (("search_results[1].meta", 17, 3), ("search_meta", 32, 0)):
        request = session_request("deep")
        target = request.search_meta if field == "search_meta" else request.search_results[int(field[15])].meta
        target.update(_nested(levels, list_every))
        error = rpc_error(ingest.RegisterSession, request)
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, field
        assert field_violation(error).field == field
        assert f"nests {levels} levels" in error.details() and "ES_MAX_META_DEPTH is 16" in error.details()
    ingest.RegisterSession(session_request("s1"))
    error = rpc_error(ingest.PushEvents, pb.PushEventsRequest(session_id="s1", events=[
        click("e1", "item-0", meta=_nested(17))]))
    assert (error.code(), field_violation(error).field) == (grpc.StatusCode.INVALID_ARGUMENT, "events[0].meta")

    request = session_request("s2")
    request.search_results[0].meta.update(_nested(16, list_every=2))
    ingest.RegisterSession(request)
    ingest.PushEvents(pb.PushEventsRequest(session_id="s2", events=[click("e2", "item-0", meta=_nested(16))]))
    stored = ingest.GetSession(pb.GetSessionRequest(session_id="s2")).session
    assert stored.search_results[0].meta == request.search_results[0].meta
    assert ingest.GetBatch(pb.GetBatchRequest()).batch.session_count == 2


@pytest.mark.parametrize("batch_id", MALFORMED_BATCH_IDS)
def test_a_malformed_batch_id_is_invalid_argument_and_no_alias_of_a_batch(ingest, batch_id: str) -> None:
    ingest.RegisterSession(session_request("s1"))
    ingest.ReleaseBatch(pb.ReleaseBatchRequest(release_id="r1"))
    for call in (lambda: ingest.GetBatch(pb.GetBatchRequest(batch_id=batch_id)),
                 lambda: list(ingest.StreamBatchSessions(pb.StreamBatchSessionsRequest(batch_id=batch_id)))):
        error = rpc_error(call)
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, batch_id
        assert field_violation(error).field == "batch_id"
    assert ingest.GetBatch(pb.GetBatchRequest(batch_id="batch-1")).batch.session_count == 1


def test_bad_events_are_refused_naming_the_field(ingest) -> None:
    ingest.RegisterSession(session_request("s1"))
    cases = [
        ("events", pb.PushEventsRequest(session_id="s1")),
        ("events[0].event_id", pb.PushEventsRequest(session_id="s1", events=[click("", "item-0")])),
        ("events[0].object_id", pb.PushEventsRequest(session_id="s1", events=[click("e", "")])),
        ("events[0].event_type", pb.PushEventsRequest(session_id="s1", events=[
            click("e", "item-0", event_type="t" * 65)])),
        ("events[0].created_at", pb.PushEventsRequest(session_id="s1", events=[
            click("e", "item-0", created_at=now() + 3600)])),
        ("session_id", pb.PushEventsRequest(session_id="", events=[click("e", "item-0")])),
        # Valid UTF-8 for protobuf, but no PostgreSQL text column can hold a NUL character.
        ("events[1].event_id", pb.PushEventsRequest(session_id="s1", events=[
            click("e", "item-0"), click("e\x00", "item-0")])),
        ("events[0].event_type", pb.PushEventsRequest(session_id="s1", events=[
            click("e", "item-0", event_type="cl\x00ck")])),
    ]
    for field, request in cases:
        error = rpc_error(ingest.PushEvents, request)
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, field
        assert field_violation(error).field == field
    assert list(ingest.GetSession(pb.GetSessionRequest(session_id="s1")).session.events) == []


def test_release_closes_the_batch_and_later_sessions_go_to_the_next(ingest) -> None:
    ingest.RegisterSession(session_request("s1"))
    ingest.RegisterSession(session_request("s2"))
    response = ingest.ReleaseBatch(pb.ReleaseBatchRequest(release_id="r1"))
    assert response.released_batch.batch_id == "batch-1"
    assert response.released_batch.status == pb.BATCH_STATUS_RELEASED
    assert response.released_batch.session_count == 2
    assert response.next_batch.batch_id == "batch-2"
    later = ingest.RegisterSession(session_request("s3")).session
    assert (later.batch_id, later.session_number) == ("batch-2", 1)
    released = ingest.GetBatch(pb.GetBatchRequest(batch_id="batch-1")).batch
    assert released.release_id == "r1" and released.released_at > 0


def test_release_is_idempotent_on_release_id(ingest) -> None:
    ingest.RegisterSession(session_request("s1"))
    first = ingest.ReleaseBatch(pb.ReleaseBatchRequest(release_id="r1"))
    ingest.RegisterSession(session_request("s2"))
    retry = ingest.ReleaseBatch(pb.ReleaseBatchRequest(release_id="r1"))
    assert retry.duplicate
    assert retry.released_batch == first.released_batch
    assert ingest.GetBatch(pb.GetBatchRequest()).batch.batch_id == "batch-2"
    assert ingest.GetBatch(pb.GetBatchRequest()).batch.session_count == 1


def test_releasing_an_empty_batch_is_failed_precondition(ingest) -> None:
    error = rpc_error(ingest.ReleaseBatch, pb.ReleaseBatchRequest(release_id="r1"))
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "batch-1" in error.details()
    assert ingest.GetBatch(pb.GetBatchRequest()).batch.batch_id == "batch-1"


def test_release_needs_a_release_id(ingest) -> None:
    ingest.RegisterSession(session_request("s1"))
    for release_id in ("", "r\x00"):
        error = rpc_error(ingest.ReleaseBatch, pb.ReleaseBatchRequest(release_id=release_id))
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert field_violation(error).field == "release_id"
    assert ingest.GetBatch(pb.GetBatchRequest()).batch.status == pb.BATCH_STATUS_COLLECTING


def test_late_events_of_a_released_session_are_stored(ingest) -> None:
    ingest.RegisterSession(session_request("s1"))
    ingest.ReleaseBatch(pb.ReleaseBatchRequest(release_id="r1"))
    assert ingest.PushEvents(pb.PushEventsRequest(session_id="s1", events=[click("late", "item-1")])).accepted == 1
    streamed = list(ingest.StreamBatchSessions(pb.StreamBatchSessionsRequest(batch_id="batch-1")))
    assert [e.event_id for e in streamed[0].session.events] == ["late"]


def test_unknown_batches_and_sessions_are_not_found(ingest) -> None:
    for call, request in [
        (ingest.GetBatch, pb.GetBatchRequest(batch_id="batch-9")),
        (ingest.GetSession, pb.GetSessionRequest(session_id="ghost")),
        (ingest.MarkSessionIrrelevant, pb.MarkSessionIrrelevantRequest(session_id="ghost")),
    ]:
        assert rpc_error(call, request).code() == grpc.StatusCode.NOT_FOUND
    error = rpc_error(lambda r: list(ingest.StreamBatchSessions(r)), pb.StreamBatchSessionsRequest(batch_id="batch-7"))
    assert error.code() == grpc.StatusCode.NOT_FOUND
    # Not a batch id at all is a malformed request, not a missing batch.
    malformed = rpc_error(ingest.GetBatch, pb.GetBatchRequest(batch_id="nonsense"))
    assert malformed.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_mark_irrelevant_is_stored_and_idempotent(ingest) -> None:
    ingest.RegisterSession(session_request("s1", clicks=(0,)))
    ingest.MarkSessionIrrelevant(pb.MarkSessionIrrelevantRequest(session_id="s1"))
    again = ingest.MarkSessionIrrelevant(pb.MarkSessionIrrelevantRequest(session_id="s1")).session
    assert again.is_irrelevant
    assert len(again.events) == 1


def test_stream_batch_sessions_returns_every_session_in_order_and_resumes(ingest) -> None:
    for i in range(1, 8):
        ingest.RegisterSession(session_request(f"s{i}", clicks=(i % 3,)))
    ingest.ReleaseBatch(pb.ReleaseBatchRequest(release_id="r1"))
    streamed = [m.session for m in ingest.StreamBatchSessions(pb.StreamBatchSessionsRequest(batch_id="batch-1"))]
    assert [s.session_number for s in streamed] == list(range(1, 8))
    assert all(len(s.events) == 1 for s in streamed)
    resumed = list(ingest.StreamBatchSessions(pb.StreamBatchSessionsRequest(batch_id="batch-1", after_number=5)))
    assert [m.session.session_id for m in resumed] == ["s6", "s7"]


def test_ingest_stream_applies_each_message_on_its_own_and_reports_the_bad_ones(ingest) -> None:
    messages = [
        pb.IngestRequest(session=session_request("s1", clicks=(0,))),
        pb.IngestRequest(events=pb.PushEventsRequest(session_id="ghost", events=[click("e", "x")])),
        pb.IngestRequest(events=pb.PushEventsRequest(session_id="s1", events=[
            click("e1", "item-1"), click("e2", "item-2")])),
        pb.IngestRequest(events=pb.PushEventsRequest(session_id="s1", events=[
            click("e3", "item-1"), click("e4", "nope")])),
        pb.IngestRequest(session=session_request("s1", clicks=(0,))),
        pb.IngestRequest(events=pb.PushEventsRequest(session_id="s1", events=[click("e1", "item-1")])),
        pb.IngestRequest(irrelevant=pb.MarkSessionIrrelevantRequest(session_id="s1")),
        pb.IngestRequest(),
        pb.IngestRequest(session=session_request("s2", query="a NUL \x00 here")),  # no database could store it
        pb.IngestRequest(session=session_request("s3")),
    ]
    summary = ingest.Ingest(iter(messages))
    assert summary.messages == 10
    assert (summary.sessions_accepted, summary.sessions_duplicate) == (2, 1)
    assert (summary.events_accepted, summary.events_duplicate) == (3, 2)
    assert summary.irrelevant_marks == 1
    assert summary.rejected == 4
    assert [(e.index, e.code) for e in summary.errors] == [
        (1, code_pb2.NOT_FOUND), (3, code_pb2.INVALID_ARGUMENT), (7, code_pb2.INVALID_ARGUMENT),
        (8, code_pb2.INVALID_ARGUMENT)]
    assert "events[1].object_id" in summary.errors[1].reason
    stored = ingest.GetSession(pb.GetSessionRequest(session_id="s1")).session
    assert [e.event_id for e in stored.events] == ["click-0", "e1", "e2"]
    assert stored.is_irrelevant
