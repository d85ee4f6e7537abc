"""Acknowledged means stored: the ingest service as a real process, stopped, killed and restarted;
and the batch-released announcement goes out exactly once through NATS outages and restarts."""

from __future__ import annotations

import threading
import time
import uuid
from pathlib import Path

import grpc
import pytest

from services.api.embedding_studio.v1 import clickstream_pb2 as pb
from services.api.embedding_studio.v1 import clickstream_pb2_grpc, events_pb2
from services.common.nats import BATCH_RELEASED
from tests.ingest.helpers import click, session_request
from tests.nats_reader import stream_messages, wait_for_stream_messages
from tests.servers import NatsServer, ServiceProcess


@pytest.fixture
def ingest_env(tmp_path: Path, clickstream_db_url: str, nats_server: NatsServer) -> dict[str, str]:
    return {"ES_STATE_DIR": str(tmp_path / "state"), "ES_CLICKSTREAM_DB_URL": clickstream_db_url,
            "ES_NATS_URL": nats_server.url}


def stub_for(service: ServiceProcess) -> tuple[grpc.Channel, clickstream_pb2_grpc.ClickstreamServiceStub]:
    channel = grpc.insecure_channel(service.address)
    return channel, clickstream_pb2_grpc.ClickstreamServiceStub(channel)


def test_everything_acknowledged_is_there_after_a_restart(ingest_env, tmp_path) -> None:
    service = ServiceProcess("ingest", ingest_env, tmp_path / "ingest.log").start()
    channel, stub = stub_for(service)
    with channel:
        stub.RegisterSession(session_request("s1", clicks=(0,)))
        stub.PushEvents(pb.PushEventsRequest(session_id="s1", events=[click("e1", "item-1")]))
        stub.ReleaseBatch(pb.ReleaseBatchRequest(release_id="r1"))
        stub.RegisterSession(session_request("s2"))
        before = stub.GetSession(pb.GetSessionRequest(session_id="s1")).session
    assert service.terminate() == 0
    service.start()
    channel, stub = stub_for(service)
    with channel:
        assert stub.GetSession(pb.GetSessionRequest(session_id="s1")).session == before
        collecting = stub.GetBatch(pb.GetBatchRequest()).batch
        assert (collecting.batch_id, collecting.session_count) == ("batch-2", 1)
        assert stub.ReleaseBatch(pb.ReleaseBatchRequest(release_id="r1")).duplicate
    service.terminate()


def test_kill_9_while_clients_send_loses_nothing_acknowledged(ingest_env, tmp_path) -> None:
    service = ServiceProcess("ingest", ingest_env, tmp_path / "ingest.log").start()
    acked_sessions: list[str] = []
    acked_streams: list[list[str]] = []
    stop = threading.Event()

    def unary_client(worker: int) -> None:
        channel, stub = stub_for(service)
        with channel:
            i = 0
            while not stop.is_set():
                try:
                    stub.RegisterSession(session_request(f"u{worker}-{i}", clicks=(0,)), timeout=5)
                    acked_sessions.append(f"u{worker}-{i}")
                except grpc.RpcError:
                    return
                i += 1

    def stream_client() -> None:
        channel, stub = stub_for(service)
        with channel:
            n = 0
            while not stop.is_set():
                ids = [f"bulk-{n}-{k}" for k in range(20)]
                try:
                    stub.Ingest(iter([pb.IngestRequest(session=session_request(sid, clicks=(1,))) for sid in ids]),
                                timeout=5)
                    acked_streams.append(ids)
                except grpc.RpcError:
                    return
                n += 1

    threads = [threading.Thread(target=unary_client, args=(w,)) for w in range(3)]
    threads.append(threading.Thread(target=stream_client))
    for thread in threads:
        thread.start()
    time.sleep(2.0)
    service.kill()
    stop.set()
    for thread in threads:
        thread.join(10)
    assert acked_sessions and acked_streams, "the clients got nothing acknowledged before the kill"

    service.start()
    channel, stub = stub_for(service)
    with channel:
        for session_id in acked_sessions + [sid for ids in acked_streams for sid in ids]:
            stored = stub.GetSession(pb.GetSessionRequest(session_id=session_id)).session
            assert len(stored.events) == 1
        numbers = [m.session.session_number for m in stub.StreamBatchSessions(
            pb.StreamBatchSessionsRequest(batch_id="batch-1"))]
        assert numbers == list(range(1, len(numbers) + 1))
    service.terminate()


def test_sigterm_lets_an_in_flight_ingest_stream_finish(ingest_env, tmp_path) -> None:
    service = ServiceProcess("ingest", ingest_env, tmp_path / "ingest.log").start()

    def slow_messages():
        for i in range(10):
            yield pb.IngestRequest(session=session_request(f"slow-{i}"))
            time.sleep(0.3)

    result: dict[str, object] = {}

    def stream() -> None:
        channel, stub = stub_for(service)
        with channel:
            result["summary"] = stub.Ingest(slow_messages(), timeout=30)

    thread = threading.Thread(target=stream)
    thread.start()
    # The stream is in flight on the server once its first session is stored (a message handed to the
    # client library may not have reached the server yet: a SIGTERM then finds nothing in flight).
    channel, stub = stub_for(service)
    with channel:
        deadline = time.monotonic() + 10
        while True:
            try:
                stub.GetSession(pb.GetSessionRequest(session_id="slow-0"))
                break
            except grpc.RpcError as error:
                assert error.code() == grpc.StatusCode.NOT_FOUND and time.monotonic() < deadline
                time.sleep(0.05)
    assert service.terminate() == 0
    thread.join(10)
    assert result["summary"].sessions_accepted == 10
    service.start()
    channel, stub = stub_for(service)
    with channel:
        assert stub.GetBatch(pb.GetBatchRequest()).batch.session_count == 10
    service.terminate()


def test_a_release_is_announced_on_nats_once(ingest_env, tmp_path, nats_server) -> None:
    release_id = f"announce-{uuid.uuid4()}"  # the NATS server is shared with other tests
    service = ServiceProcess("ingest", ingest_env, tmp_path / "ingest.log").start()
    channel, stub = stub_for(service)
    with channel:
        stub.RegisterSession(session_request("announce-1"))
        released = stub.ReleaseBatch(pb.ReleaseBatchRequest(release_id=release_id)).released_batch
        stub.ReleaseBatch(pb.ReleaseBatchRequest(release_id=release_id))
    mine = [p for p in wait_for_stream_messages(nats_server.url, BATCH_RELEASED, 1)
            if events_pb2.BatchReleased.FromString(p).batch.release_id == release_id]
    assert len(mine) == 1
    assert events_pb2.BatchReleased.FromString(mine[0]).batch == released
    service.terminate()


def test_a_release_while_nats_is_down_is_announced_exactly_once_after_a_restart(ingest_env, tmp_path) -> None:
    nats_down = NatsServer(tmp_path / "nats")  # not started yet: its port refuses connections
    env = {**ingest_env, "ES_NATS_URL": nats_down.url}
    service = ServiceProcess("ingest", env, tmp_path / "ingest.log").start()
    channel, stub = stub_for(service)
    with channel:
        stub.RegisterSession(session_request("s1"))
        released = stub.ReleaseBatch(pb.ReleaseBatchRequest(release_id="while-down")).released_batch
    service.kill()
    service.start()
    nats_down.start()
    try:
        payloads = wait_for_stream_messages(nats_down.url, BATCH_RELEASED, 1)
        assert [events_pb2.BatchReleased.FromString(p).batch for p in payloads] == [released]
        service.terminate()
        service.start()  # a second restart publishes nothing again
        time.sleep(2)
        assert len(stream_messages(nats_down.url, BATCH_RELEASED)) == 1
        service.terminate()
    finally:
        nats_down.stop()
