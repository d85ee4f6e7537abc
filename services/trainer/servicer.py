"""`embedding_studio.v1.TrainerService`: creates, lists, cancels, restarts and watches fine-tuning tasks.
The records live in the NATS KV bucket (services/trainer/tasks.py); the work itself is done by whichever
replica's consumer gets the task's dataset (services/trainer/worker.py)."""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from collections.abc import AsyncIterator, Callable

import grpc
from google.protobuf import json_format

from services.api.embedding_studio.v1 import clickstream_pb2, clickstream_pb2_grpc, trainer_pb2_grpc
from services.api.embedding_studio.v1 import trainer_pb2 as pb
from services.client.calls import dependency_failed
from services.common.checks import check_id, check_meta, check_token, parse_batch_id
from services.common.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    ServiceError,
)
from services.common.logging import get_logger
from services.common.paging import page_request
from services.common.settings import Limits
from services.trainer.runner import TaskRunner
from services.trainer.tasks import LEGACY_MAX_EVALS_KEY, MAX_TRIALS, TERMINAL, TaskRecord, TaskStore, now_s

log = get_logger("trainer")



def _status_name(status: int) -> str:
    return pb.TaskStatus.Name(status).removeprefix("TASK_STATUS_").lower()


class TrainerServicer(trainer_pb2_grpc.TrainerServiceServicer):
    def __init__(self, store: TaskStore, runner: TaskRunner, ingest: clickstream_pb2_grpc.ClickstreamServiceStub,
                 ingest_addr: str, limits: Limits, on_change: Callable[[], None]) -> None:
        self._store = store
        self._runner = runner
        self._ingest = ingest
        self._ingest_addr = ingest_addr
        self._limits = limits
        self._on_change = on_change

    def _check_id(self, field: str, value: str, required: bool = True) -> None:
        check_id(field, value, self._limits.max_id_length, required)
        if field == "task_id":
            check_token(field, value)
        elif field == "batch_id" and value:
            parse_batch_id(field, value)

    def _ingest_failed(self, error: grpc.aio.AioRpcError, what: str) -> ServiceError:
        return dependency_failed(error, f"ingest at {self._ingest_addr} (ES_INGEST_ADDR), asked to {what},")

    async def _release_batch(self, idempotency_key: str) -> str:
        """Releases the collecting batch for the task; a retry of the task's creation gets the same batch."""
        release_id = "trainer-task-" + hashlib.sha256(idempotency_key.encode()).hexdigest()[:32]
        try:
            response = await self._ingest.ReleaseBatch(clickstream_pb2.ReleaseBatchRequest(release_id=release_id),
                                                       timeout=30)
        except grpc.aio.AioRpcError as error:
            if error.code() == grpc.StatusCode.FAILED_PRECONDITION:
                raise FailedPrecondition(f"batch_id: none given, and the collecting batch cannot be released: "
                                         f"{error.details()}") from error
            raise self._ingest_failed(error, "release the batch") from error
        return response.released_batch.batch_id

    async def _check_batch(self, batch_id: str) -> None:
        """A named batch must exist and be released: a collecting one is still changing."""
        try:
            batch = (await self._ingest.GetBatch(clickstream_pb2.GetBatchRequest(batch_id=batch_id), timeout=30)).batch
        except grpc.aio.AioRpcError as error:
            if error.code() == grpc.StatusCode.NOT_FOUND:
                raise NotFound(f"batch_id: ingest has no batch {batch_id!r}") from error
            raise self._ingest_failed(error, "look the batch up") from error
        if batch.status != clickstream_pb2.BATCH_STATUS_RELEASED:
            raise FailedPrecondition(f"batch_id: batch {batch_id} is still collecting sessions; release it first "
                                     "(es batch release), or leave batch_id empty to release it for the task")

    async def CreateTask(self, request: pb.CreateTaskRequest, context: grpc.aio.ServicerContext
                         ) -> pb.CreateTaskResponse:
        self._check_id("idempotency_key", request.idempotency_key)
        self._check_id("fine_tuning_method", request.fine_tuning_method)
        self._check_id("batch_id", request.batch_id, required=False)
        check_meta("metadata", request.metadata, self._limits)
        try:  # the task record stores it as JSON
            json_format.MessageToDict(request.metadata)
        except ValueError as error:  # NaN or an infinity: JSON has neither
            raise InvalidArgument("metadata", f"cannot be stored as JSON: {error}") from error

        if LEGACY_MAX_EVALS_KEY in request.metadata.fields:
            raise InvalidArgument(f"metadata.{LEGACY_MAX_EVALS_KEY}", (
                "is no longer read; set the request's max_trials (es task create --trials N) instead"))
        if not 0 <= request.max_trials <= MAX_TRIALS:
            raise InvalidArgument("max_trials", f"is {request.max_trials}; it lies in 1..{MAX_TRIALS}, or 0 for the "
                                                "plugin's own number of trials")

        existing_id = await self._store.task_of_key(request.idempotency_key)
        if existing_id is not None:
            duplicate = await self._duplicate(existing_id, request)
            if duplicate is not None:
                return duplicate
        # NOT_FOUND / FAILED_PRECONDITION naming the files (discovery imports plugin files: off the event loop).
        await asyncio.to_thread(self._runner.plugin_entry, request.fine_tuning_method)
        if request.batch_id:
            await self._check_batch(request.batch_id)
        batch_id = request.batch_id or await self._release_batch(request.idempotency_key)

        task_id = await self._store.claim_key(request.idempotency_key, existing_id or uuid.uuid4().hex)
        created = now_s()
        task = pb.Task(task_id=task_id, fine_tuning_method=request.fine_tuning_method, batch_id=batch_id,
                       status=pb.TASK_STATUS_PENDING, idempotency_key=request.idempotency_key,
                       created_at=created, updated_at=created, attempt=1, max_trials=request.max_trials)
        task.metadata.CopyFrom(request.metadata)
        task.progress.stage = pb.TASK_STAGE_DATAPREP
        if await self._store.create(TaskRecord(task)) is None:  # a concurrent retry created it first
            return await self._duplicate(task_id, request) or pb.CreateTaskResponse(
                task=(await self._store.get(task_id)).task, duplicate=True)
        log.info("task_created", task_id=task_id, fine_tuning_method=task.fine_tuning_method, batch_id=batch_id)
        self._on_change()
        return pb.CreateTaskResponse(task=task)

    async def _duplicate(self, task_id: str, request: pb.CreateTaskRequest) -> pb.CreateTaskResponse | None:
        """The task a retried CreateTask names, or None when a crash left only its idempotency entry."""
        try:
            task = (await self._store.get(task_id)).task
        except ServiceError:
            return None
        if (task.fine_tuning_method != request.fine_tuning_method
                or (request.max_trials and request.max_trials != task.max_trials)
                or (request.batch_id and request.batch_id != task.batch_id)):
            raise AlreadyExists(f"idempotency_key: task {task_id} was created under this key for plugin "
                                f"{task.fine_tuning_method!r}, batch {task.batch_id!r} and max_trials "
                                f"{task.max_trials}; use a new key for another task")
        return pb.CreateTaskResponse(task=task, duplicate=True)

    async def GetTask(self, request: pb.GetTaskRequest, context: grpc.aio.ServicerContext) -> pb.GetTaskResponse:
        self._check_id("task_id", request.task_id)
        return pb.GetTaskResponse(task=(await self._store.get(request.task_id)).task)

    async def ListTasks(self, request: pb.ListTasksRequest, context: grpc.aio.ServicerContext
                        ) -> pb.ListTasksResponse:
        paging = page_request(request.page_size, request.page_token, "ListTasksResponse")
        if request.status not in pb.TaskStatus.values():
            raise InvalidArgument("status", f"{request.status} is not a TaskStatus")
        tasks = [r.task for r in await self._store.all()
                 if (not request.fine_tuning_method or r.task.fine_tuning_method == request.fine_tuning_method)
                 and (not request.status or r.task.status == request.status)]
        tasks.sort(key=lambda t: (-t.created_at, t.task_id))
        page, next_token = paging.cut(tasks)
        return pb.ListTasksResponse(tasks=page, next_page_token=next_token)

    async def CancelTask(self, request: pb.CancelTaskRequest, context: grpc.aio.ServicerContext
                         ) -> pb.CancelTaskResponse:
        self._check_id("task_id", request.task_id)

        def cancel(record: TaskRecord) -> bool:
            status = record.task.status
            if status == pb.TASK_STATUS_CANCELED:
                return False  # canceling twice is the same cancel
            if status in TERMINAL:
                raise FailedPrecondition(f"task {request.task_id} is {_status_name(status)}; only a pending or "
                                         "processing task can be canceled")
            record.set_status(pb.TASK_STATUS_CANCELED, pb.TASK_STAGE_CANCELED)
            return True

        record = await self._store.mutate(request.task_id, cancel)
        log.info("task_canceled", task_id=request.task_id)
        self._on_change()
        return pb.CancelTaskResponse(task=record.task)

    async def RestartTask(self, request: pb.RestartTaskRequest, context: grpc.aio.ServicerContext
                          ) -> pb.RestartTaskResponse:
        self._check_id("task_id", request.task_id)

        def restart(record: TaskRecord) -> bool:
            task = record.task
            if task.status not in (pb.TASK_STATUS_CANCELED, pb.TASK_STATUS_ERROR):
                raise FailedPrecondition(f"task {request.task_id} is {_status_name(task.status)}; only a canceled "
                                         "or failed task can be restarted" + (
                                             " (a done one: create a new task)" if task.status == pb.TASK_STATUS_DONE
                                             else ""))
            task.attempt += 1
            # No replica holds the new attempt (the canceled one's may never finish it: it would then skip
            # the task as someone else's, and a failed dataset would leave it pending for ever).
            task.error = task.model_version = task.best_model_url = task.experiment_id = task.worker = ""
            record.heartbeat = 0.0
            task.promoted = False
            task.progress.Clear()
            record.set_status(pb.TASK_STATUS_PENDING, pb.TASK_STAGE_DATAPREP)
            return True

        record = await self._store.mutate(request.task_id, restart)
        log.info("task_restarted", task_id=request.task_id, attempt=record.task.attempt)
        self._on_change()
        return pb.RestartTaskResponse(task=record.task)

    async def WatchTask(self, request: pb.WatchTaskRequest, context: grpc.aio.ServicerContext
                        ) -> AsyncIterator[pb.WatchTaskResponse]:
        self._check_id("task_id", request.task_id)
        await self._store.get(request.task_id)  # NOT_FOUND before the stream starts
        async for task in self._store.watch(request.task_id):
            yield pb.WatchTaskResponse(task=task)
