"""Builders of raw sessions and ingest requests for the dataprep tests."""

from __future__ import annotations

import asyncio
import time

import nats
from nats.errors import TimeoutError as NatsTimeout

from services.api.embedding_studio.v1 import clickstream_pb2 as pb
from services.common.nats import STREAM
from services.fine_tuning.data import SessionEvent, SessionWithEvents, ShownResult


def raw_session(session_id: str, query: str, shown: list[str], clicks: dict[str, str] | None = None,
                irrelevant: bool = False, created_at: int = 1_700_000_000) -> SessionWithEvents:
    """`clicks` maps object id -> event type."""
    return SessionWithEvents(
        session_id=session_id, search_query=query,
        search_results=[ShownResult(object_id=o, rank=1.0 - i / 10) for i, o in enumerate(shown)],
        created_at=created_at, is_irrelevant=irrelevant,
        events=[SessionEvent(event_id=f"{session_id}-e{i}", object_id=o, event_type=t)
                for i, (o, t) in enumerate((clicks or {}).items())],
    )


def clickstream(sessions: int = 12, queries: int = 6, items: int = 10) -> list[SessionWithEvents]:
    """`sessions` sessions over `queries` queries, each showing 4 of `items` items and clicking one."""
    return [
        raw_session(f"s{n}", f"query {n % queries}", [f"item-{(n + k) % items}" for k in range(4)],
                    clicks={f"item-{(n + 1) % items}": "click"}, created_at=1_700_000_000 + n)
        for n in range(sessions)
    ]


def session_request(session_id: str, query: str, shown: list[str], clicks: tuple[str, ...] = (),
                    irrelevant: bool = False) -> pb.RegisterSessionRequest:
    return pb.RegisterSessionRequest(
        session_id=session_id, search_query=query, is_irrelevant=irrelevant,
        search_results=[pb.SearchResult(object_id=o, rank=1.0 - i / 10) for i, o in enumerate(shown)],
        events=[pb.Event(event_id=f"{session_id}-{o}", object_id=o) for o in clicks],
    )


def register_batch(ingest, sessions: int = 12, queries: int = 6, items: int = 10, clicked: bool = True,
                   release: str | None = "r1") -> str:
    """Registers sessions like `clickstream()` through ingest and releases them; returns the batch id."""
    for n in range(sessions):
        ingest.RegisterSession(session_request(
            f"s{n}", f"query {n % queries}", [f"item-{(n + k) % items}" for k in range(4)],
            clicks=(f"item-{(n + 1) % items}",) if clicked else ()))
    if release is None:
        return ingest.GetBatch(pb.GetBatchRequest()).batch.batch_id
    return ingest.ReleaseBatch(pb.ReleaseBatchRequest(release_id=release)).released_batch.batch_id


def published(url: str, subject: str, count: int, timeout: float = 20.0) -> list[bytes]:
    """Every message on `subject` once at least `count` are there (or `timeout` passed), read by an
    ephemeral consumer. (nats-py raises the built-in TimeoutError from a fetch whose deadline passed,
    which `tests.nats_reader` does not catch.)"""

    async def read() -> list[bytes]:
        client = await nats.connect(url)
        try:
            deadline = time.monotonic() + timeout
            while True:
                subscription = await client.jetstream().pull_subscribe(subject, stream=STREAM)
                payloads: list[bytes] = []
                while True:
                    try:
                        batch = await subscription.fetch(100, timeout=0.5)
                    except (NatsTimeout, TimeoutError):
                        break
                    payloads.extend(m.data for m in batch)
                await subscription.unsubscribe()
                if len(payloads) >= count or time.monotonic() > deadline:
                    return payloads
                await asyncio.sleep(0.2)
        finally:
            await client.close()

    return asyncio.run(read())
