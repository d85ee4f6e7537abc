"""Relays the store's outbox to JetStream: a state change is committed with its announcement in one
transaction, and this relay publishes the announcement (with its Nats-Msg-Id) once NATS takes it, so a
NATS outage or a restart delays an event but never loses or doubles it."""

from __future__ import annotations

import asyncio
import contextlib
import time

from services.common.logging import get_logger
from services.common.nats import NatsConnection
from services.ingest.store import ClickstreamStore

log = get_logger("ingest.outbox")


class OutboxRelay:
    def __init__(self, store: ClickstreamStore, nats: NatsConnection, idle_poll_s: float = 2.0) -> None:
        self._store = store
        self._nats = nats
        self._idle_poll_s = idle_poll_s
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="outbox-relay")

    def wake(self) -> None:
        """Called after a commit that wrote to the outbox."""
        self._wake.set()

    async def _run(self) -> None:
        retry_s = 0.2
        while True:
            try:
                await self._nats.wait_connected(timeout=self._idle_poll_s)
                pending = await self.publish_pending()
                retry_s = 0.2
                wait_s = 0.0 if pending else self._idle_poll_s
            except asyncio.CancelledError:
                raise
            except Exception as error:  # noqa: BLE001 - NATS or the store is down: try again later
                log.warning("outbox_publish_failed", error=str(error) or type(error).__name__, retry_s=retry_s)
                wait_s, retry_s = retry_s, min(retry_s * 2, 5.0)
            if wait_s:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), wait_s)
            self._wake.clear()

    async def publish_pending(self, limit: int = 100) -> int:
        """Publishes one page of pending messages; returns how many there were (0 when NATS is down)."""
        if not self._nats.connected:
            return 0
        messages = await asyncio.to_thread(self._store.pending_outbox, limit)
        for message in messages:
            fresh = await self._nats.publish(message.subject, message.payload, message.msg_id)
            log.info("event_published", subject=message.subject, msg_id=message.msg_id, duplicate=not fresh)
            await asyncio.to_thread(self._store.mark_published, [message.id], int(time.time()))
        return len(messages)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
