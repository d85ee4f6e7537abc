"""Announces promotions on `es.registry.model.promoted` from the state in MLflow: a promotion is
committed there first (alias moved, version tagged) and announced after, and a version is tagged as
announced only once JetStream took it, so a NATS outage or a restart delays an announcement but never
loses it; the Nats-Msg-Id names the plugin and version, so a re-publish is dropped by the stream."""

from __future__ import annotations

import asyncio

from services.common.nats import NatsConnection
from services.common.relay import AnnouncementRelay
from services.registry.store import ModelStore


class PromotionAnnouncer(AnnouncementRelay):
    name = "registry.announcer"

    def __init__(self, store: ModelStore, nats: NatsConnection, idle_poll_s: float = 30.0) -> None:
        # Only this service promotes and it wakes the announcer when it does; the idle poll is for
        # anything left behind (another replica, a crash between the alias and the event).
        super().__init__(nats, idle_poll_s)
        self._store = store

    async def publish_pending(self) -> int:
        """Publishes every promotion not yet announced; returns how many there were."""
        pending = await asyncio.to_thread(self._store.pending_announcements)
        for announcement in pending:
            fresh = await self._nats.publish(announcement.subject, announcement.payload, announcement.msg_id)
            self._log.info("event_published", subject=announcement.subject, msg_id=announcement.msg_id,
                           duplicate=not fresh)
            await asyncio.to_thread(self._store.mark_announced, announcement)
        return len(pending)
