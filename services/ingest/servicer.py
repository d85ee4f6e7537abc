"""`embedding_studio.v1.ClickstreamService`: validates requests, runs them against the store in worker
threads (writes to SQLite in one writer thread), and wakes the outbox relay after a release.
Concurrent registrations, and the messages of an Ingest stream that arrive together, share a commit
(a savepoint each, so each still succeeds or fails on its own) and are acknowledged after it."""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Generic, TypeVar

import grpc
from sqlalchemy.exc import OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from services.api.embedding_studio.v1 import clickstream_pb2 as pb
from services.api.embedding_studio.v1 import clickstream_pb2_grpc
from services.common.checks import check_id
from services.common.errors import InvalidArgument, ServiceError, Unavailable
from services.common.server import Undecodable
from services.common.settings import Limits
from services.ingest.store import Applied, ClickstreamStore, Registered
from services.ingest.validation import Validator

T = TypeVar("T")
R = TypeVar("R")

# An Ingest stream's messages are applied in groups of up to this many, one transaction (and one
# worker-thread hop) per group; larger groups would hold SQLite's single writer lock longer, delaying
# unary calls behind them.
INGEST_GROUP_MESSAGES = 64
# How much of a stream is received ahead of the store (about three groups of 50-event messages).
INGEST_READ_AHEAD_BYTES = 1 << 20
# Concurrent RegisterSession calls that arrive while a registration commits are stored together in
# one transaction of up to this many (a savepoint each), each answered after that commit.
REGISTRATION_GROUP_SESSIONS = 64


class ClickstreamServicer(clickstream_pb2_grpc.ClickstreamServiceServicer):
    def __init__(self, store: ClickstreamStore, limits: Limits, on_outbox_write: Callable[[], None]) -> None:
        self._store = store
        self._limits = limits
        self._validate = Validator(limits)
        self._on_outbox_write = on_outbox_write
        self._registrations = _GroupCommit(self._register_group, REGISTRATION_GROUP_SESSIONS)

    async def _write(self, fn: Callable[..., T], *args: object) -> T:
        return await self._run(fn, *args, executor=self._store.write_executor)

    async def _run(self, fn: Callable[..., T], *args: object, executor: ThreadPoolExecutor | None = None) -> T:
        try:
            return await asyncio.get_running_loop().run_in_executor(executor, fn, *args)
        except OperationalError as error:
            raise Unavailable(f"clickstream database ({self._store.dialect}) is unavailable: {error.orig}") from error
        except PoolTimeout as error:
            raise Unavailable(f"clickstream database ({self._store.dialect}) is busy: {error}") from error

    async def RegisterSession(self, request: pb.RegisterSessionRequest, context: grpc.aio.ServicerContext
                              ) -> pb.RegisterSessionResponse:
        now = int(time.time())
        self._validate.session(request, now)
        registered = await self._registrations.submit(request)
        return pb.RegisterSessionResponse(session=registered.session, duplicate=registered.duplicate)

    async def _register_group(self, requests: list[pb.RegisterSessionRequest]) -> list[Registered | ServiceError]:
        return await self._write(self._store.register_sessions, requests, int(time.time()))

    async def PushEvents(self, request: pb.PushEventsRequest, context: grpc.aio.ServicerContext
                         ) -> pb.PushEventsResponse:
        now = int(time.time())
        self._validate.session_id(request.session_id)
        self._validate.events(request.events, now, shown=None)
        accepted, duplicate = await self._write(self._store.push_events, request.session_id, request.events, now)
        return pb.PushEventsResponse(accepted=accepted, duplicate=duplicate)

    async def MarkSessionIrrelevant(self, request: pb.MarkSessionIrrelevantRequest,
                                    context: grpc.aio.ServicerContext) -> pb.MarkSessionIrrelevantResponse:
        self._validate.session_id(request.session_id)
        session = await self._write(self._store.mark_irrelevant, request.session_id)
        return pb.MarkSessionIrrelevantResponse(session=session)

    async def GetSession(self, request: pb.GetSessionRequest, context: grpc.aio.ServicerContext
                         ) -> pb.GetSessionResponse:
        self._validate.session_id(request.session_id)
        return pb.GetSessionResponse(session=await self._run(self._store.get_session, request.session_id))

    async def GetBatch(self, request: pb.GetBatchRequest, context: grpc.aio.ServicerContext) -> pb.GetBatchResponse:
        return pb.GetBatchResponse(batch=await self._run(self._store.get_batch, request.batch_id))

    async def ReleaseBatch(self, request: pb.ReleaseBatchRequest, context: grpc.aio.ServicerContext
                           ) -> pb.ReleaseBatchResponse:
        check_id("release_id", request.release_id, self._limits.max_id_length,
                 empty_reason="must not be empty (it makes the release idempotent)")
        result = await self._write(self._store.release_batch, request.release_id, int(time.time()))
        if not result.duplicate:
            self._on_outbox_write()
        return pb.ReleaseBatchResponse(released_batch=result.released, next_batch=result.next,
                                       duplicate=result.duplicate)

    async def GetExperimentOutcome(self, request: pb.GetExperimentOutcomeRequest,
                                   context: grpc.aio.ServicerContext) -> pb.GetExperimentOutcomeResponse:
        self._validate.experiment_id(request.experiment_id)
        outcome = await self._run(self._store.experiment_outcome, request.experiment_id)
        return pb.GetExperimentOutcomeResponse(outcome=outcome)

    async def StreamBatchSessions(self, request: pb.StreamBatchSessionsRequest, context: grpc.aio.ServicerContext
                                  ) -> AsyncIterator[pb.StreamBatchSessionsResponse]:
        if not request.batch_id:
            raise InvalidArgument("batch_id", "must not be empty")
        if request.after_number < 0:
            raise InvalidArgument("after_number", "must not be negative")
        pages = self._store.iter_batch_sessions(request.batch_id, request.after_number)
        sentinel = object()
        while True:
            page = await self._run(next, pages, sentinel)
            if page is sentinel:
                return
            for session in page:
                yield pb.StreamBatchSessionsResponse(session=session)

    async def Ingest(self, request_iterator: AsyncIterator[pb.IngestRequest], context: grpc.aio.ServicerContext
                     ) -> pb.IngestResponse:
        summary = pb.IngestResponse()
        read_ahead = _ReadAhead(request_iterator, INGEST_READ_AHEAD_BYTES)
        index = 0
        try:
            while group := await read_ahead.take(INGEST_GROUP_MESSAGES):
                outcomes = await self._apply_group(group)
                for outcome in outcomes:
                    summary.messages += 1
                    if isinstance(outcome, ServiceError):
                        summary.rejected += 1
                        if len(summary.errors) < self._limits.max_ingest_errors:
                            summary.errors.add(index=index, code=outcome.code.value[0], reason=outcome.message)
                    else:
                        summary.sessions_accepted += outcome.sessions_accepted
                        summary.sessions_duplicate += outcome.sessions_duplicate
                        summary.events_accepted += outcome.events_accepted
                        summary.events_duplicate += outcome.events_duplicate
                        summary.irrelevant_marks += outcome.irrelevant_marks
                    index += 1
        finally:
            await read_ahead.close()
        return summary

    async def _apply_group(self, group: list[pb.IngestRequest]) -> list[Applied | ServiceError]:
        """Validates the messages, applies the valid ones in one store transaction (a savepoint each),
        and returns every message's outcome in stream order."""
        now = int(time.time())
        outcomes: list[Applied | ServiceError | None] = []
        valid = []
        for message in group:
            try:
                self._check(message, now)
            except ServiceError as error:
                outcomes.append(error)
                continue
            outcomes.append(None)
            valid.append(message)
        if valid:
            try:
                applied = iter(await self._write(self._store.apply_ingest, valid, now))
            except Unavailable as error:  # the shared commit failed: none of the group is stored
                applied = iter([error] * len(valid))
            outcomes = [next(applied) if outcome is None else outcome for outcome in outcomes]
        return outcomes

    def _check(self, message: pb.IngestRequest | Undecodable, now: int) -> None:
        if isinstance(message, Undecodable):
            raise message.error
        kind = message.WhichOneof("item")
        if kind == "session":
            self._validate.session(message.session, now)
        elif kind == "events":
            self._validate.session_id(message.events.session_id)
            self._validate.events(message.events.events, now, shown=None)
        elif kind == "irrelevant":
            self._validate.session_id(message.irrelevant.session_id)
        else:
            raise InvalidArgument("item", "an IngestRequest must hold a session, events or an irrelevant mark")


class _ReadAhead:
    """Receives an Ingest stream ahead of the store, up to a byte budget: the messages that arrive while
    one group is being committed make up the next group, so a busy stream shares its commits and a
    slow one is applied message by message as it arrives."""

    def __init__(self, source: AsyncIterator[pb.IngestRequest], budget_bytes: int) -> None:
        self._buffer: deque[tuple[pb.IngestRequest, int]] = deque()
        self._bytes = 0
        self._budget = budget_bytes
        self._finished = False
        self._changed = asyncio.Condition()
        self._task = asyncio.create_task(self._fill(source))

    async def _fill(self, source: AsyncIterator[pb.IngestRequest]) -> None:
        try:
            async for message in source:
                size = message.ByteSize()
                async with self._changed:
                    # One message over the budget still gets in alone (the gRPC limit caps its size).
                    await self._changed.wait_for(lambda size=size: not self._buffer
                                                 or self._bytes + size <= self._budget)
                    self._buffer.append((message, size))
                    self._bytes += size
                    self._changed.notify_all()
        finally:
            async with self._changed:
                self._finished = True
                self._changed.notify_all()

    async def take(self, most: int) -> list[pb.IngestRequest]:
        """The next messages (up to `most`) once there are any; empty at the end of the stream."""
        async with self._changed:
            await self._changed.wait_for(lambda: self._buffer or self._finished)
            group = []
            while self._buffer and len(group) < most:
                message, size = self._buffer.popleft()
                self._bytes -= size
                group.append(message)
            self._changed.notify_all()
        if not group:
            await self._task  # the stream ended: raises what broke it, if anything did
        return group

    async def close(self) -> None:
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)


class _GroupCommit(Generic[T, R]):
    """Runs the requests that queue up while a group is being written as the next group: an idle server
    writes each request on its own at once, a busy one shares one commit (and one thread hop) among many.
    Each caller gets its own outcome; an error that fails the whole group (the commit) fails each caller."""

    def __init__(self, write: Callable[[list[T]], Awaitable[list[R | ServiceError]]], most: int) -> None:
        self._write = write
        self._most = most
        self._queue: deque[tuple[T, asyncio.Future[R]]] = deque()
        self._drainer: asyncio.Task[None] | None = None

    async def submit(self, request: T) -> R:
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._queue.append((request, future))
        if self._drainer is None or self._drainer.done():
            self._drainer = asyncio.create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        group: list[tuple[T, asyncio.Future[R]]] = []
        try:
            while self._queue:
                group = [self._queue.popleft() for _ in range(min(self._most, len(self._queue)))]
                outcomes: Sequence[object]
                try:
                    outcomes = await self._write([request for request, _ in group])
                except Exception as error:  # noqa: BLE001 - handed to every caller of the group
                    outcomes = [error] * len(group)
                for (_, future), outcome in zip(group, outcomes, strict=True):
                    if future.done():  # the caller went away; its request was written all the same
                        continue
                    if isinstance(outcome, BaseException):
                        future.set_exception(outcome)
                    else:
                        future.set_result(outcome)
        finally:  # only when cancelled (the loop is closing) can callers be left waiting
            for _, future in [*group, *self._queue]:
                future.cancel()
