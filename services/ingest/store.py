"""The clickstream store: sessions, events, batches and the event outbox, in SQLite (default) or
PostgreSQL through one SQLAlchemy Core code path.

Acknowledged means committed: SQLite runs in WAL mode with synchronous=NORMAL (a commit survives a
killed process) and takes the write lock at BEGIN (BEGIN IMMEDIATE), so writers never deadlock on a
lock upgrade; PostgreSQL runs with synchronous_commit on. Registrations and releases serialize on one
row (`ingest_state`), which is what keeps session numbers gap-free and a release atomic under
concurrent requests on either back-end.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from google.protobuf import json_format, struct_pb2
from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Connection,
    Engine,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    create_engine,
    event,
    func,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import make_url
from sqlalchemy.exc import IntegrityError, OperationalError

from services.api.embedding_studio.v1 import clickstream_pb2 as pb
from services.api.embedding_studio.v1 import events_pb2
from services.common import nats as subjects
from services.common.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound, Unavailable

SCHEMA_VERSION = 1
COLLECTING, RELEASED = "collecting", "released"
_BATCH_ID = re.compile(r"^batch-(\d+)$")

metadata = MetaData()
_id = BigInteger().with_variant(Integer(), "sqlite")  # SQLite autoincrements only INTEGER PRIMARY KEY

ingest_state = Table(
    "ingest_state", metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("schema_version", Integer, nullable=False),
    # Names this store in announcement ids, so that two stores (a reset one, a test one) sharing a
    # NATS server never have their announcements dropped as each other's duplicates.
    Column("store_id", String(64), nullable=False),
    Column("collecting_batch", Integer, nullable=False),
)
batches = Table(
    "batches", metadata,
    Column("number", Integer, primary_key=True, autoincrement=False),
    Column("status", String(16), nullable=False),
    Column("session_count", Integer, nullable=False),
    Column("release_id", String(1024), unique=True),
    Column("created_at", BigInteger, nullable=False),
    Column("released_at", BigInteger),
)
sessions = Table(
    "sessions", metadata,
    Column("session_id", String(1024), primary_key=True),
    Column("batch_number", Integer, ForeignKey("batches.number"), nullable=False),
    Column("session_number", Integer, nullable=False),
    Column("search_query", Text, nullable=False),
    Column("search_results", Text, nullable=False),  # JSON list of {object_id, rank, meta}
    Column("search_meta", Text),  # JSON object or NULL
    Column("user_id", String(1024), nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Column("is_irrelevant", Boolean, nullable=False),
    Column("fingerprint", String(64), nullable=False),
    UniqueConstraint("batch_number", "session_number"),
)
events = Table(
    "events", metadata,
    Column("id", _id, primary_key=True, autoincrement=True),  # arrival order
    Column("session_id", String(1024), ForeignKey("sessions.session_id"), nullable=False),
    Column("event_id", String(1024), nullable=False),
    Column("object_id", String(1024), nullable=False),
    Column("event_type", String(256), nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Column("meta", Text),
    UniqueConstraint("session_id", "event_id"),
)
outbox = Table(
    "outbox", metadata,
    Column("id", _id, primary_key=True, autoincrement=True),
    Column("subject", String(256), nullable=False),
    Column("msg_id", String(1024), nullable=False, unique=True),
    Column("payload", LargeBinary, nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Column("published_at", BigInteger),
)
Index("outbox_pending", outbox.c.published_at, outbox.c.id)


def batch_id_of(number: int) -> str:
    return f"batch-{number}"


def _batch_number(batch_id: str) -> int:
    match = _BATCH_ID.match(batch_id)
    if match is None:
        raise NotFound(f"batch '{batch_id}' does not exist (batch ids look like 'batch-1')")
    return int(match.group(1))


def _struct_json(value: struct_pb2.Struct) -> str | None:
    return json.dumps(json_format.MessageToDict(value), sort_keys=True, separators=(",", ":")) if value.fields else None


def _fill_struct(target: struct_pb2.Struct, text: str | None) -> None:
    if text:
        target.update(json.loads(text))


def _fingerprint(request: pb.RegisterSessionRequest) -> str:
    """The content a retry must repeat: everything but the events and the irrelevant mark, which are
    applied idempotently on their own."""
    content = {
        "q": request.search_query,
        "r": [[r.object_id, r.rank, json_format.MessageToDict(r.meta)] for r in request.search_results],
        "m": json_format.MessageToDict(request.search_meta),
        "u": request.user_id,
        "t": request.created_at,
    }
    return hashlib.sha256(json.dumps(content, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def _batch(row: Any) -> pb.Batch:
    return pb.Batch(
        batch_id=batch_id_of(row.number),
        number=row.number,
        status=pb.BATCH_STATUS_COLLECTING if row.status == COLLECTING else pb.BATCH_STATUS_RELEASED,
        session_count=row.session_count,
        release_id=row.release_id or "",
        created_at=row.created_at,
        released_at=row.released_at or 0,
    )


@dataclass(frozen=True)
class Registered:
    session: pb.Session
    duplicate: bool  # the session was stored before (an idempotent retry)
    events_accepted: int  # events of the request stored by this call


@dataclass(frozen=True)
class ReleaseResult:
    released: pb.Batch
    next: pb.Batch
    duplicate: bool


@dataclass(frozen=True)
class OutboxMessage:
    id: int
    subject: str
    msg_id: str
    payload: bytes


class ClickstreamStore:
    """Blocking store API; the gRPC servicer calls it from worker threads."""

    def __init__(self, url: str, shown_cache_size: int = 200_000) -> None:
        self.url = url
        parsed = make_url(url)
        self.dialect = parsed.get_backend_name()
        if self.dialect == "sqlite":
            if parsed.database and parsed.database != ":memory:":
                Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
            self._writer = _sqlite_engine(url, begin="BEGIN IMMEDIATE")
            self._reader = _sqlite_engine(url, begin="BEGIN")
            self._insert = sqlite.insert
        elif self.dialect == "postgresql":
            if parsed.drivername == "postgresql":
                parsed = parsed.set(drivername="postgresql+psycopg")
            self._writer = create_engine(
                parsed, pool_size=10, max_overflow=10, pool_pre_ping=True,
                connect_args={"options": "-c synchronous_commit=on"},
            )
            self._reader = self._writer
            self._insert = postgresql.insert
        else:
            raise ValueError(f"ES_CLICKSTREAM_DB_URL: unsupported database '{self.dialect}' (use sqlite or postgresql)")
        # Sessions never change their results, so the shown object ids of a session can be cached.
        self._shown: OrderedDict[str, frozenset[str]] = OrderedDict()
        self._shown_lock = threading.Lock()
        self._shown_cache_size = shown_cache_size
        self._migrate()

    # --- schema -------------------------------------------------------------------------------------

    def _migrate(self) -> None:
        try:
            with self._writer.begin() as conn:
                metadata.create_all(conn)
                state = conn.execute(select(ingest_state)).first()
                if state is None:
                    now = _now()
                    conn.execute(batches.insert().values(number=1, status=COLLECTING, session_count=0,
                                                         created_at=now))
                    conn.execute(ingest_state.insert().values(id=1, schema_version=SCHEMA_VERSION,
                                                              store_id=uuid.uuid4().hex, collecting_batch=1))
                elif state.schema_version > SCHEMA_VERSION:
                    raise RuntimeError(
                        f"the clickstream database at {self.url} has schema version {state.schema_version}; "
                        f"this build knows up to {SCHEMA_VERSION}: upgrade Embedding Studio"
                    )
        except OperationalError as error:
            raise Unavailable(f"clickstream database {self.url} is unavailable: {error.orig}") from error

    def close(self) -> None:
        self._writer.dispose()
        self._reader.dispose()

    # --- sessions -----------------------------------------------------------------------------------

    def register_session(self, request: pb.RegisterSessionRequest, now: int) -> Registered:
        """Stores a validated session (and its events) in the collecting batch."""
        fingerprint = _fingerprint(request)
        for _ in range(3):
            try:
                with self._write() as conn:
                    existing = conn.execute(
                        select(sessions.c.fingerprint).where(sessions.c.session_id == request.session_id)
                    ).first()
                    if existing is None:
                        state = conn.execute(select(ingest_state).where(ingest_state.c.id == 1).with_for_update()).one()
                        # Re-read under the lock: a concurrent registration of this id may have committed.
                        existing = conn.execute(
                            select(sessions.c.fingerprint).where(sessions.c.session_id == request.session_id)
                        ).first()
                    if existing is not None:
                        if existing.fingerprint != fingerprint:
                            raise AlreadyExists(
                                f"session '{request.session_id}' is already stored with different content"
                            )
                        if request.is_irrelevant:
                            self._mark(conn, request.session_id)
                        accepted = self._insert_events(conn, request.session_id, request.events, now)
                        return Registered(self._load_session(conn, request.session_id), True, accepted)
                    number = conn.execute(
                        update(batches).where(batches.c.number == state.collecting_batch)
                        .values(session_count=batches.c.session_count + 1).returning(batches.c.session_count)
                    ).scalar_one()
                    conn.execute(sessions.insert().values(
                        session_id=request.session_id,
                        batch_number=state.collecting_batch,
                        session_number=number,
                        search_query=request.search_query,
                        search_results=json.dumps([
                            {"object_id": r.object_id, "rank": r.rank, "meta": json_format.MessageToDict(r.meta)}
                            for r in request.search_results
                        ], separators=(",", ":")),
                        search_meta=_struct_json(request.search_meta),
                        user_id=request.user_id,
                        created_at=request.created_at or now,
                        is_irrelevant=request.is_irrelevant,
                        fingerprint=fingerprint,
                    ))
                    accepted = self._insert_events(conn, request.session_id, request.events, now)
                    return Registered(self._load_session(conn, request.session_id), False, accepted)
            except IntegrityError:
                continue  # lost a race on the same session_id: the next pass sees the stored one
        raise Unavailable(f"session '{request.session_id}': the store kept conflicting; retry")

    def push_events(self, session_id: str, new_events: Sequence[pb.Event], now: int) -> tuple[int, int]:
        """Stores validated events of a known session; returns (accepted, duplicate)."""
        shown = self.shown_object_ids(session_id)
        for i, item in enumerate(new_events):
            if item.object_id not in shown:
                raise InvalidArgument(f"events[{i}].object_id",
                                      f"'{item.object_id}' is not among the session's search_results")
        with self._write() as conn:
            accepted = self._insert_events(conn, session_id, new_events, now)
        return accepted, len(new_events) - accepted

    def shown_object_ids(self, session_id: str) -> frozenset[str]:
        with self._shown_lock:
            cached = self._shown.get(session_id)
            if cached is not None:
                self._shown.move_to_end(session_id)
                return cached
        with self._reader.connect() as conn:
            row = conn.execute(select(sessions.c.search_results).where(sessions.c.session_id == session_id)).first()
        if row is None:
            raise NotFound(f"session '{session_id}' does not exist")
        shown = frozenset(r["object_id"] for r in json.loads(row.search_results))
        with self._shown_lock:
            self._shown[session_id] = shown
            if len(self._shown) > self._shown_cache_size:
                self._shown.popitem(last=False)
        return shown

    def _insert_events(self, conn: Connection, session_id: str, new_events: Sequence[pb.Event], now: int) -> int:
        if not new_events:
            return 0
        rows = [
            {
                "session_id": session_id,
                "event_id": e.event_id,
                "object_id": e.object_id,
                "event_type": e.event_type or "click",
                "created_at": e.created_at or now,
                "meta": _struct_json(e.meta),
            }
            for e in new_events
        ]
        statement = self._insert(events).on_conflict_do_nothing(index_elements=["session_id", "event_id"])
        return len(conn.execute(statement.returning(events.c.id), rows).all())

    def mark_irrelevant(self, session_id: str) -> pb.Session:
        with self._write() as conn:
            if not self._mark(conn, session_id):
                raise NotFound(f"session '{session_id}' does not exist")
            return self._load_session(conn, session_id)

    def _mark(self, conn: Connection, session_id: str) -> bool:
        result = conn.execute(update(sessions).where(sessions.c.session_id == session_id).values(is_irrelevant=True))
        return result.rowcount > 0

    def get_session(self, session_id: str) -> pb.Session:
        with self._reader.begin() as conn:
            return self._load_session(conn, session_id)

    def _load_session(self, conn: Connection, session_id: str) -> pb.Session:
        row = conn.execute(select(sessions).where(sessions.c.session_id == session_id)).first()
        if row is None:
            raise NotFound(f"session '{session_id}' does not exist")
        event_rows = conn.execute(select(events).where(events.c.session_id == session_id).order_by(events.c.id)).all()
        return _session(row, event_rows)

    # --- batches ------------------------------------------------------------------------------------

    def get_batch(self, batch_id: str) -> pb.Batch:
        with self._reader.begin() as conn:
            if batch_id:
                number = _batch_number(batch_id)
            else:
                number = conn.execute(select(ingest_state.c.collecting_batch)).scalar_one()
            row = conn.execute(select(batches).where(batches.c.number == number)).first()
        if row is None:
            raise NotFound(f"batch '{batch_id}' does not exist")
        return _batch(row)

    def release_batch(self, release_id: str, now: int) -> ReleaseResult:
        """Closes the collecting batch and opens the next, idempotently on `release_id`; the
        `es.clickstream.batch.released` announcement is written to the outbox in the same commit."""
        with self._write() as conn:
            state = conn.execute(select(ingest_state).where(ingest_state.c.id == 1).with_for_update()).one()
            done = conn.execute(select(batches).where(batches.c.release_id == release_id)).first()
            if done is not None:
                following = conn.execute(select(batches).where(batches.c.number == done.number + 1)).one()
                return ReleaseResult(_batch(done), _batch(following), True)
            current = conn.execute(select(batches).where(batches.c.number == state.collecting_batch)).one()
            if current.session_count == 0:
                raise FailedPrecondition(f"batch '{batch_id_of(current.number)}' has no sessions to release")
            conn.execute(update(batches).where(batches.c.number == current.number)
                         .values(status=RELEASED, release_id=release_id, released_at=now))
            following_number = current.number + 1
            conn.execute(batches.insert().values(number=following_number, status=COLLECTING, session_count=0,
                                                 created_at=now))
            conn.execute(update(ingest_state).where(ingest_state.c.id == 1).values(collecting_batch=following_number))
            released = _batch(conn.execute(select(batches).where(batches.c.number == current.number)).one())
            following = _batch(conn.execute(select(batches).where(batches.c.number == following_number)).one())
            conn.execute(outbox.insert().values(
                subject=subjects.BATCH_RELEASED,
                msg_id=f"batch-released:{state.store_id}:{released.batch_id}",
                payload=events_pb2.BatchReleased(batch=released).SerializeToString(),
                created_at=now,
            ))
            return ReleaseResult(released, following, False)

    def iter_batch_sessions(self, batch_id: str, after_number: int, page_size: int = 500) -> Iterator[list[pb.Session]]:
        """Pages of the batch's sessions with their events, in session_number order."""
        number = _batch_number(batch_id)
        with self._reader.connect() as conn:
            if conn.execute(select(batches.c.number).where(batches.c.number == number)).first() is None:
                raise NotFound(f"batch '{batch_id}' does not exist")
        cursor = after_number
        while True:
            with self._reader.begin() as conn:
                rows = conn.execute(
                    select(sessions)
                    .where(sessions.c.batch_number == number, sessions.c.session_number > cursor)
                    .order_by(sessions.c.session_number).limit(page_size)
                ).all()
                if not rows:
                    return
                by_session: dict[str, list[Any]] = {row.session_id: [] for row in rows}
                for event_row in conn.execute(
                    select(events).where(events.c.session_id.in_(list(by_session))).order_by(events.c.id)
                ):
                    by_session[event_row.session_id].append(event_row)
            yield [_session(row, by_session[row.session_id]) for row in rows]
            cursor = rows[-1].session_number

    # --- outbox -------------------------------------------------------------------------------------

    def pending_outbox(self, limit: int = 100) -> list[OutboxMessage]:
        with self._reader.connect() as conn:
            rows = conn.execute(
                select(outbox).where(outbox.c.published_at.is_(None)).order_by(outbox.c.id).limit(limit)
            ).all()
        return [OutboxMessage(r.id, r.subject, r.msg_id, r.payload) for r in rows]

    def mark_published(self, ids: Sequence[int], now: int) -> None:
        with self._write() as conn:
            conn.execute(update(outbox).where(outbox.c.id.in_(list(ids))).values(published_at=now))

    def count_rows(self) -> dict[str, int]:
        with self._reader.connect() as conn:
            return {t.name: conn.execute(select(func.count()).select_from(t)).scalar_one()
                    for t in (sessions, events, batches, outbox)}

    # --- helpers ------------------------------------------------------------------------------------

    def _write(self) -> Any:
        return self._writer.begin()


def _session(row: Any, event_rows: Sequence[Any]) -> pb.Session:
    session = pb.Session(
        session_id=row.session_id,
        search_query=row.search_query,
        user_id=row.user_id,
        created_at=row.created_at,
        is_irrelevant=row.is_irrelevant,
        batch_id=batch_id_of(row.batch_number),
        session_number=row.session_number,
    )
    _fill_struct(session.search_meta, row.search_meta)
    for result in json.loads(row.search_results):
        item = session.search_results.add(object_id=result["object_id"], rank=result["rank"])
        if result["meta"]:
            item.meta.update(result["meta"])
    for e in event_rows:
        item = session.events.add(event_id=e.event_id, object_id=e.object_id, event_type=e.event_type,
                                  created_at=e.created_at)
        _fill_struct(item.meta, e.meta)
    return session


def _sqlite_engine(url: str, begin: str) -> Engine:
    engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

    @event.listens_for(engine, "connect")
    def _configure(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # SQLAlchemy's "begin" event below issues BEGIN itself
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _begin(conn: Connection) -> None:
        conn.exec_driver_sql(begin)

    return engine


def _now() -> int:
    return int(time.time())
