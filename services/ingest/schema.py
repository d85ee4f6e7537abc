"""The clickstream database's schema: its tables (SQLite and PostgreSQL through SQLAlchemy Core) and the
upgrades from older schema versions."""

from __future__ import annotations

import uuid

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Connection,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    inspect,
    select,
    text,
    update,
)

# 2: sessions.experiment_id, and the experiments and experiment_results tables (online experiments).
SCHEMA_VERSION = 2
COLLECTING, RELEASED = "collecting", "released"

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
    # The online experiment whose interleaved list the session showed; NULL outside one.
    Column("experiment_id", String(1024)),
    UniqueConstraint("batch_number", "session_number"),
)
_sessions_by_experiment = Index("sessions_by_experiment", sessions.c.experiment_id)
# The experiments the registry announced (es.registry.experiment.started): sessions may name only these.
experiments = Table(
    "experiments", metadata,
    Column("experiment_id", String(1024), primary_key=True),
    Column("fine_tuning_method", String(1024), nullable=False),
    Column("champion_version", String(64), nullable=False),
    Column("challenger_version", String(64), nullable=False),
    Column("started_at", BigInteger, nullable=False),
)
# Which team put each result of an experiment's session there, for counting its clicks in SQL (the
# session's search_results JSON carries the teams too, for reading the session back).
experiment_results = Table(
    "experiment_results", metadata,
    Column("session_id", String(1024), ForeignKey("sessions.session_id"), primary_key=True),
    Column("object_id", String(1024), primary_key=True),
    Column("team", Integer, nullable=False),
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


def migrate(conn: Connection, url: str, now: int) -> None:
    """Creates what is missing (tables, the first batch, the state row) and upgrades an older schema, in
    the caller's transaction; a database of a newer schema is refused."""
    metadata.create_all(conn)
    state = conn.execute(select(ingest_state).with_for_update()).first()
    if state is None:
        conn.execute(batches.insert().values(number=1, status=COLLECTING, session_count=0, created_at=now))
        conn.execute(ingest_state.insert().values(id=1, schema_version=SCHEMA_VERSION, store_id=uuid.uuid4().hex,
                                                  collecting_batch=1))
    elif state.schema_version > SCHEMA_VERSION:
        raise RuntimeError(f"the clickstream database at {url} has schema version {state.schema_version}; this "
                           f"build knows up to {SCHEMA_VERSION}: upgrade Embedding Studio")
    elif state.schema_version < 2:
        _add_experiment_column(conn)


def _add_experiment_column(conn: Connection) -> None:
    """Schema 1 -> 2 (under the state row's lock, so concurrent ingest processes upgrade once): the
    sessions table gains experiment_id and its index; create_all made the new tables."""
    if "experiment_id" not in {column["name"] for column in inspect(conn).get_columns("sessions")}:
        conn.execute(text("ALTER TABLE sessions ADD COLUMN experiment_id VARCHAR(1024)"))
    _sessions_by_experiment.create(conn, checkfirst=True)
    conn.execute(update(ingest_state).where(ingest_state.c.id == 1).values(schema_version=SCHEMA_VERSION))

