"""Starts the ingest service: store, NATS connection, outbox relay, gRPC server; stops them in order."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from services.api.embedding_studio.v1 import clickstream_pb2, clickstream_pb2_grpc
from services.common.logging import get_logger
from services.common.nats import NatsConnection
from services.common.server import GrpcHost, Registration
from services.common.settings import Limits, Settings
from services.ingest.experiments import experiment_consumer
from services.ingest.outbox import OutboxRelay
from services.ingest.servicer import ClickstreamServicer
from services.ingest.store import ClickstreamStore

DEFAULT_PORT = 50051
SERVICE_NAME = clickstream_pb2.DESCRIPTOR.services_by_name["ClickstreamService"].full_name

log = get_logger("ingest")


async def start(settings: Settings, limits: Limits, host: str, port: int) -> Callable[[], Awaitable[None]]:
    """Brings the service up and returns its shutdown: health, server (in-flight RPCs finish), relay,
    experiment consumer, NATS drain, store."""
    store = ClickstreamStore(settings.clickstream_db_url)
    nats = NatsConnection(settings.nats_url, name="es-ingest")
    nats.start()
    relay = OutboxRelay(store, nats)
    relay.start()
    experiments = experiment_consumer(store, nats)
    experiments.start()
    grpc_host = GrpcHost(settings, limits)
    servicer = ClickstreamServicer(store, limits, on_outbox_write=relay.wake)
    bound = await grpc_host.start(
        [Registration(clickstream_pb2_grpc.add_ClickstreamServiceServicer_to_server, servicer, SERVICE_NAME)],
        host, port,
    )
    log.info("serving", service=SERVICE_NAME, host=host, port=bound, store=store.dialect, tls=settings.tls_enabled,
             auth=bool(settings.auth_token))

    async def shutdown() -> None:
        log.info("stopping", service=SERVICE_NAME)
        await grpc_host.stop()
        await relay.stop()
        await experiments.stop()
        await nats.close()
        store.close()
        log.info("stopped", service=SERVICE_NAME)

    return shutdown
