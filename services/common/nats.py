"""NATS JetStream plumbing shared by every service: the stream of DESIGN.md, a connection that keeps
trying in the background (a service starts and serves while NATS is down), and publishing with a
`Nats-Msg-Id` so that a retried announcement is dropped by the server."""

from __future__ import annotations

import asyncio
import contextlib
from datetime import timedelta

import nats
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.api import KeyValueConfig, RetentionPolicy, StorageType, StreamConfig
from nats.js.errors import BucketNotFoundError, NotFoundError
from nats.js.kv import KeyValue

from services.common.errors import Unavailable
from services.common.logging import get_logger

STREAM = "EMBEDDING_STUDIO"
BATCH_RELEASED = "es.clickstream.batch.released"
DATAPREP_REQUESTED = "es.dataprep.requested"
DATASET_READY = "es.dataprep.dataset.ready"
DATASET_FAILED = "es.dataprep.dataset.failed"
TASK_UPDATED = "es.trainer.task.updated"
MODEL_PROMOTED = "es.registry.model.promoted"
EXPERIMENT_STARTED = "es.registry.experiment.started"

# How long JetStream remembers a Nats-Msg-Id: a re-publish within it (a retry after a crash between
# "published" and "recorded as published") is dropped.
DUPLICATE_WINDOW = timedelta(minutes=10)
# How long a shutdown waits for the connection to drain before closing it outright.
DRAIN_TIMEOUT_S = 10.0


def stream_config() -> StreamConfig:
    return StreamConfig(
        name=STREAM,
        subjects=["es.>"],
        retention=RetentionPolicy.LIMITS,
        storage=StorageType.FILE,
        duplicate_window=DUPLICATE_WINDOW.total_seconds(),
    )


async def open_bucket(js: JetStreamContext, bucket: str) -> KeyValue:
    """The key-value bucket, created on first use: history 1 (only the current value matters) on file
    storage (it survives a NATS restart)."""
    try:
        return await js.key_value(bucket)
    except BucketNotFoundError:
        return await js.create_key_value(KeyValueConfig(bucket=bucket, history=1, storage=StorageType.FILE))


class NatsConnection:
    """One service's NATS connection; `start()` returns at once and connects in the background."""

    def __init__(self, url: str, name: str) -> None:
        self._url = url
        self._name = name
        self._log = get_logger("nats").bind(url=url, client=name)
        self._client: Client | None = None
        self._js: JetStreamContext | None = None
        self._ready = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._connect_forever(), name="nats-connect")

    async def _connect_forever(self) -> None:
        delay = 0.2
        while True:
            try:
                client = await nats.connect(
                    servers=[self._url],
                    name=self._name,
                    connect_timeout=2,
                    allow_reconnect=True,
                    max_reconnect_attempts=-1,
                    reconnect_time_wait=0.5,
                    error_cb=self._on_error,
                    disconnected_cb=self._on_disconnected,
                    reconnected_cb=self._on_reconnected,
                    closed_cb=self._on_closed,
                )
                js = client.jetstream()
                await self._ensure_stream(js)
            except asyncio.CancelledError:
                raise
            except Exception as error:  # noqa: BLE001 - any failure to connect means "try again"
                self._log.warning("nats_connect_failed", error=str(error) or type(error).__name__, retry_s=delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
                continue
            self._client, self._js = client, js
            self._ready.set()
            self._log.info("nats_connected")
            return

    async def _ensure_stream(self, js: JetStreamContext) -> None:
        """Creates the stream, or widens the duplicate window of an existing one that remembers
        message ids for less than DUPLICATE_WINDOW (every exactly-once announcement relies on it)."""
        try:
            info = await js.stream_info(STREAM)
        except NotFoundError:
            await js.add_stream(stream_config())
            return
        window = info.config.duplicate_window or 0
        if window < DUPLICATE_WINDOW.total_seconds():
            info.config.duplicate_window = DUPLICATE_WINDOW.total_seconds()
            await js.update_stream(info.config)
            self._log.warning("stream_duplicate_window_widened", stream=STREAM, was_s=window,
                              now_s=DUPLICATE_WINDOW.total_seconds())

    async def _on_error(self, error: Exception) -> None:
        self._log.warning("nats_error", error=str(error) or type(error).__name__)

    async def _on_disconnected(self) -> None:
        self._log.warning("nats_disconnected")

    async def _on_reconnected(self) -> None:
        self._log.info("nats_reconnected")

    async def _on_closed(self) -> None:
        self._log.info("nats_closed")

    @property
    def connected(self) -> bool:
        return self._client is not None and self._client.is_connected

    @property
    def jetstream(self) -> JetStreamContext:
        """The JetStream context, for consumers and key-value buckets; UNAVAILABLE while disconnected."""
        if self._js is None or not self.connected:
            raise Unavailable(f"NATS at {self._url} is not connected")
        return self._js

    async def wait_connected(self, timeout: float) -> bool:
        try:
            await asyncio.wait_for(self._ready.wait(), timeout)
        except TimeoutError:
            return False
        return True

    async def publish(self, subject: str, payload: bytes, msg_id: str, timeout: float = 5.0) -> bool:
        """Publishes to JetStream and waits for the stream's ack; returns False if it was a duplicate."""
        if self._js is None or not self.connected:
            raise Unavailable(f"NATS at {self._url} is not connected")
        ack = await self._js.publish(subject, payload, timeout=timeout, headers={"Nats-Msg-Id": msg_id})
        return not ack.duplicate

    async def close(self) -> None:
        """Stops connecting; drains (flushes and closes) an open connection."""
        if self._task is not None and not self._task.done():
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._client is not None and not self._client.is_closed:
            try:
                # Bounded: a drain that never completes must not hold the shutdown up.
                await asyncio.wait_for(self._client.drain(), DRAIN_TIMEOUT_S)
            except Exception as error:  # noqa: BLE001 - closing must not fail the shutdown
                self._log.warning("nats_drain_failed", error=str(error) or type(error).__name__)
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(self._client.close(), DRAIN_TIMEOUT_S)
