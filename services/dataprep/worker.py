"""The handler of `es.dataprep.requested` (`DataprepRequested`): make the dataset, announce it ready or
failed for the task. Returning acks the request; raising makes the consumer redeliver it later."""

from __future__ import annotations

from google.protobuf.message import DecodeError
from nats.aio.msg import Msg

from services.api.embedding_studio.v1 import dataprep_pb2, events_pb2
from services.common.errors import ServiceError, Unavailable
from services.common.logging import get_logger
from services.dataprep.maker import DatasetMaker

log = get_logger("dataprep.worker")

DURABLE = "dataprep"


class DataprepWorker:
    def __init__(self, maker: DatasetMaker) -> None:
        self._maker = maker

    async def __call__(self, message: Msg) -> None:
        request = events_pb2.DataprepRequested()
        try:
            request.ParseFromString(message.data)
        except DecodeError:
            # Redelivering a payload that cannot be read would never succeed: drop it, loudly.
            log.error("request_unreadable", subject=message.subject, bytes=len(message.data))
            return
        log.info("dataset_requested", task_id=request.task_id, fine_tuning_method=request.fine_tuning_method,
                 batch_id=request.batch_id, attempt=request.attempt, delivered=message.metadata.num_delivered)
        try:
            dataset = await self._maker.make(request.fine_tuning_method, request.batch_id)
        except Unavailable:
            raise  # ingest, NATS or the artifact store is down: the redelivered request finishes the job
        except ServiceError as error:
            dataset = dataprep_pb2.Dataset(fine_tuning_method=request.fine_tuning_method, batch_id=request.batch_id,
                                           status=dataprep_pb2.DATASET_STATUS_FAILED, error=error.message)
        # Raises when NATS does not take it, so the request is redelivered and announced again.
        await self._maker.announce(dataset, request.task_id, request.attempt)
