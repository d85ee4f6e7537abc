"""Announces from the task records (DESIGN.md: state in NATS itself is re-published from that state):
`es.dataprep.requested` for each pending task's current attempt, and `es.trainer.task.updated` after a
task's status changed. A record says what was announced, so a NATS outage or a restart delays an
announcement but never loses it; a re-publish after a crash between "published" and "recorded" has the
same Nats-Msg-Id and is dropped by the stream.

It also reaps: a processing task whose claim was not renewed for two leases (`TaskRecord.orphaned`:
its replica died and no message is left that would finish it) is queued again. The replica whose
revision-checked update of the record wins counts it in `task.requeued` and frees the claim; then the
task's `es.dataprep.dataset.ready` goes out again under a Nats-Msg-Id of its own (a same-id publish
would be dropped inside the stream's duplicate window), and a replica claims and resumes it."""

from __future__ import annotations

import time

from services.api.embedding_studio.v1 import dataprep_pb2, events_pb2
from services.common.nats import DATAPREP_REQUESTED, DATASET_READY, TASK_UPDATED, NatsConnection
from services.common.relay import AnnouncementRelay
from services.trainer.tasks import TaskRecord, TaskStore


def dataprep_request_id(task_id: str, attempt: int) -> str:
    return f"dataprep-requested:task:{task_id}:{attempt}"


class TaskAnnouncer(AnnouncementRelay):
    name = "trainer.announcer"

    def __init__(self, store: TaskStore, nats: NatsConnection, lease_s: float, idle_poll_s: float = 5.0) -> None:
        super().__init__(nats, idle_poll_s)
        self._store = store
        self._lease_s = lease_s

    async def publish_pending(self) -> int:
        found = 0
        for record in await self._store.all():
            if record.orphaned(time.time(), self._lease_s):
                record = await self._reap(record)
            if record.needs_requeue_announcement:
                await self._requeue(record)
                found += 1
            if record.needs_dataprep_request:
                await self._request_dataset(record)
                found += 1
            if record.needs_update_announcement:
                await self._announce_update(record)
                found += 1
        return found

    async def _request_dataset(self, record: TaskRecord) -> None:
        task = record.task
        attempt = task.attempt
        event = events_pb2.DataPrepRequested(task_id=task.task_id, fine_tuning_method=task.fine_tuning_method,
                                             batch_id=task.batch_id, attempt=attempt)
        await self._nats.publish(DATAPREP_REQUESTED, event.SerializeToString(),
                                 dataprep_request_id(task.task_id, attempt))

        def mark(latest: TaskRecord) -> bool:
            if latest.announced_attempt >= attempt:
                return False
            latest.announced_attempt = attempt
            return True

        await self._store.mutate(task.task_id, mark)
        self._log.info("dataprep_requested", task_id=task.task_id, attempt=attempt, batch_id=task.batch_id)

    async def _reap(self, record: TaskRecord) -> TaskRecord:
        task_id, lost = record.task.task_id, record.task.worker

        def reap(latest: TaskRecord) -> bool:
            if not latest.orphaned(time.time(), self._lease_s):
                return False  # renewed, finished, or reaped by another replica meanwhile
            latest.task.requeued += 1
            latest.task.worker, latest.heartbeat = "", 0.0
            return True

        reaped = await self._store.mutate(task_id, reap)
        if reaped.task.requeued > record.task.requeued:
            self._log.warning("task_requeued", task_id=task_id, lost_worker=lost, requeued=reaped.task.requeued)
        return reaped

    async def _requeue(self, record: TaskRecord) -> None:
        task, requeued = record.task, record.task.requeued
        dataset = dataprep_pb2.Dataset(fine_tuning_method=task.fine_tuning_method, batch_id=task.batch_id,
                                       status=dataprep_pb2.DATASET_STATUS_READY)
        event = events_pb2.DatasetReady(task_id=task.task_id, dataset=dataset, attempt=task.attempt)
        await self._nats.publish(DATASET_READY, event.SerializeToString(),
                                 f"task-requeued:{task.task_id}:{task.attempt}:{requeued}")

        def mark(latest: TaskRecord) -> bool:
            if latest.announced_requeues >= requeued:
                return False
            latest.announced_requeues = requeued
            return True

        await self._store.mutate(task.task_id, mark)

    async def _announce_update(self, record: TaskRecord) -> None:
        changes = record.changes
        event = events_pb2.TaskUpdated(task=record.task)
        await self._nats.publish(TASK_UPDATED, event.SerializeToString(),
                                 f"task-updated:{record.task.task_id}:{changes}")

        def mark(latest: TaskRecord) -> bool:
            if latest.announced_changes >= changes:
                return False
            latest.announced_changes = changes
            return True

        await self._store.mutate(record.task.task_id, mark)
