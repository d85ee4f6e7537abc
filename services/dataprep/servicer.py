"""`embedding_studio.v1.DataPrepService`: make a dataset (synchronously: the response carries the ready
or failed dataset) and look one up. Both also serve the trainer's and the operator's retries."""

from __future__ import annotations

import grpc

from services.api.embedding_studio.v1 import dataprep_pb2 as pb
from services.api.embedding_studio.v1 import dataprep_pb2_grpc
from services.common.logging import get_logger
from services.dataprep.maker import DatasetMaker

log = get_logger("dataprep")


class DataPrepServicer(dataprep_pb2_grpc.DataPrepServiceServicer):
    def __init__(self, maker: DatasetMaker) -> None:
        self._maker = maker

    async def PrepareDataset(self, request: pb.PrepareDatasetRequest, context: grpc.aio.ServicerContext
                             ) -> pb.PrepareDatasetResponse:
        dataset = await self._maker.make(request.fine_tuning_method, request.batch_id)
        try:
            await self._maker.announce(dataset, request.task_id)
        except Exception as error:  # noqa: BLE001 - the caller gets the dataset in the response either way
            log.warning("dataset_announce_failed", dataset_id=dataset.dataset_id,
                        error=str(error) or type(error).__name__)
        return pb.PrepareDatasetResponse(dataset=dataset)

    async def GetDataset(self, request: pb.GetDatasetRequest, context: grpc.aio.ServicerContext
                         ) -> pb.GetDatasetResponse:
        dataset = await self._maker.get(request.fine_tuning_method, request.batch_id, request.plugin_version)
        return pb.GetDatasetResponse(dataset=dataset)
