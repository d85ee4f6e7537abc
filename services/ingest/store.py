"""The clickstream store: sessions, events, batches and the event outbox, in SQLite (default) or
PostgreSQL through one SQLAlchemy Core code path.

Acknowledged means committed: SQLite runs in WAL mode with synchronous=NORMAL (a commit survives a
killed process) and takes the write lock at BEGIN (BEGIN IMMEDIATE), so writers never deadlock on a
lock upgrade; PostgreSQL runs with synchronous_commit on. Registrations and releases serialize on one
row (`ingest_state`), which is what keeps session numbers gap-free and a release atomic under
concurrent requests on either back-end. The tables and their upgrades are `schema.py`'s, the mapping of
rows to messages `rows.py`'s, and the SQL plumbing (engines, savepoints, precompiled statements)
`sql.py`'s.
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import (
    Connection,
    and_,
    bindparam,
    case,
    create_engine,
    distinct,
    func,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError

from services.api.embedding_studio.v1 import clickstream_pb2 as pb
from services.api.embedding_studio.v1 import events_pb2
from services.common import nats as subjects
from services.common.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    ServiceError,
    Unavailable,
)
from services.ingest.rows import (
    EVENT_COLUMNS,
    batch_id_of,
    batch_message,
    batch_number,
    check_shown,
    event_rows_of,
    registration_fingerprint,
    session_message,
    shown_ids,
    struct_dict,
    struct_json,
)
from services.ingest.schema import (
    COLLECTING,
    RELEASED,
    batches,
    events,
    experiment_results,
    experiments,
    ingest_state,
    migrate,
    outbox,
    sessions,
)
from services.ingest.sql import DriverStatement, now_s, retrying_conflicts, savepoint, sqlite_engine

# Statements built once: executing a prebuilt statement skips rebuilding the expression and its cache
# key on every call (SQLAlchemy then finds the compiled SQL in its cache straight away).
_lock_state = select(ingest_state).where(ingest_state.c.id == 1).with_for_update()
_fingerprint_of = select(sessions.c.fingerprint).where(sessions.c.session_id == bindparam("sid"))
_shown_of = select(sessions.c.search_results).where(sessions.c.session_id == bindparam("sid"))
_count_session = (update(batches).where(batches.c.number == bindparam("batch"))
                  .values(session_count=batches.c.session_count + 1).returning(batches.c.session_count))
_insert_session = sessions.insert()
_mark_irrelevant = update(sessions).where(sessions.c.session_id == bindparam("sid")).values(is_irrelevant=True)
_session_row = select(sessions).where(sessions.c.session_id == bindparam("sid"))
_session_events = select(events).where(events.c.session_id == bindparam("sid")).order_by(events.c.id)
_experiment_known = select(experiments.c.experiment_id).where(experiments.c.experiment_id == bindparam("x"))


def _experiment_counts() -> Any:
    """Team-draft credit of every session of one experiment (bind "x"), in one aggregate: a session's
    team clicks are its distinct results with a "click" event, by the team that put them there."""
    clicked_team = experiment_results.c.team
    per_session = (
        select(
            sessions.c.session_id,
            func.count(distinct(case((clicked_team == pb.TEAM_CHAMPION, events.c.object_id)))).label("champion"),
            func.count(distinct(case((clicked_team == pb.TEAM_CHALLENGER, events.c.object_id)))).label("challenger"),
        )
        .select_from(
            sessions
            .outerjoin(events, and_(events.c.session_id == sessions.c.session_id, events.c.event_type == "click"))
            .outerjoin(experiment_results, and_(experiment_results.c.session_id == events.c.session_id,
                                                experiment_results.c.object_id == events.c.object_id))
        )
        .where(sessions.c.experiment_id == bindparam("x"))
        .group_by(sessions.c.session_id)
        .subquery()
    )
    return select(
        func.count(),
        func.coalesce(func.sum(case((per_session.c.challenger > per_session.c.champion, 1), else_=0)), 0),
        func.coalesce(func.sum(case((per_session.c.champion > per_session.c.challenger, 1), else_=0)), 0),
    ).select_from(per_session)


_experiment_outcome = _experiment_counts()


@dataclass(frozen=True)
class Registered:
    session: pb.Session | None  # the stored session; None where the caller asked for no copy (Ingest)
    duplicate: bool  # the session was stored before (an idempotent retry)
    events_accepted: int  # events of the request stored by this call


@dataclass(frozen=True)
class Applied:
    """What one message of an Ingest stream stored."""

    sessions_accepted: int = 0
    sessions_duplicate: int = 0
    events_accepted: int = 0
    events_duplicate: int = 0
    irrelevant_marks: int = 0


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
    """Blocking store API; the gRPC servicer calls it from worker threads, its writes on
    `write_executor` (one thread for SQLite's single writer; None, the default pool, for PostgreSQL),
    which `close` shuts down."""

    def __init__(self, url: str, shown_cache_size: int = 200_000) -> None:
        self.url = url
        parsed = make_url(url)
        self.dialect = parsed.get_backend_name()
        if self.dialect == "sqlite":
            if parsed.database and parsed.database != ":memory:":
                Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
            # SQLite has one writer at a time: with one pooled writer connection, concurrent writers queue
            # on the pool and start the moment it is free, instead of sleeping in SQLite's busy handler
            # (which backs off up to 100 ms a try). The busy timeout still covers other processes.
            self._writer = sqlite_engine(url, begin="BEGIN IMMEDIATE", pool_size=1, max_overflow=0)
            self._reader = sqlite_engine(url, begin="BEGIN", pool_size=5, max_overflow=10)
            dialect_insert = sqlite.insert
            # Writes queue for one thread rather than parking several threads on the single writer
            # connection, whose hand-offs cost more than the writes.
            self.write_executor: ThreadPoolExecutor | None = ThreadPoolExecutor(1, thread_name_prefix="ingest-writer")
        elif self.dialect == "postgresql":
            if parsed.drivername == "postgresql":
                parsed = parsed.set(drivername="postgresql+psycopg")
            self._writer = create_engine(
                parsed, pool_size=10, max_overflow=10, pool_pre_ping=True,
                connect_args={"options": "-c synchronous_commit=on"},
            )
            self._reader = self._writer
            dialect_insert = postgresql.insert
            self.write_executor = None  # the event loop's default pool: PostgreSQL takes concurrent writers
        else:
            raise ValueError(f"ES_CLICKSTREAM_DB_URL: unsupported database '{self.dialect}' (use sqlite or postgresql)")
        # The statements of every registration and event write, compiled for this database once.
        dialect = self._writer.dialect
        self._lock_state = DriverStatement(_lock_state, dialect)
        self._fingerprint_of = DriverStatement(_fingerprint_of, dialect)
        self._count_session = DriverStatement(_count_session, dialect)
        self._insert_session = DriverStatement(_insert_session, dialect)
        # `inline`: no implicit RETURNING of the new ids; the row count says how many were new.
        self._add_events = DriverStatement(
            dialect_insert(events).inline().values({name: bindparam(name) for name in EVENT_COLUMNS})
            .on_conflict_do_nothing(index_elements=["session_id", "event_id"]),
            dialect,
        )
        # Sessions never change their results, so the shown object ids of a session can be cached.
        self._shown: OrderedDict[str, frozenset[str]] = OrderedDict()
        self._shown_lock = threading.Lock()
        self._shown_cache_size = shown_cache_size
        self._migrate()

    # --- schema -------------------------------------------------------------------------------------

    def _migrate(self) -> None:
        try:
            with self._writer.begin() as conn:
                migrate(conn, self.url, now_s())
        except OperationalError as error:
            raise Unavailable(f"clickstream database {self.url} is unavailable: {error.orig}") from error

    def close(self) -> None:
        if self.write_executor is not None:
            self.write_executor.shutdown()
        self._writer.dispose()
        self._reader.dispose()

    # --- sessions -----------------------------------------------------------------------------------

    def register_sessions(self, requests: Sequence[pb.RegisterSessionRequest], now: int
                          ) -> list[Registered | ServiceError]:
        """Stores validated sessions (and their events) in the collecting batch, all in ONE transaction
        with a savepoint each, so that a refused one rolls back alone while concurrent registrations share
        a commit. Returns each request's outcome in order, once committed."""
        outcomes: list[Registered | ServiceError] = []
        with self._write() as conn:
            for request in requests:
                fingerprint = registration_fingerprint(request)

                def attempt(request: pb.RegisterSessionRequest = request, fingerprint: str = fingerprint) -> Registered:
                    with savepoint(conn):
                        return self._register(conn, request, fingerprint, now, respond=True)

                try:
                    outcomes.append(retrying_conflicts(request.session_id, attempt))
                except ServiceError as error:
                    outcomes.append(error)
        self._remember({request.session_id: shown_ids(request)
                        for request, outcome in zip(requests, outcomes, strict=True)
                        if isinstance(outcome, Registered) and not outcome.duplicate})
        return outcomes

    def _register(self, conn: Connection, request: pb.RegisterSessionRequest, fingerprint: str, now: int,
                  respond: bool) -> Registered:
        # Registrations serialize on the state row (taken first, so the read below is authoritative on
        # PostgreSQL too), which keeps session numbers gap-free and out of a release's way.
        state = self._lock_state(conn).one()
        existing = self._fingerprint_of(conn, {"sid": request.session_id}).first()
        if existing is not None:
            if existing.fingerprint != fingerprint:
                raise AlreadyExists(f"session '{request.session_id}' is already stored with different content")
            if request.is_irrelevant:
                self._mark(conn, request.session_id)
            accepted = self._insert_events(conn, request.session_id, request.events, now)
            return Registered(self._load_session(conn, request.session_id) if respond else None, True, accepted)
        if request.experiment_id and conn.execute(_experiment_known, {"x": request.experiment_id}).first() is None:
            raise InvalidArgument("experiment_id", f"'{request.experiment_id}' is not an experiment the registry "
                                                   f"announced (RegistryService.GetServingPlan names the running one)")
        number = self._count_session(conn, {"batch": state.collecting_batch}).scalar_one()
        results = [{"object_id": r.object_id, "rank": r.rank, "meta": struct_dict(r.meta),
                    **({"team": r.team} if r.team else {})} for r in request.search_results]
        row = {
            "session_id": request.session_id,
            "batch_number": state.collecting_batch,
            "session_number": number,
            "search_query": request.search_query,
            "search_results": json.dumps(results, separators=(",", ":")),
            "search_meta": struct_json(request.search_meta),
            "user_id": request.user_id,
            "created_at": request.created_at or now,
            "is_irrelevant": request.is_irrelevant,
            "fingerprint": fingerprint,
            "experiment_id": request.experiment_id or None,
        }
        self._insert_session(conn, row)
        if request.experiment_id:
            conn.execute(experiment_results.insert(), [
                {"session_id": request.session_id, "object_id": r.object_id, "team": r.team}
                for r in request.search_results])
        event_rows = event_rows_of(request.session_id, request.events, now)
        accepted = self._insert_rows(conn, event_rows)
        # A new session is exactly what was just written (its events are all new), so the reply is built
        # from the rows instead of read back.
        return Registered(session_message(row, results, event_rows) if respond else None, False, accepted)

    def push_events(self, session_id: str, new_events: Sequence[pb.Event], now: int) -> tuple[int, int]:
        """Stores validated events of a known session; returns (accepted, duplicate)."""
        check_shown(self.shown_object_ids(session_id), new_events)
        with self._write() as conn:
            accepted = self._insert_events(conn, session_id, new_events, now)
        return accepted, len(new_events) - accepted

    def apply_ingest(self, messages: Sequence[pb.IngestRequest], now: int) -> list[Applied | ServiceError]:
        """Applies validated messages of an Ingest stream in ONE transaction, each inside its own
        savepoint, so that a refused message rolls back alone while the commit is shared. Returns each
        message's outcome in order; nothing is acknowledged before this returns, i.e. before the commit."""
        outcomes: list[Applied | ServiceError] = []
        # Sessions this transaction registered: their events may follow in the same transaction, and
        # they join the shared cache only once committed.
        registered: dict[str, frozenset[str]] = {}
        with self._write() as conn:
            for message in messages:
                key = message.session.session_id if message.HasField("session") else ""
                try:
                    applied = retrying_conflicts(key, lambda m=message: self._apply_in_savepoint(conn, m, now,
                                                                                                  registered))
                except ServiceError as error:
                    outcomes.append(error)
                    continue
                outcomes.append(applied)
                if applied.sessions_accepted:
                    registered[key] = shown_ids(message.session)
        self._remember(registered)
        return outcomes

    def _apply_in_savepoint(self, conn: Connection, message: pb.IngestRequest, now: int,
                            registered: Mapping[str, frozenset[str]]) -> Applied:
        with savepoint(conn):
            kind = message.WhichOneof("item")
            if kind == "session":
                request = message.session
                result = self._register(conn, request, registration_fingerprint(request), now, respond=False)
                return Applied(sessions_accepted=int(not result.duplicate), sessions_duplicate=int(result.duplicate),
                               events_accepted=result.events_accepted,
                               events_duplicate=len(request.events) - result.events_accepted)
            if kind == "events":
                session_id, new_events = message.events.session_id, message.events.events
                shown = registered.get(session_id)
                check_shown(shown if shown is not None else self._shown_with(conn, session_id), new_events)
                accepted = self._insert_events(conn, session_id, new_events, now)
                return Applied(events_accepted=accepted, events_duplicate=len(new_events) - accepted)
            if not self._mark(conn, message.irrelevant.session_id):
                raise NotFound(f"session '{message.irrelevant.session_id}' does not exist")
            return Applied(irrelevant_marks=1)

    def shown_object_ids(self, session_id: str) -> frozenset[str]:
        with self._reader.connect() as conn:
            return self._shown_with(conn, session_id)

    def _shown_with(self, conn: Connection, session_id: str) -> frozenset[str]:
        """The session's shown object ids, from the cache or through `conn` (which may be a writer's
        connection: a session registered earlier in its transaction is visible to it only)."""
        with self._shown_lock:
            cached = self._shown.get(session_id)
            if cached is not None:
                self._shown.move_to_end(session_id)
                return cached
        row = conn.execute(_shown_of, {"sid": session_id}).first()
        if row is None:
            raise NotFound(f"session '{session_id}' does not exist")
        shown = frozenset(r["object_id"] for r in json.loads(row.search_results))
        self._remember({session_id: shown})
        return shown

    def _remember(self, shown: Mapping[str, frozenset[str]]) -> None:
        """Caches committed sessions' shown object ids (sessions never change their results)."""
        with self._shown_lock:
            for session_id, object_ids in shown.items():
                self._shown[session_id] = object_ids
                self._shown.move_to_end(session_id)
            while len(self._shown) > self._shown_cache_size:
                self._shown.popitem(last=False)

    def _insert_events(self, conn: Connection, session_id: str, new_events: Sequence[pb.Event], now: int) -> int:
        return self._insert_rows(conn, event_rows_of(session_id, new_events, now))

    def _insert_rows(self, conn: Connection, rows: list[dict[str, Any]]) -> int:
        if not rows:
            return 0
        # ON CONFLICT DO NOTHING skips known (session_id, event_id) pairs; the drivers sum the rows an
        # executemany inserted.
        return self._add_events.many(conn, rows).rowcount

    def mark_irrelevant(self, session_id: str) -> pb.Session:
        with self._write() as conn:
            if not self._mark(conn, session_id):
                raise NotFound(f"session '{session_id}' does not exist")
            return self._load_session(conn, session_id)

    def _mark(self, conn: Connection, session_id: str) -> bool:
        return conn.execute(_mark_irrelevant, {"sid": session_id}).rowcount > 0

    def get_session(self, session_id: str) -> pb.Session:
        with self._reader.begin() as conn:
            return self._load_session(conn, session_id)

    def _load_session(self, conn: Connection, session_id: str) -> pb.Session:
        row = conn.execute(_session_row, {"sid": session_id}).first()
        if row is None:
            raise NotFound(f"session '{session_id}' does not exist")
        event_rows = conn.execute(_session_events, {"sid": session_id}).all()
        return session_message(row._mapping, json.loads(row.search_results), [e._mapping for e in event_rows])

    # --- batches ------------------------------------------------------------------------------------

    def get_batch(self, batch_id: str) -> pb.Batch:
        with self._reader.begin() as conn:
            if batch_id:
                number = batch_number(batch_id)
            else:
                number = conn.execute(select(ingest_state.c.collecting_batch)).scalar_one()
            row = conn.execute(select(batches).where(batches.c.number == number)).first()
        if row is None:
            raise NotFound(f"batch '{batch_id}' does not exist")
        return batch_message(row)

    def release_batch(self, release_id: str, now: int) -> ReleaseResult:
        """Closes the collecting batch and opens the next, idempotently on `release_id`; the
        `es.clickstream.batch.released` announcement is written to the outbox in the same commit."""
        with self._write() as conn:
            state = conn.execute(select(ingest_state).where(ingest_state.c.id == 1).with_for_update()).one()
            done = conn.execute(select(batches).where(batches.c.release_id == release_id)).first()
            if done is not None:
                following = conn.execute(select(batches).where(batches.c.number == done.number + 1)).one()
                return ReleaseResult(batch_message(done), batch_message(following), True)
            current = conn.execute(select(batches).where(batches.c.number == state.collecting_batch)).one()
            if current.session_count == 0:
                raise FailedPrecondition(f"batch '{batch_id_of(current.number)}' has no sessions to release")
            conn.execute(update(batches).where(batches.c.number == current.number)
                         .values(status=RELEASED, release_id=release_id, released_at=now))
            following_number = current.number + 1
            conn.execute(batches.insert().values(number=following_number, status=COLLECTING, session_count=0,
                                                 created_at=now))
            conn.execute(update(ingest_state).where(ingest_state.c.id == 1).values(collecting_batch=following_number))
            released = batch_message(conn.execute(select(batches).where(batches.c.number == current.number)).one())
            following = batch_message(conn.execute(select(batches).where(batches.c.number == following_number)).one())
            conn.execute(outbox.insert().values(
                subject=subjects.BATCH_RELEASED,
                msg_id=f"batch-released:{state.store_id}:{released.batch_id}",
                payload=events_pb2.BatchReleased(batch=released).SerializeToString(),
                created_at=now,
            ))
            return ReleaseResult(released, following, False)

    def iter_batch_sessions(self, batch_id: str, after_number: int, page_size: int = 500) -> Iterator[list[pb.Session]]:
        """Pages of the batch's sessions with their events, in session_number order."""
        number = batch_number(batch_id)
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
            yield [session_message(row._mapping, json.loads(row.search_results),
                            [e._mapping for e in by_session[row.session_id]]) for row in rows]
            cursor = rows[-1].session_number

    # --- online experiments -------------------------------------------------------------------------

    def record_experiment(self, started: events_pb2.ExperimentStarted) -> bool:
        """Remembers an experiment the registry announced; True when it was new."""
        experiment = started.experiment
        with self._write() as conn:
            if conn.execute(_experiment_known, {"x": experiment.experiment_id}).first() is not None:
                return False
            conn.execute(experiments.insert().values(
                experiment_id=experiment.experiment_id, fine_tuning_method=experiment.fine_tuning_method,
                champion_version=experiment.champion_version, challenger_version=experiment.challenger_version,
                started_at=experiment.started_at))
            return True

    def experiment_outcome(self, experiment_id: str) -> pb.ExperimentOutcome:
        with self._reader.begin() as conn:
            if conn.execute(_experiment_known, {"x": experiment_id}).first() is None:
                raise NotFound(f"experiment '{experiment_id}' was never announced by the registry")
            sessions_count, wins, losses = conn.execute(_experiment_outcome, {"x": experiment_id}).one()
        return pb.ExperimentOutcome(experiment_id=experiment_id, sessions=sessions_count, wins=wins, losses=losses,
                                    ties=sessions_count - wins - losses)

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

    # --- helpers ------------------------------------------------------------------------------------

    def _write(self) -> Any:
        return self._writer.begin()

