"""The JetStream consumer of es.dataprep.requested, end to end through real NATS, ingest and dataprep:
requested -> ready (or failed with the reason), asked twice -> made once and announced again, a request
interrupted mid-work is finished by the next replica, and long work is kept alive by in-progress acks."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

import grpc
import nats
import pytest

from services.api.embedding_studio.v1 import dataprep_pb2 as pb
from services.api.embedding_studio.v1 import dataprep_pb2_grpc, events_pb2, trainer_pb2, trainer_pb2_grpc
from services.common.consumer import DurablePullConsumer
from services.common.nats import (
    DATAPREP_REQUESTED,
    DATASET_FAILED,
    DATASET_READY,
    STREAM,
    NatsConnection,
    stream_config,
)
from services.common.settings import Limits, Settings
from tests.dataprep.conftest import PLUGINS
from tests.dataprep.helpers import published, register_batch
from tests.servers import InProcessService, NatsServer, ServiceProcess, free_port

TEXT = "Text Test Method"


def request(url: str, task_id: str, method: str = TEXT, batch_id: str = "batch-1") -> None:
    """Publishes what the trainer publishes when a task needs a dataset."""

    async def send() -> None:
        client = await nats.connect(url)
        try:
            js = client.jetstream()
            await js.add_stream(stream_config())  # idempotent: the services create it too
            payload = events_pb2.DataPrepRequested(task_id=task_id, fine_tuning_method=method, batch_id=batch_id)
            await js.publish(DATAPREP_REQUESTED, payload.SerializeToString(), headers={"Nats-Msg-Id": task_id})
        finally:
            await client.close()

    asyncio.run(send())


def ready_events(url: str, count: int) -> dict[str, pb.Dataset]:
    return {e.task_id: e.dataset for e in map(events_pb2.DatasetReady.FromString, published(url, DATASET_READY, count))}


def failed_events(url: str, count: int) -> dict[str, pb.Dataset]:
    return {e.task_id: e.dataset
            for e in map(events_pb2.DatasetFailed.FromString, published(url, DATASET_FAILED, count))}


@pytest.mark.usefixtures("dataprep_server")
def test_a_requested_dataset_is_made_and_announced_ready_for_its_task(ingest, nats_server: NatsServer) -> None:
    batch_id = register_batch(ingest)
    request(nats_server.url, "task-1", batch_id=batch_id)
    dataset = ready_events(nats_server.url, 1)["task-1"]
    assert dataset.status == pb.DATASET_STATUS_READY and dataset.batch_id == batch_id
    assert dataset.items == 10 and Path(dataset.uri, "manifest.json").is_file()


@pytest.mark.usefixtures("dataprep_server")
def test_asked_twice_by_two_tasks_the_dataset_is_made_once_and_announced_to_both(
        ingest, nats_server: NatsServer, dataprep_settings: Settings) -> None:
    register_batch(ingest)
    request(nats_server.url, "task-1")
    request(nats_server.url, "task-2")
    request(nats_server.url, "task-1-retry")
    ready = ready_events(nats_server.url, 3)
    assert set(ready) == {"task-1", "task-2", "task-1-retry"}
    assert len({d.SerializeToString() for d in ready.values()}) == 1  # one dataset, one created_at
    assert len(list(Path(dataprep_settings.artifacts_uri, "datasets").iterdir())) == 1


@pytest.mark.usefixtures("dataprep_server")
def test_unknown_and_failing_plugins_and_unknown_batches_are_announced_failed_with_the_reason(
        ingest, nats_server: NatsServer) -> None:
    register_batch(ingest)
    request(nats_server.url, "task-unknown", method="No Such Method")
    request(nats_server.url, "task-failing", method="Failing Test Method")
    request(nats_server.url, "task-batch", batch_id="batch-404")
    failed = failed_events(nats_server.url, 3)
    assert "no plugin named 'No Such Method'" in failed["task-unknown"].error
    assert "broken_plugin.py" in failed["task-unknown"].error
    assert "RuntimeError: initial model weights not found" in failed["task-failing"].error
    assert "ingest has no batch 'batch-404'" in failed["task-batch"].error
    assert all(d.status == pb.DATASET_STATUS_FAILED for d in failed.values())


async def consumer_backlog(url: str) -> tuple[int, int]:
    """Requests dataprep's consumer has not received, and received but not settled."""
    client = await nats.connect(url)
    try:
        info = await client.jetstream().consumer_info(STREAM, "dataprep")
    finally:
        await client.close()
    return info.num_pending, info.num_ack_pending


def wait_for(condition: Callable[[], bool], timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_a_request_interrupted_mid_work_is_finished_by_the_next_replica(
        ingest, nats_server: NatsServer, dataprep_settings: Settings, items_file: Path, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    from services.dataprep.main import start

    gate = tmp_path / "gate"
    gate.mkdir()
    monkeypatch.setenv("GATED_PLUGIN_DIR", str(gate))
    register_batch(ingest)
    with InProcessService(lambda port: start(dataprep_settings, Limits(), "127.0.0.1", port)):
        request(nats_server.url, "task-g", method="Gated Test Method")
        wait_for(lambda: len(list(gate.glob("started-*"))) == 1)
    # The first replica stopped mid-work without a dataset or an announcement; a new one takes over.
    assert not published(nats_server.url, DATASET_READY, 1, timeout=0.5)
    with InProcessService(lambda port: start(dataprep_settings, Limits(), "127.0.0.1", port)):
        wait_for(lambda: len(list(gate.glob("started-*"))) == 2)
        (gate / "open").touch()
        dataset = ready_events(nats_server.url, 1)["task-g"]
    assert dataset.status == pb.DATASET_STATUS_READY and dataset.fine_tuning_method == "Gated Test Method"


def test_a_request_that_keeps_failing_fails_its_dataset_with_the_last_error_after_max_deliver(
        ingest, nats_server: NatsServer, dataprep_settings: Settings, items_file: Path) -> None:
    from services.dataprep.main import start

    register_batch(ingest)
    # Ingest is unreachable: every delivery fails as UNAVAILABLE, which is worth retrying, but not forever.
    settings = dataprep_settings.model_copy(update={"ingest_addr": f"127.0.0.1:{free_port()}",
                                                    "dataprep_max_deliver": 3})
    with InProcessService(lambda port: start(settings, Limits(), "127.0.0.1", port)):
        request(nats_server.url, "task-doomed")
        failed = failed_events(nats_server.url, 1)["task-doomed"]  # after waits of 2 s and 4 s
        assert failed.status == pb.DATASET_STATUS_FAILED and failed.batch_id == "batch-1"
        assert failed.error.startswith("gave up after 3 tries (ES_DATAPREP_MAX_DELIVER): ingest at ")
        assert "UNAVAILABLE" in failed.error
        time.sleep(3)  # nothing more: the request was settled, not left to JetStream
        assert len(published(nats_server.url, DATASET_FAILED, 2, timeout=1)) == 1
    assert asyncio.run(consumer_backlog(nats_server.url)) == (0, 0)


def test_the_request_of_a_canceled_task_is_dropped_without_making_the_dataset(
        ingest, ingest_server: InProcessService, nats_server: NatsServer, dataprep_settings: Settings,
        items_file: Path, tmp_path: Path) -> None:
    from services.dataprep.main import start

    batch_id = register_batch(ingest)
    env = {"ES_NATS_URL": nats_server.url, "ES_INGEST_ADDR": ingest_server.address, "ES_PLUGINS_PATH": str(PLUGINS),
           "ES_STATE_DIR": str(tmp_path / "trainer-state"), "ES_ARTIFACTS_URI": dataprep_settings.artifacts_uri}
    trainer = ServiceProcess("trainer", env, tmp_path / "trainer.log").start()
    try:
        with grpc.insecure_channel(trainer.address) as channel:
            stub = trainer_pb2_grpc.TrainerServiceStub(channel)
            task = stub.CreateTask(trainer_pb2.CreateTaskRequest(
                fine_tuning_method=TEXT, batch_id=batch_id, idempotency_key="to-cancel"), timeout=60).task
            stub.CancelTask(trainer_pb2.CancelTaskRequest(task_id=task.task_id), timeout=60)
            # Only now does a dataprep replica come up and receive the task's request.
            settings = dataprep_settings.model_copy(update={"trainer_addr": trainer.address})
            with InProcessService(lambda port: start(settings, Limits(), "127.0.0.1", port)) as dataprep:
                request(nats_server.url, "ghost-task")  # a task the trainer never had
                assert not published(nats_server.url, DATASET_READY, 1, timeout=4)
                assert not published(nats_server.url, DATASET_FAILED, 1, timeout=0.5)
                with grpc.insecure_channel(dataprep.address) as dataprep_channel, pytest.raises(grpc.RpcError) as info:
                    dataprep_pb2_grpc.DataPrepServiceStub(dataprep_channel).GetDataset(
                        pb.GetDatasetRequest(fine_tuning_method=TEXT, batch_id=batch_id), timeout=30)
                assert info.value.code() == grpc.StatusCode.NOT_FOUND  # never made
                assert asyncio.run(consumer_backlog(nats_server.url)) == (0, 0)  # both settled: dropped
    finally:
        trainer.terminate()


def test_long_work_is_kept_alive_by_in_progress_acks_and_not_redelivered(nats_server: NatsServer) -> None:
    async def scenario() -> list[bytes]:
        connection = NatsConnection(nats_server.url, name="test")
        connection.start()
        assert await connection.wait_connected(10)
        handled: list[bytes] = []

        async def slow(message) -> None:
            handled.append(message.data)
            await asyncio.sleep(2.5)  # 2.5 ack_waits

        consumer = DurablePullConsumer(connection, "slow-test", "es.test.slow", slow, ack_wait_s=1.0)
        consumer.start()
        await connection.publish("es.test.slow", b"job", msg_id="job-1")
        await asyncio.sleep(3.5)
        await consumer.stop()
        info = await connection.jetstream.consumer_info(STREAM, "slow-test")
        await connection.close()
        assert info.num_ack_pending == 0 and info.num_pending == 0
        return handled

    assert asyncio.run(scenario()) == [b"job"]
