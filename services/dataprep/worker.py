"""The handler of `es.dataprep.requested` (`DataPrepRequested`): make the dataset, announce it ready or
failed for the task. Returning acks the request; raising makes the consumer redeliver it later, with a
growing wait, up to ES_DATAPREP_MAX_DELIVER deliveries; after the last, `exhausted` fails the dataset
with the last error. Before each delivery is worked on, the trainer (TrainerService.GetTask at
ES_TRAINER_ADDR) is asked whether the task still wants it: the request of a task the trainer does not
have, or that is over (done, failed, canceled) or on another attempt, is dropped; when the trainer
cannot answer, the request goes ahead."""

from __future__ import annotations

import grpc
from google.protobuf.message import DecodeError
from nats.aio.msg import Msg

from services.api.embedding_studio.v1 import dataprep_pb2, events_pb2, trainer_pb2, trainer_pb2_grpc
from services.common.errors import ServiceError, Unavailable
from services.common.logging import get_logger
from services.dataprep.maker import DatasetMaker

log = get_logger("dataprep.worker")

DURABLE = "dataprep"
# How long the "does the task still want it?" question may take; unanswered, the request goes ahead.
TASK_CHECK_TIMEOUT_S = 5.0
_WANTING = (trainer_pb2.TASK_STATUS_PENDING, trainer_pb2.TASK_STATUS_PROCESSING)


def _parse(message: Msg) -> events_pb2.DataPrepRequested | None:
    request = events_pb2.DataPrepRequested()
    try:
        request.ParseFromString(message.data)
    except DecodeError:
        # Redelivering a payload that cannot be read would never succeed: drop it, loudly.
        log.error("request_unreadable", subject=message.subject, bytes=len(message.data))
        return None
    return request


def _failed(request: events_pb2.DataPrepRequested, reason: str) -> dataprep_pb2.Dataset:
    return dataprep_pb2.Dataset(fine_tuning_method=request.fine_tuning_method, batch_id=request.batch_id,
                                status=dataprep_pb2.DATASET_STATUS_FAILED, error=reason)


class DataPrepWorker:
    def __init__(self, maker: DatasetMaker, trainer: trainer_pb2_grpc.TrainerServiceStub, trainer_addr: str) -> None:
        self._maker = maker
        self._trainer = trainer
        self._trainer_addr = trainer_addr

    async def __call__(self, message: Msg) -> None:
        request = _parse(message)
        if request is None:
            return
        delivered = message.metadata.num_delivered
        log.info("dataset_requested", task_id=request.task_id, fine_tuning_method=request.fine_tuning_method,
                 batch_id=request.batch_id, attempt=request.attempt, delivered=delivered)
        if unwanted := await self._unwanted(request):
            log.info("request_dropped", task_id=request.task_id, batch_id=request.batch_id, reason=unwanted,
                     delivered=delivered)
            return
        try:
            dataset = await self._maker.make(request.fine_tuning_method, request.batch_id)
        except Unavailable:
            raise  # ingest, NATS or the artifact store is down: the redelivered request finishes the job
        except ServiceError as error:
            dataset = _failed(request, error.message)
        # Raises when NATS does not take it, so the request is redelivered and announced again.
        await self._maker.announce(dataset, request.task_id, request.attempt)

    async def _unwanted(self, request: events_pb2.DataPrepRequested) -> str | None:
        """Why the task no longer wants this request, or None (it does, or the trainer cannot say)."""
        if not request.task_id:
            return None
        try:
            task = (await self._trainer.GetTask(trainer_pb2.GetTaskRequest(task_id=request.task_id),
                                                timeout=TASK_CHECK_TIMEOUT_S)).task
        except grpc.aio.AioRpcError as error:
            if error.code() in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.INVALID_ARGUMENT):
                return f"the trainer has no task {request.task_id!r}"
            log.warning("task_check_failed", task_id=request.task_id, trainer=self._trainer_addr,
                        error=f"{error.code().name}: {error.details()}")
            return None
        if task.status not in _WANTING:
            return f"task {request.task_id} is {trainer_pb2.TaskStatus.Name(task.status)}"
        if request.attempt and task.attempt != request.attempt:
            return f"task {request.task_id} is on attempt {task.attempt}, the request was for attempt {request.attempt}"
        return None

    async def exhausted(self, message: Msg, error: Exception) -> None:
        """The request failed on its last delivery: its dataset fails with the last error, announced."""
        request = _parse(message)
        if request is None:
            return
        reason = (f"gave up after {message.metadata.num_delivered} tries (ES_DATAPREP_MAX_DELIVER): "
                  f"{str(error) or type(error).__name__}")
        await self._maker.announce(_failed(request, reason), request.task_id, request.attempt)
