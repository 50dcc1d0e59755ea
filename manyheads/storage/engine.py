"""Database URLs, engines and the translation of driver errors into ``StorageError``.

One URL names the whole store: sessions, datasets and LangGraph checkpoints all live in the
same database, so a crash can never leave them in two different places. SQLite is the default
(a file under ``MANYHEADS_HOME``); a ``postgresql://`` URL selects PostgreSQL through psycopg 3.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import URL, Engine, create_engine, event, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, OperationalError, SQLAlchemyError

from manyheads.errors import ConfigError, StorageError
from manyheads.settings import get_settings

CONNECT_TIMEOUT_S = 3
DEFAULT_BUSY_TIMEOUT_S = 5.0
# Execution option that makes a SQLite transaction start with BEGIN IMMEDIATE (see below).
WRITE_OPTION = "manyheads_write"

# PostgreSQL SQLSTATEs worth retrying: serialization failure, deadlock, lock not available.
_PG_TRANSIENT = {"40001", "40P01", "55P03"}
_SQLITE_BUSY, _SQLITE_LOCKED = 5, 6
_URL_HINT = "use sqlite:///path/to/file.db or postgresql+psycopg://user@host:port/dbname"


def resolve_url(url: str | URL | Path | None = None) -> URL:
    """Pick the database: explicit ``url``, then ``MANYHEADS_DATABASE_URL``, then the home file.

    A ``Path`` means a SQLite file. Bare ``postgresql://`` URLs get the psycopg 3 driver, the
    only PostgreSQL driver we ship.
    """
    if isinstance(url, Path):
        return URL.create("sqlite", database=str(url))
    if url is None:
        settings = get_settings()
        if settings.database_url is None:
            settings.home.mkdir(parents=True, exist_ok=True)
            return URL.create("sqlite", database=str(settings.home / "manyheads.db"))
        url = settings.database_url
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise ConfigError(f"malformed database URL {url!r}", hint=_URL_HINT) from None
    backend, _, driver = parsed.drivername.partition("+")
    if backend in ("postgresql", "postgres") and driver in ("", "psycopg"):
        return parsed.set(drivername="postgresql+psycopg")
    if backend == "sqlite" and driver in ("", "pysqlite"):
        if parsed.database in (None, "", ":memory:"):
            raise ConfigError(
                f"database URL {describe(parsed)!r} names an in-memory SQLite database; "
                "sessions and checkpoints must share one file",
                hint=_URL_HINT,
            )
        return parsed.set(drivername="sqlite")
    raise ConfigError(
        f"unsupported database URL {describe(parsed)!r} (scheme {parsed.drivername!r})",
        hint=_URL_HINT,
    )


def describe(url: URL) -> str:
    """The URL as it may appear in messages and logs: password hidden."""
    return url.render_as_string(hide_password=True)


def where(url: URL) -> str:
    """The place a user would look for the problem: the SQLite file or PostgreSQL host:port."""
    if url.get_backend_name() == "sqlite":
        return f"SQLite file {url.database}"
    return f"PostgreSQL at {url.host or 'localhost'}:{url.port or 5432}/{url.database or ''}"


def create_store_engine(url: URL, *, busy_timeout_s: float = DEFAULT_BUSY_TIMEOUT_S) -> Engine:
    """An engine tuned for many concurrent writers on either backend."""
    if url.get_backend_name() == "postgresql":
        return create_engine(
            url, pool_pre_ping=True, connect_args={"connect_timeout": CONNECT_TIMEOUT_S}
        )
    engine = create_engine(url, connect_args={"timeout": busy_timeout_s})
    _configure_sqlite(engine, busy_timeout_s)
    return engine


def _configure_sqlite(engine: Engine, busy_timeout_s: float) -> None:
    """WAL, a busy timeout, enforced foreign keys, and BEGIN IMMEDIATE for writes.

    pysqlite's own transaction handling starts transactions lazily with a deferred BEGIN, so two
    writers can both read, then both try to upgrade to a write lock, and one fails at once
    without waiting (SQLITE_BUSY_SNAPSHOT). Taking over BEGIN lets write transactions grab the
    write lock first (``BEGIN IMMEDIATE``) and queue behind each other via busy_timeout, while
    readers keep using plain deferred transactions, which WAL never blocks.
    """

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: sqlite3.Connection, _record: Any) -> None:
        dbapi_conn.isolation_level = None
        dbapi_conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_s * 1000)}")
        dbapi_conn.execute("PRAGMA journal_mode = WAL")
        dbapi_conn.execute("PRAGMA synchronous = NORMAL")
        dbapi_conn.execute("PRAGMA foreign_keys = ON")

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        write = conn.get_execution_options().get(WRITE_OPTION, False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")


def is_transient(exc: DBAPIError) -> bool:
    """True for lock and serialization conflicts that succeed when the transaction is retried."""
    orig = exc.orig
    if isinstance(orig, sqlite3.OperationalError):
        return orig.sqlite_errorcode & 0xFF in (_SQLITE_BUSY, _SQLITE_LOCKED)
    return getattr(orig, "sqlstate", None) in _PG_TRANSIENT


def storage_error(exc: SQLAlchemyError, url: URL) -> StorageError:
    """A ``StorageError`` that says what failed and where, without the driver's stack."""
    orig = getattr(exc, "orig", None) or exc
    detail = str(orig).strip().splitlines()[0] if str(orig).strip() else type(orig).__name__
    sqlite = url.get_backend_name() == "sqlite"
    if isinstance(exc, DBAPIError) and is_transient(exc) and sqlite:
        return StorageError(
            f"database is locked: {url.database}",
            hint="another connection held a write lock for longer than the busy timeout",
        )
    if isinstance(exc, OperationalError) and _failed_to_connect(exc):
        return StorageError(f"cannot {'open' if sqlite else 'connect to'} {where(url)}: {detail}")
    return StorageError(f"database error on {where(url)}: {detail}")


def _failed_to_connect(exc: OperationalError) -> bool:
    """Did the error happen while opening the connection (server down, file unopenable)?"""
    if isinstance(exc.orig, sqlite3.OperationalError):
        return "unable to open" in str(exc.orig)
    # psycopg leaves sqlstate empty when no server answered at all; 08 is "connection
    # exception", 28 "invalid authorization", 3D "no such database".
    sqlstate = getattr(exc.orig, "sqlstate", None)
    return sqlstate is None or sqlstate.startswith(("08", "28", "3D"))


@contextmanager
def translating(url: URL) -> Iterator[None]:
    """Turn any SQLAlchemy error raised inside the block into a ``StorageError``."""
    try:
        yield
    except SQLAlchemyError as exc:
        raise storage_error(exc, url) from exc
