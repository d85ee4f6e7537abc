"""Announces promotions on `es.registry.model.promoted` from the state in MLflow: a promotion is
committed there first (alias moved, version tagged) and announced after, and a version is tagged as
announced only once JetStream took it, so a NATS outage or a restart delays an announcement but never
loses it; the Nats-Msg-Id names the plugin and version, so a re-publish is dropped by the stream."""

from __future__ import annotations

import asyncio
import contextlib

from services.common.logging import get_logger
from services.common.nats import NatsConnection
from services.registry.store import ModelStore

log = get_logger("registry.announcer")


class PromotionAnnouncer:
    def __init__(self, store: ModelStore, nats: NatsConnection, idle_poll_s: float = 30.0) -> None:
        self._store = store
        self._nats = nats
        # Only this service promotes and it wakes the announcer when it does; the idle poll is for
        # anything left behind (another replica, a crash between the alias and the event).
        self._idle_poll_s = idle_poll_s
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="promotion-announcer")

    def wake(self) -> None:
        """Called after a promotion was committed to MLflow."""
        self._wake.set()

    async def _run(self) -> None:
        retry_s = 0.2
        while True:
            try:
                connected = await self._nats.wait_connected(timeout=self._idle_poll_s)
                if connected:
                    await self.announce_pending()
                retry_s = 0.2
                # Not connected yet: straight back to waiting for the connection.
                wait_s = self._idle_poll_s if connected else 0.0
            except asyncio.CancelledError:
                raise
            except Exception as error:  # noqa: BLE001 - NATS or MLflow is down: try again later
                log.warning("announce_failed", error=str(error) or type(error).__name__, retry_s=retry_s)
                wait_s, retry_s = retry_s, min(retry_s * 2, 5.0)
            if wait_s:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), wait_s)
            self._wake.clear()

    async def announce_pending(self) -> int:
        """Publishes every promotion not yet announced; returns how many there were."""
        pending = await asyncio.to_thread(self._store.pending_announcements)
        for announcement in pending:
            fresh = await self._nats.publish(announcement.subject, announcement.payload, announcement.msg_id)
            log.info("event_published", subject=announcement.subject, msg_id=announcement.msg_id, duplicate=not fresh)
            await asyncio.to_thread(self._store.mark_announced, announcement)
        return len(pending)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
