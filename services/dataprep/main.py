"""Starts the dataprep service: artifact store, ingest client, NATS connection, the consumer of
`es.dataprep.requested`, gRPC server; stops them in order."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from services.api.embedding_studio.v1 import clickstream_pb2_grpc, dataprep_pb2, dataprep_pb2_grpc, trainer_pb2_grpc
from services.client.channels import open_aio_channel
from services.common.consumer import DurablePullConsumer
from services.common.logging import get_logger
from services.common.nats import DATAPREP_REQUESTED, NatsConnection
from services.common.server import GrpcHost, Registration
from services.common.settings import Limits, Settings
from services.dataprep.maker import DatasetMaker
from services.dataprep.servicer import DataPrepServicer
from services.dataprep.worker import DURABLE, DataPrepWorker
from services.fine_tuning.data import DatasetStore

DEFAULT_PORT = 50052
SERVICE_NAME = dataprep_pb2.DESCRIPTOR.services_by_name["DataPrepService"].full_name

log = get_logger("dataprep")


async def start(settings: Settings, limits: Limits, host: str, port: int) -> Callable[[], Awaitable[None]]:
    """Brings the service up and returns its shutdown: health, server (in-flight RPCs finish), consumer
    (an unfinished request is redelivered), NATS drain, ingest and trainer channels."""
    store = DatasetStore.open(settings.artifacts_uri)
    ingest_channel = open_aio_channel(settings.ingest_addr, settings, limits)
    nats = NatsConnection(settings.nats_url, name="es-dataprep")
    nats.start()
    maker = DatasetMaker(settings.plugins_path, store, clickstream_pb2_grpc.ClickstreamServiceStub(ingest_channel),
                         settings.ingest_addr, nats)
    trainer_channel = open_aio_channel(settings.trainer_addr, settings, limits)
    worker = DataPrepWorker(maker, trainer_pb2_grpc.TrainerServiceStub(trainer_channel), settings.trainer_addr)
    consumer = DurablePullConsumer(nats, DURABLE, DATAPREP_REQUESTED, worker,
                                   max_deliver=settings.dataprep_max_deliver, on_exhausted=worker.exhausted)
    consumer.start()
    grpc_host = GrpcHost(settings, limits)
    bound = await grpc_host.start(
        [Registration(dataprep_pb2_grpc.add_DataPrepServiceServicer_to_server, DataPrepServicer(maker), SERVICE_NAME)],
        host, port,
    )
    log.info("serving", service=SERVICE_NAME, host=host, port=bound, artifacts=store.uri,
             plugins=str(settings.plugins_path), ingest=settings.ingest_addr, tls=settings.tls_enabled,
             auth=bool(settings.auth_token))

    async def shutdown() -> None:
        log.info("stopping", service=SERVICE_NAME)
        await grpc_host.stop()
        await consumer.stop()
        await nats.close()
        await ingest_channel.close()
        await trainer_channel.close()
        log.info("stopped", service=SERVICE_NAME)

    return shutdown
