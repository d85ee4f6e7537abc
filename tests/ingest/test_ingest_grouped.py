"""Writes that share a transaction: the Ingest stream's messages that arrive together, and concurrent
registrations, are applied in one transaction with a savepoint each, so a refused one still rolls back
alone and is reported on its own; and a new session's reply, built from what was written, is what is
stored — on SQLite and on PostgreSQL."""

from __future__ import annotations

import time

from google.rpc import code_pb2

from services.api.embedding_studio.v1 import clickstream_pb2 as pb
from services.common.errors import AlreadyExists, InvalidArgument, NotFound
from services.ingest.store import Applied, ClickstreamStore, Registered
from tests.ingest.helpers import click, session_request


def events(session_id: str, *clicks: tuple[str, str]) -> pb.IngestRequest:
    return pb.IngestRequest(events=pb.PushEventsRequest(
        session_id=session_id, events=[click(event_id, object_id) for event_id, object_id in clicks]))


def test_a_bad_message_inside_a_grouped_transaction_rejects_only_itself(clickstream_db_url) -> None:
    store = ClickstreamStore(clickstream_db_url)
    now = int(time.time())
    try:
        store.register_sessions([session_request("known")], now)
        outcomes = store.apply_ingest([
            pb.IngestRequest(session=session_request("s1")),
            events("s1", ("e1", "item-0")),  # its session is in the same, uncommitted transaction
            events("s1", ("e2", "item-1"), ("e3", "not-shown")),
            pb.IngestRequest(session=session_request("known", query="different content")),
            events("ghost", ("e4", "item-0")),
            pb.IngestRequest(irrelevant=pb.MarkSessionIrrelevantRequest(session_id="ghost")),
            pb.IngestRequest(session=session_request("s2", clicks=(0,))),
            events("s1", ("e1", "item-0"), ("e5", "item-2")),
            pb.IngestRequest(irrelevant=pb.MarkSessionIrrelevantRequest(session_id="s1")),
        ], now)
        assert [type(outcome) for outcome in outcomes] == [
            Applied, Applied, InvalidArgument, AlreadyExists, NotFound, NotFound, Applied, Applied, Applied]
        assert outcomes[0] == Applied(sessions_accepted=1)
        assert outcomes[6] == Applied(sessions_accepted=1, events_accepted=1)
        assert outcomes[7] == Applied(events_accepted=1, events_duplicate=1)
        assert outcomes[2].field == "events[1].object_id"

        s1 = store.get_session("s1")
        assert [e.event_id for e in s1.events] == ["e1", "e5"]  # nothing of the refused message
        assert s1.is_irrelevant
        assert s1.session_number == 2
        assert store.get_session("s2").session_number == 3  # the refused registration took no number
        assert store.get_session("known").search_query == "query of known"
        assert store.get_batch("").session_count == 3
    finally:
        store.close()


def test_registrations_sharing_a_commit_each_get_their_own_outcome(clickstream_db_url) -> None:
    store = ClickstreamStore(clickstream_db_url)
    now = int(time.time())
    try:
        store.register_sessions([session_request("known")], now)
        outcomes = store.register_sessions([
            session_request("s1", clicks=(0,)),
            session_request("known", query="different content"),
            session_request("s2"),
            session_request("s1", clicks=(0, 1)),  # a retry of s1 within the same transaction
        ], now)
        assert [type(outcome) for outcome in outcomes] == [Registered, AlreadyExists, Registered, Registered]
        assert [(o.duplicate, o.events_accepted, o.session.session_number) for o in outcomes if
                isinstance(o, Registered)] == [(False, 1, 2), (False, 0, 3), (True, 1, 2)]
        assert [e.event_id for e in outcomes[3].session.events] == ["click-0", "click-1"]
        assert store.get_session("s1") == outcomes[3].session
        assert store.get_batch("").session_count == 3
    finally:
        store.close()


def test_a_stream_with_bad_messages_spread_through_it_rejects_exactly_those(ingest) -> None:
    messages, bad = [], []
    for i in range(100):
        messages.append(pb.IngestRequest(session=session_request(f"s{i}", results=2)))
        if i % 7 == 3:
            bad.append(len(messages))
            messages.append(events(f"s{i}", (f"ok-{i}", "item-0"), (f"bad-{i}", "not-shown")))
        else:
            messages.append(events(f"s{i}", (f"ok-{i}", "item-0"), (f"also-{i}", "item-1")))
    summary = ingest.Ingest(iter(messages))
    assert (summary.messages, summary.sessions_accepted, summary.rejected) == (200, 100, len(bad))
    assert [error.index for error in summary.errors] == bad
    assert {error.code for error in summary.errors} == {code_pb2.INVALID_ARGUMENT}
    assert summary.events_accepted == 2 * (100 - len(bad))
    assert list(ingest.GetSession(pb.GetSessionRequest(session_id="s3")).session.events) == []
    assert len(ingest.GetSession(pb.GetSessionRequest(session_id="s4")).session.events) == 2
    batch = ingest.GetBatch(pb.GetBatchRequest()).batch
    assert batch.session_count == 100


def test_a_new_sessions_reply_is_exactly_the_session_read_back_later(ingest) -> None:
    request = session_request("s1", results=3, user_id="u-1", created_at=int(time.time()) - 60)
    request.search_meta.update({"page": 2, "filters": {"color": "red"}, "exact": False})
    request.search_results[1].meta.update({"score": 0.25, "tags": ["a", "b"]})
    request.events.extend([click("e1", "item-1"), click("e2", "item-2", event_type="add_to_cart", created_at=0)])
    request.events[0].meta.update({"position": 2})
    reply = ingest.RegisterSession(request).session
    assert reply == ingest.GetSession(pb.GetSessionRequest(session_id="s1")).session
    assert [e.event_type for e in reply.events] == ["click", "add_to_cart"]
    assert reply.events[1].created_at > 0
    assert reply.search_results[1].meta["tags"] == ["a", "b"]
