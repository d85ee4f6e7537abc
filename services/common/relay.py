"""The "committed first, announced after" half of DESIGN.md's event rule, shared by every service that
announces from its own state (ingest's outbox table, the registry's MLflow tags): a background loop that
publishes whatever is pending once NATS takes it — at start, when woken after a commit, on an idle poll
for anything left behind, and with backoff after a failure — so an outage or a restart delays an event
but never loses it. Subclasses say what is pending and how it is marked as published."""

from __future__ import annotations

import asyncio
import contextlib
from abc import ABC, abstractmethod

from services.common.logging import get_logger
from services.common.nats import NatsConnection


class AnnouncementRelay(ABC):
    name = "relay"

    def __init__(self, nats: NatsConnection, idle_poll_s: float) -> None:
        self._nats = nats
        self._idle_poll_s = idle_poll_s
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._log = get_logger(self.name)

    @abstractmethod
    async def publish_pending(self) -> int:
        """Publishes what is pending (a page of it at least) and marks it published; returns how much it
        found (0 when nothing was pending or NATS is not connected)."""

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=self.name)

    def wake(self) -> None:
        """Called after a commit that left something to announce."""
        self._wake.set()

    async def _run(self) -> None:
        retry_s = 0.2
        while True:
            try:
                connected = await self._nats.wait_connected(timeout=self._idle_poll_s)
                found = await self.publish_pending() if connected else 0
                retry_s = 0.2
                # More may be pending, or the connection is not there yet: straight back to work.
                wait_s = 0.0 if found or not connected else self._idle_poll_s
            except asyncio.CancelledError:
                raise
            except Exception as error:  # noqa: BLE001 - NATS or the state's store is down: try again later
                self._log.warning("publish_failed", error=str(error) or type(error).__name__, retry_s=retry_s)
                wait_s, retry_s = retry_s, min(retry_s * 2, 5.0)
            if wait_s:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), wait_s)
            self._wake.clear()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
