"""Starts the trainer service: task bucket, registry and ingest clients, NATS connection, the announcer,
the consumer of `es.dataprep.dataset.*`, gRPC server; stops them in order."""

from __future__ import annotations

import asyncio
import socket
import uuid
from collections.abc import Awaitable, Callable

from services.api.embedding_studio.v1 import clickstream_pb2_grpc, registry_pb2_grpc, trainer_pb2, trainer_pb2_grpc
from services.client.channels import open_aio_channel, open_channel
from services.common.consumer import DurablePullConsumer
from services.common.logging import get_logger
from services.common.mlflow_models import apply_mlflow_client_defaults
from services.common.nats import NatsConnection
from services.common.server import GrpcHost, Registration
from services.common.settings import Limits, Settings
from services.fine_tuning.data import DatasetStore
from services.trainer.announcer import TaskAnnouncer
from services.trainer.runner import TaskRunner
from services.trainer.servicer import TrainerServicer
from services.trainer.tasks import TaskStore
from services.trainer.worker import DURABLE, SUBJECTS, TrainerWorker

DEFAULT_PORT = 50053
SERVICE_NAME = trainer_pb2.DESCRIPTOR.services_by_name["TrainerService"].full_name

log = get_logger("trainer")


async def start(settings: Settings, limits: Limits, host: str, port: int) -> Callable[[], Awaitable[None]]:
    """Brings the service up and returns its shutdown: health, server (in-flight RPCs finish), consumer
    (a running task's run is recorded as killed and its message handed back for another replica),
    announcer, NATS drain, channels."""
    apply_mlflow_client_defaults()
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    worker_id = f"{socket.gethostname()}-{uuid.uuid4().hex[:8]}"
    registry_channel = open_channel(settings.registry_addr, settings, limits)  # used from the training thread
    ingest_channel = open_aio_channel(settings.ingest_addr, settings, limits)
    runner = TaskRunner(settings.plugins_path, DatasetStore.open(settings.artifacts_uri),
                        registry_pb2_grpc.RegistryServiceStub(registry_channel), settings.registry_addr)
    nats = NatsConnection(settings.nats_url, name=f"es-trainer-{worker_id}")
    nats.start()
    store = TaskStore(nats)
    announcer = TaskAnnouncer(store, nats, settings.trainer_lease_s)
    announcer.start()
    worker = TrainerWorker(store, runner, announcer.wake, worker_id, lease_s=settings.trainer_lease_s)
    # A failed task message is retried every 2 s: the worker itself bounds what a task may cost.
    consumer = DurablePullConsumer(nats, DURABLE, SUBJECTS, worker, ack_wait_s=settings.trainer_lease_s,
                                   max_retry_delay_s=2.0)
    consumer.start()
    grpc_host = GrpcHost(settings, limits)
    servicer = TrainerServicer(store, runner, clickstream_pb2_grpc.ClickstreamServiceStub(ingest_channel),
                               settings.ingest_addr, limits, on_change=announcer.wake)
    # Tasks live in the NATS bucket: health says NOT_SERVING until it can be read, so nothing that waits for
    # SERVING (es up, a load balancer, the tests) calls a trainer that would answer UNAVAILABLE.
    bound = await grpc_host.start(
        [Registration(trainer_pb2_grpc.add_TrainerServiceServicer_to_server, servicer, SERVICE_NAME)], host, port,
        serving=False)

    async def serve_when_ready() -> None:
        await store.wait_ready()
        await grpc_host.set_serving()
        log.info("ready", service=SERVICE_NAME, tasks_bucket="open")

    ready = asyncio.create_task(serve_when_ready(), name="trainer-ready")
    log.info("serving", service=SERVICE_NAME, host=host, port=bound, worker=worker_id,
             plugins=str(settings.plugins_path), mlflow=settings.mlflow_tracking_uri,
             artifacts=settings.artifacts_uri, registry=settings.registry_addr, ingest=settings.ingest_addr,
             tls=settings.tls_enabled, auth=bool(settings.auth_token))

    async def shutdown() -> None:
        log.info("stopping", service=SERVICE_NAME)
        ready.cancel()
        await grpc_host.stop()
        await consumer.stop()
        worker.close()
        await announcer.stop()
        await nats.close()
        await ingest_channel.close()
        registry_channel.close()
        log.info("stopped", service=SERVICE_NAME)

    return shutdown
