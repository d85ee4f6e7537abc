"""Starts the registry service: MLflow client, NATS connection, announcer, experiment referee, gRPC
server; stops them in order."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from services.api.embedding_studio.v1 import clickstream_pb2_grpc, registry_pb2, registry_pb2_grpc
from services.client.channels import open_aio_channel
from services.common.lease_lock import LeaseLock
from services.common.logging import get_logger
from services.common.mlflow_models import apply_mlflow_client_defaults
from services.common.nats import NatsConnection
from services.common.server import GrpcHost, Registration
from services.common.settings import Limits, Settings
from services.registry.announcer import PromotionAnnouncer
from services.registry.experiments import Rule
from services.registry.referee import ExperimentReferee
from services.registry.servicer import RegistryServicer
from services.registry.store import ModelStore

DEFAULT_PORT = 50054
SERVICE_NAME = registry_pb2.DESCRIPTOR.services_by_name["RegistryService"].full_name

log = get_logger("registry")


async def start(settings: Settings, limits: Limits, host: str, port: int) -> Callable[[], Awaitable[None]]:
    """Brings the service up and returns its shutdown: health, server (in-flight RPCs finish),
    announcer, NATS drain."""
    apply_mlflow_client_defaults()
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    rule = Rule(settings.experiment_alpha, settings.experiment_min_sessions, settings.experiment_max_sessions)
    store = ModelStore(settings.mlflow_tracking_uri, promotion=settings.promotion, rule=rule)
    nats = NatsConnection(settings.nats_url, name="es-registry")
    nats.start()
    announcer = PromotionAnnouncer(store, nats)
    announcer.start()
    lock = LeaseLock(nats)
    ingest_channel = open_aio_channel(settings.ingest_addr, settings, limits)
    referee = ExperimentReferee(store, clickstream_pb2_grpc.ClickstreamServiceStub(ingest_channel),
                                settings.ingest_addr, lock, on_promoted=announcer.wake,
                                poll_s=settings.experiment_poll_s)
    referee.start()
    grpc_host = GrpcHost(settings, limits)
    servicer = RegistryServicer(store, limits, on_promoted=announcer.wake, lock=lock)
    bound = await grpc_host.start(
        [Registration(registry_pb2_grpc.add_RegistryServiceServicer_to_server, servicer, SERVICE_NAME)], host, port)
    log.info("serving", service=SERVICE_NAME, host=host, port=bound, mlflow=settings.mlflow_tracking_uri,
             tls=settings.tls_enabled, auth=bool(settings.auth_token), promotion=settings.promotion)

    async def shutdown() -> None:
        log.info("stopping", service=SERVICE_NAME)
        await grpc_host.stop()
        await referee.stop()
        await ingest_channel.close()
        await announcer.stop()
        await nats.close()
        log.info("stopped", service=SERVICE_NAME)

    return shutdown
