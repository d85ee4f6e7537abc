"""The shared stream as the services find it: created when missing, and an existing one whose duplicate
window is shorter than the announcements rely on is widened (a same-id re-publish inside the window is
dropped; outside it, it would be a second announcement)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import nats
from nats.js.api import StreamConfig

from services.common.nats import DUPLICATE_WINDOW, STREAM, NatsConnection
from tests.servers import NatsServer


def test_a_stream_with_a_short_duplicate_window_is_widened_and_a_missing_one_created(tmp_path: Path) -> None:
    server = NatsServer(tmp_path / "nats").start()

    async def scenario() -> list[float]:
        client = await nats.connect(server.url)
        js = client.jetstream()
        windows = []
        try:
            for existing in (True, False):
                if existing:  # made by someone else, remembering ids for a minute only
                    await js.add_stream(StreamConfig(name=STREAM, subjects=["es.>"], duplicate_window=60))
                else:
                    await js.delete_stream(STREAM)
                connection = NatsConnection(server.url, name="test")
                connection.start()
                assert await connection.wait_connected(10)
                await connection.close()
                windows.append((await js.stream_info(STREAM)).config.duplicate_window)
        finally:
            await client.close()
        return windows

    try:
        assert asyncio.run(scenario()) == [DUPLICATE_WINDOW.total_seconds()] * 2
    finally:
        server.stop()
