"""Reads what was published on the EMBEDDING_STUDIO stream, for assertions."""

from __future__ import annotations

import asyncio

import nats
from nats.errors import TimeoutError as NatsTimeout
from nats.js.errors import NotFoundError

from services.common.nats import STREAM


def stream_messages(url: str, subject: str, settle_s: float = 1.0) -> list[bytes]:
    """Every message on `subject` in the stream, read by an ephemeral consumer."""

    async def read() -> list[bytes]:
        client = await nats.connect(url)
        try:
            js = client.jetstream()
            try:
                subscription = await js.pull_subscribe(subject, stream=STREAM)
            except NotFoundError:  # no service has created the stream yet
                return []
            payloads: list[bytes] = []
            while True:
                try:
                    batch = await subscription.fetch(100, timeout=settle_s)
                except (NatsTimeout, TimeoutError):  # nats-py raises either, by version and path
                    return payloads
                for message in batch:
                    payloads.append(message.data)
                    await message.ack()
        finally:
            await client.close()

    return asyncio.run(read())


def wait_for_stream_messages(url: str, subject: str, count: int, timeout: float = 20.0) -> list[bytes]:
    """Polls until at least `count` messages are on `subject` (then reads once more, to catch extras)."""
    import time

    deadline = time.monotonic() + timeout
    while True:
        payloads = stream_messages(url, subject, settle_s=0.3)
        if len(payloads) >= count:
            return stream_messages(url, subject, settle_s=1.5)
        if time.monotonic() > deadline:
            return payloads


def publish(url: str, subject: str, payload: bytes, msg_id: str) -> None:
    """Publishes one message on the stream under `msg_id`, as a service does."""

    async def send() -> None:
        client = await nats.connect(url)
        try:
            await client.jetstream().publish(subject, payload, headers={"Nats-Msg-Id": msg_id}, timeout=10)
        finally:
            await client.close()

    asyncio.run(send())
