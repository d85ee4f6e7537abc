"""Ingest learns the online experiments from the registry's `es.registry.experiment.started`
announcements (durable consumer "ingest-experiments"; ingest replicas share one database, so one of
them recording an announcement is enough) and from then on accepts the experiment's sessions."""

from __future__ import annotations

import asyncio

from google.protobuf.message import DecodeError
from nats.aio.msg import Msg

from services.api.embedding_studio.v1 import events_pb2
from services.common.consumer import DurablePullConsumer
from services.common.logging import get_logger
from services.common.nats import EXPERIMENT_STARTED, NatsConnection
from services.ingest.store import ClickstreamStore

DURABLE = "ingest-experiments"

log = get_logger("ingest.experiments")


def experiment_consumer(store: ClickstreamStore, nats: NatsConnection) -> DurablePullConsumer:
    async def record(message: Msg) -> None:
        started = events_pb2.ExperimentStarted()
        try:
            started.ParseFromString(message.data)
        except DecodeError:
            log.error("announcement_unreadable", subject=message.subject, bytes=len(message.data))
            return
        if not started.experiment.experiment_id:
            log.error("announcement_without_experiment_id", subject=message.subject)
            return
        new = await asyncio.to_thread(store.record_experiment, started)
        log.info("experiment_recorded", experiment_id=started.experiment.experiment_id,
                 fine_tuning_method=started.experiment.fine_tuning_method, new=new)

    return DurablePullConsumer(nats, DURABLE, EXPERIMENT_STARTED, record)
