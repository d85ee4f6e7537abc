"""Many clients registering, retrying and releasing at once: numbers never skip or repeat, a release is
atomic, and a retried registration is stored once — on SQLite and on PostgreSQL."""

from __future__ import annotations

from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor

import grpc

from services.api.embedding_studio.v1 import clickstream_pb2 as pb
from services.api.embedding_studio.v1 import clickstream_pb2_grpc
from tests.ingest.helpers import session_request

CLIENTS = 12
SESSIONS_PER_CLIENT = 25


def test_concurrent_registrations_retries_and_releases_keep_numbers_gap_free(ingest_server) -> None:
    def client(worker: int) -> list[str]:
        releases = []
        with grpc.insecure_channel(ingest_server.address) as channel:
            stub = clickstream_pb2_grpc.ClickstreamServiceStub(channel)
            for i in range(SESSIONS_PER_CLIENT):
                request = session_request(f"w{worker}-s{i}", clicks=(0,))
                stub.RegisterSession(request)
                assert stub.RegisterSession(request).duplicate  # a client retry
                if i % 10 == 9:
                    try:
                        released = stub.ReleaseBatch(pb.ReleaseBatchRequest(release_id=f"w{worker}-r{i}"))
                        releases.append(released.released_batch.batch_id)
                    except grpc.RpcError as error:  # another client's release emptied the batch just now
                        assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
        return releases

    with ThreadPoolExecutor(CLIENTS) as pool:
        released_ids = [b for batch_ids in pool.map(client, range(CLIENTS)) for b in batch_ids]

    assert len(released_ids) == len(set(released_ids)), "two releases closed the same batch"
    with grpc.insecure_channel(ingest_server.address) as channel:
        stub = clickstream_pb2_grpc.ClickstreamServiceStub(channel)
        collecting = stub.GetBatch(pb.GetBatchRequest()).batch
        numbers: dict[str, list[int]] = defaultdict(list)
        seen_sessions: list[str] = []
        for number in range(1, collecting.number + 1):
            batch = stub.GetBatch(pb.GetBatchRequest(batch_id=f"batch-{number}")).batch
            streamed = [m.session for m in stub.StreamBatchSessions(
                pb.StreamBatchSessionsRequest(batch_id=batch.batch_id))]
            numbers[batch.batch_id] = [s.session_number for s in streamed]
            seen_sessions += [s.session_id for s in streamed]
            assert batch.session_count == len(streamed)
            if number < collecting.number:
                assert batch.status == pb.BATCH_STATUS_RELEASED and batch.session_count > 0
    assert sorted(released_ids) == sorted(f"batch-{n}" for n in range(1, collecting.number))
    for batch_id, got in numbers.items():
        assert got == list(range(1, len(got) + 1)), f"{batch_id} numbers skip or repeat: {got}"
    assert sorted(seen_sessions) == sorted(f"w{w}-s{i}" for w in range(CLIENTS) for i in range(SESSIONS_PER_CLIENT))


def test_the_same_new_session_sent_by_many_clients_at_once_is_stored_once(ingest_server) -> None:
    def send(_: int) -> bool:
        with grpc.insecure_channel(ingest_server.address) as channel:
            return clickstream_pb2_grpc.ClickstreamServiceStub(channel).RegisterSession(
                session_request("contested", clicks=(1,))).duplicate

    with ThreadPoolExecutor(8) as pool:
        duplicates = list(pool.map(send, range(16)))
    assert duplicates.count(False) == 1
    with grpc.insecure_channel(ingest_server.address) as channel:
        stub = clickstream_pb2_grpc.ClickstreamServiceStub(channel)
        assert stub.GetBatch(pb.GetBatchRequest()).batch.session_count == 1
        assert len(stub.GetSession(pb.GetSessionRequest(session_id="contested")).session.events) == 1
