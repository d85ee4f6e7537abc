"""`embedding_studio.v1.ClickstreamService`: validates requests, runs them against the store in worker
threads, and wakes the outbox relay after a release."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from typing import TypeVar

import grpc
from sqlalchemy.exc import OperationalError

from services.api.embedding_studio.v1 import clickstream_pb2 as pb
from services.api.embedding_studio.v1 import clickstream_pb2_grpc
from services.common.errors import InvalidArgument, ServiceError, Unavailable
from services.common.settings import Limits
from services.ingest.store import ClickstreamStore
from services.ingest.validation import Validator

T = TypeVar("T")


class ClickstreamServicer(clickstream_pb2_grpc.ClickstreamServiceServicer):
    def __init__(self, store: ClickstreamStore, limits: Limits, on_outbox_write: Callable[[], None]) -> None:
        self._store = store
        self._limits = limits
        self._validate = Validator(limits)
        self._on_outbox_write = on_outbox_write

    async def _run(self, fn: Callable[..., T], *args: object) -> T:
        try:
            return await asyncio.to_thread(fn, *args)
        except OperationalError as error:
            raise Unavailable(f"clickstream database ({self._store.dialect}) is unavailable: {error.orig}") from error

    async def RegisterSession(self, request: pb.RegisterSessionRequest, context: grpc.aio.ServicerContext
                              ) -> pb.RegisterSessionResponse:
        now = int(time.time())
        self._validate.session(request, now)
        registered = await self._run(self._store.register_session, request, now)
        return pb.RegisterSessionResponse(session=registered.session, duplicate=registered.duplicate)

    async def PushEvents(self, request: pb.PushEventsRequest, context: grpc.aio.ServicerContext
                         ) -> pb.PushEventsResponse:
        now = int(time.time())
        self._validate.session_id(request.session_id)
        self._validate.events(request.events, now, shown=None)
        accepted, duplicate = await self._run(self._store.push_events, request.session_id, request.events, now)
        return pb.PushEventsResponse(accepted=accepted, duplicate=duplicate)

    async def MarkSessionIrrelevant(self, request: pb.MarkSessionIrrelevantRequest,
                                    context: grpc.aio.ServicerContext) -> pb.MarkSessionIrrelevantResponse:
        self._validate.session_id(request.session_id)
        session = await self._run(self._store.mark_irrelevant, request.session_id)
        return pb.MarkSessionIrrelevantResponse(session=session)

    async def GetSession(self, request: pb.GetSessionRequest, context: grpc.aio.ServicerContext
                         ) -> pb.GetSessionResponse:
        self._validate.session_id(request.session_id)
        return pb.GetSessionResponse(session=await self._run(self._store.get_session, request.session_id))

    async def GetBatch(self, request: pb.GetBatchRequest, context: grpc.aio.ServicerContext) -> pb.GetBatchResponse:
        return pb.GetBatchResponse(batch=await self._run(self._store.get_batch, request.batch_id))

    async def ReleaseBatch(self, request: pb.ReleaseBatchRequest, context: grpc.aio.ServicerContext
                           ) -> pb.ReleaseBatchResponse:
        if not request.release_id.strip():
            raise InvalidArgument("release_id", "must not be empty (it makes the release idempotent)")
        if len(request.release_id) > self._limits.max_id_length:
            raise InvalidArgument("release_id", f"is {len(request.release_id)} characters long; "
                                                f"ES_MAX_ID_LENGTH is {self._limits.max_id_length}")
        result = await self._run(self._store.release_batch, request.release_id, int(time.time()))
        if not result.duplicate:
            self._on_outbox_write()
        return pb.ReleaseBatchResponse(released_batch=result.released, next_batch=result.next,
                                       duplicate=result.duplicate)

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
        index = -1
        async for message in request_iterator:
            index += 1
            summary.messages += 1
            try:
                await self._apply(message, summary)
            except ServiceError as error:
                summary.rejected += 1
                if len(summary.errors) < self._limits.max_ingest_errors:
                    summary.errors.add(index=index, code=error.code.name, reason=error.message)
        return summary

    async def _apply(self, message: pb.IngestRequest, summary: pb.IngestResponse) -> None:
        now = int(time.time())
        kind = message.WhichOneof("item")
        if kind == "session":
            self._validate.session(message.session, now)
            registered = await self._run(self._store.register_session, message.session, now)
            if registered.duplicate:
                summary.sessions_duplicate += 1
            else:
                summary.sessions_accepted += 1
            summary.events_accepted += registered.events_accepted
            summary.events_duplicate += len(message.session.events) - registered.events_accepted
        elif kind == "events":
            self._validate.session_id(message.events.session_id)
            self._validate.events(message.events.events, now, shown=None)
            accepted, duplicate = await self._run(self._store.push_events, message.events.session_id,
                                                  message.events.events, now)
            summary.events_accepted += accepted
            summary.events_duplicate += duplicate
        elif kind == "irrelevant":
            self._validate.session_id(message.irrelevant.session_id)
            await self._run(self._store.mark_irrelevant, message.irrelevant.session_id)
            summary.irrelevant_marks += 1
        else:
            raise InvalidArgument("item", "an IngestRequest must hold a session, events or an irrelevant mark")
