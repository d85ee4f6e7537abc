"""`services.client.ClickstreamClient` against a real ingest server: the calls a search backend makes,
bulk ingest in chunks, domain errors instead of status codes, and retries of what nothing answered."""

from __future__ import annotations

import grpc
import pytest
from google.rpc import code_pb2

from services.api.embedding_studio.v1 import clickstream_pb2 as pb
from services.api.embedding_studio.v1 import clickstream_pb2_grpc
from services.client import (
    AlreadyExists,
    ClickstreamClient,
    Event,
    InvalidArgument,
    NotFound,
    RetryPolicy,
    SearchResult,
    Unavailable,
)
from services.client.calls import call
from services.common.settings import Settings
from services.launcher import free_port
from tests.ingest.helpers import session_request

FAST = RetryPolicy(attempts=3, initial_backoff_s=0.01, max_backoff_s=0.02)


@pytest.fixture
def client(ingest_server) -> ClickstreamClient:
    with ClickstreamClient(ingest_server.address, settings=Settings(), retry=FAST) as client:
        yield client


def test_a_backend_registers_a_session_pushes_events_and_marks_one_irrelevant(client) -> None:
    results = [SearchResult(object_id="sku-1", rank=0.91), SearchResult(object_id="sku-7", rank=0.88)]
    first = client.register_session("s-1", "running shoes", results, user_id="u-17", meta={"device": "phone"})
    again = client.register_session("s-1", "running shoes", results, user_id="u-17", meta={"device": "phone"})
    assert (first.duplicate, again.duplicate) == (False, True)
    pushed = client.push_events("s-1", [Event(event_id="e-1", object_id="sku-7")])
    repeated = client.push_events("s-1", [Event(event_id="e-1", object_id="sku-7")])
    assert (pushed.accepted, repeated.duplicate) == (1, 1)
    client.register_session("s-2", "trail shoes", results)
    client.mark_irrelevant("s-2")
    stored = client.get_session("s-1")
    assert [e.object_id for e in stored.events] == ["sku-7"] and stored.search_meta["device"] == "phone"
    assert client.get_session("s-2").is_irrelevant
    assert client.get_batch().session_count == 2


def test_bad_input_is_raised_as_the_domain_error_naming_the_field(client) -> None:
    with pytest.raises(InvalidArgument) as refused:
        client.register_session("s-1", "running shoes", [])
    assert refused.value.field == "search_results"
    with pytest.raises(NotFound):
        client.push_events("no-such-session", [Event(event_id="e-1", object_id="sku-1")])
    client.register_session("s-1", "running shoes", [SearchResult(object_id="sku-1", rank=0.5)])
    with pytest.raises(AlreadyExists):
        client.register_session("s-1", "other query", [SearchResult(object_id="sku-1", rank=0.5)])
    with pytest.raises(TypeError, match="not Event"):
        client.ingest([Event(event_id="e", object_id="o")])


def test_ingest_sends_chunks_and_numbers_rejections_by_their_place_in_the_whole_bulk(client) -> None:
    items = [session_request(f"s-{i}", clicks=(0,)) for i in range(5)]
    items.insert(3, pb.RegisterSessionRequest(session_id="bad", search_query="q"))  # no results: refused
    items.append(pb.PushEventsRequest(session_id="s-0", events=[Event(event_id="e-9", object_id="item-2")]))
    items.append(pb.MarkSessionIrrelevantRequest(session_id="s-4"))
    summary = client.ingest(items, chunk_size=2)
    assert (summary.messages, summary.sessions_accepted, summary.events_accepted, summary.irrelevant_marks,
            summary.rejected) == (8, 5, 6, 1, 1)
    assert [e.index for e in summary.errors] == [3] and summary.errors[0].code == code_pb2.INVALID_ARGUMENT
    again = client.ingest(items[:3], chunk_size=2)  # a retried bulk stores nothing twice
    assert (again.sessions_duplicate, again.sessions_accepted) == (3, 0)
    assert client.get_batch().session_count == 5


def test_a_call_nothing_answers_is_retried_by_the_policy_then_raised_as_unavailable() -> None:
    dead = f"127.0.0.1:{free_port()}"
    with (ClickstreamClient(dead, settings=Settings(), retry=FAST, timeout_s=2) as client,
          pytest.raises(Unavailable, match="UNAVAILABLE from " + dead)):
        client.get_batch()
    attempts, waits = [], []
    with grpc.insecure_channel(dead) as channel:
        stub = clickstream_pb2_grpc.ClickstreamServiceStub(channel)
        with pytest.raises(Unavailable):
            call(lambda: attempts.append(1) or stub.GetBatch(pb.GetBatchRequest(), timeout=2), dead, FAST,
                 sleep=waits.append)
    assert len(attempts) == 3 and len(waits) == 2 and all(0.0075 <= w <= 0.025 for w in waits)


def test_a_retry_reaches_the_service_once_it_answers(ingest_server) -> None:
    dead = f"127.0.0.1:{free_port()}"
    attempts = []
    with grpc.insecure_channel(dead) as down, grpc.insecure_channel(ingest_server.address) as up:
        stubs = [clickstream_pb2_grpc.ClickstreamServiceStub(c) for c in (down, down, up)]

        def invoke():
            attempts.append(1)
            return stubs[len(attempts) - 1].GetBatch(pb.GetBatchRequest(), timeout=2)

        batch = call(invoke, ingest_server.address, FAST, sleep=lambda _s: None).batch
    assert len(attempts) == 3 and batch.batch_id == "batch-1"


def test_a_retry_policy_that_cannot_work_is_refused() -> None:
    with pytest.raises(ValueError, match="attempts"):
        RetryPolicy(attempts=0)
    with pytest.raises(ValueError, match="initial_backoff_s"):
        RetryPolicy(initial_backoff_s=5, max_backoff_s=1)
