"""The task bucket on its own, against a real NATS JetStream server."""

from __future__ import annotations

import asyncio

from services.api.embedding_studio.v1 import trainer_pb2 as pb
from services.common.nats import NatsConnection
from services.trainer.tasks import TaskRecord, TaskStore
from tests.servers import NatsServer


def test_listing_returns_each_tasks_latest_record_and_no_idempotency_entry(nats_server: NatsServer) -> None:
    async def scenario() -> tuple[list[TaskRecord], list[TaskRecord], TaskRecord]:
        connection = NatsConnection(nats_server.url, name="test")
        connection.start()
        assert await connection.wait_connected(10)
        store = TaskStore(connection, bucket="test_task_listing")
        try:
            empty = await store.all()
            for number in range(3):
                task = pb.Task(task_id=f"t{number}", fine_tuning_method="M", status=pb.TASK_STATUS_PENDING)
                assert await store.create(TaskRecord(task)) is not None
            await store.claim_key("retry-key", "t1")
            changed = await store.mutate("t2", lambda r: r.set_status(pb.TASK_STATUS_CANCELED, pb.TASK_STAGE_CANCELED))
            return empty, await store.all(), changed
        finally:
            await connection.close()

    empty, listed, changed = asyncio.run(scenario())
    assert empty == []
    by_id = {record.task.task_id: record for record in listed}
    assert sorted(by_id) == ["t0", "t1", "t2"]  # the idempotency entry is not a task
    assert by_id["t2"].task.status == pb.TASK_STATUS_CANCELED and by_id["t2"].revision == changed.revision
    assert by_id["t0"].task.status == pb.TASK_STATUS_PENDING
