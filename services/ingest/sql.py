"""SQL plumbing of the clickstream store: its SQLite engines, savepoints issued through the driver,
statements compiled once, and the retry of a lost insert race."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar

from sqlalchemy import (
    Connection,
    CursorResult,
    Engine,
    create_engine,
    event,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import IntegrityError

from services.common.errors import (
    Unavailable,
)

T = TypeVar("T")


def retrying_conflicts(session_id: str, attempt: Callable[[], T]) -> T:
    for _ in range(3):
        try:
            return attempt()
        except IntegrityError:
            continue  # lost a race with another writer: the next pass sees what it stored
    raise Unavailable(f"session '{session_id}': the store kept conflicting; retry")


@contextmanager
def savepoint(conn: Connection) -> Iterator[None]:
    """A savepoint around one request or message of a shared transaction, issued through the driver:
    `Connection.begin_nested()` compiles its SAVEPOINT clause anew on every call (a seventh of a grouped
    registration's CPU). Savepoints here never nest, so one name serves them all."""
    conn.exec_driver_sql("SAVEPOINT ingest_item")
    try:
        yield
    except BaseException:
        conn.exec_driver_sql("ROLLBACK TO SAVEPOINT ingest_item")
        raise
    conn.exec_driver_sql("RELEASE SAVEPOINT ingest_item")


class DriverStatement:
    """A hot write statement compiled once for the store's dialect and run through `exec_driver_sql`,
    which skips SQLAlchemy's per-execution compiled-cache lookup and parameter and result processing
    (a third of a registration's CPU). Only for statements whose values need no type conversion."""

    def __init__(self, statement: Any, dialect: Dialect) -> None:
        compiled = statement.compile(dialect=dialect)
        self._sql = str(compiled)
        self._literals = compiled.params  # values the statement carries itself (`session_count + 1`)
        self._order = compiled.positiontup if compiled.positional else None

    def _bind(self, params: Mapping[str, Any]) -> Any:
        values = {**self._literals, **params}
        return tuple(values[name] for name in self._order) if self._order is not None else values

    def __call__(self, conn: Connection, params: Mapping[str, Any] | None = None) -> CursorResult[Any]:
        return conn.exec_driver_sql(self._sql, self._bind(params or {}))

    def many(self, conn: Connection, rows: Sequence[Mapping[str, Any]]) -> CursorResult[Any]:
        return conn.exec_driver_sql(self._sql, [self._bind(row) for row in rows])


def sqlite_engine(url: str, begin: str, pool_size: int, max_overflow: int) -> Engine:
    engine = create_engine(url, pool_size=pool_size, max_overflow=max_overflow, pool_timeout=60,
                           connect_args={"check_same_thread": False, "timeout": 30})

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


def now_s() -> int:
    return int(time.time())
