"""Relays the store's outbox to JetStream: a state change is committed with its announcement in one
transaction, and this relay publishes the announcement (with its Nats-Msg-Id) once NATS takes it, so a
NATS outage or a restart delays an event but never loses or doubles it."""

from __future__ import annotations

import asyncio
import time

from services.common.nats import NatsConnection
from services.common.relay import AnnouncementRelay
from services.ingest.store import ClickstreamStore


class OutboxRelay(AnnouncementRelay):
    name = "ingest.outbox"

    def __init__(self, store: ClickstreamStore, nats: NatsConnection, idle_poll_s: float = 2.0) -> None:
        super().__init__(nats, idle_poll_s)
        self._store = store

    async def publish_pending(self, limit: int = 100) -> int:
        """Publishes one page of pending messages; returns how many there were (0 when NATS is down)."""
        if not self._nats.connected:
            return 0
        messages = await asyncio.to_thread(self._store.pending_outbox, limit)
        for message in messages:
            fresh = await self._nats.publish(message.subject, message.payload, message.msg_id)
            self._log.info("event_published", subject=message.subject, msg_id=message.msg_id, duplicate=not fresh)
            await asyncio.to_thread(self._store.mark_published, [message.id], int(time.time()))
        return len(messages)
