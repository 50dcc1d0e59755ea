"""LangGraph checkpoints in the same database as the sessions.

Keeping both in one database means one URL to configure and one file (or server) to back up,
and a resumed graph always finds the transcript its checkpoint refers to. We use LangGraph's own
savers (``SqliteSaver``, ``PostgresSaver``) on connections we open, so that SQLite gets the same
busy timeout as the store and PostgreSQL the same connect timeout and error messages.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path

import psycopg
from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.checkpoint.postgres import PostgresSaver
from langgraph.checkpoint.sqlite import SqliteSaver
from psycopg.rows import dict_row
from sqlalchemy import URL

from manyheads.errors import StorageError
from manyheads.storage.engine import (
    CONNECT_TIMEOUT_S,
    DEFAULT_BUSY_TIMEOUT_S,
    resolve_url,
    where,
)

# Arbitrary constant key for pg_advisory_lock: PostgresSaver.setup() is not safe to run from
# two processes at once on a fresh database (concurrent CREATE TABLE IF NOT EXISTS can fail).
_PG_SETUP_LOCK = 0x6D686370


@contextmanager
def open_checkpointer(
    url: str | URL | Path | None = None, *, busy_timeout_s: float = DEFAULT_BUSY_TIMEOUT_S
) -> Iterator[BaseCheckpointSaver[str]]:
    """A ready (``setup()`` done) checkpointer on the store's database; closed on exit.

    ``url`` resolves exactly as for ``Store.open``. Use the session id as LangGraph's
    ``thread_id`` so a session and its checkpoints are found by the same key.
    """
    resolved = resolve_url(url)
    if resolved.get_backend_name() == "sqlite":
        with _sqlite_saver(resolved, busy_timeout_s) as saver:
            yield saver
    else:
        with _postgres_saver(resolved) as saver:
            yield saver


@contextmanager
def _sqlite_saver(url: URL, busy_timeout_s: float) -> Iterator[SqliteSaver]:
    try:
        # SqliteSaver serialises its own use of the connection with a lock, so sharing it
        # between the graph's worker threads is safe.
        conn = sqlite3.connect(url.database or "", timeout=busy_timeout_s, check_same_thread=False)
    except sqlite3.Error as exc:
        raise StorageError(f"cannot open {where(url)}: {exc}") from None
    with closing(conn):
        saver = SqliteSaver(conn)
        try:
            saver.setup()
        except sqlite3.OperationalError as exc:
            raise StorageError(f"cannot set up checkpoints in {where(url)}: {exc}") from None
        yield saver


@contextmanager
def _postgres_saver(url: URL) -> Iterator[PostgresSaver]:
    conninfo = url.set(drivername="postgresql").render_as_string(hide_password=False)
    try:
        # The settings PostgresSaver.from_conn_string uses, plus our connect timeout.
        conn = psycopg.connect(
            conninfo,
            autocommit=True,
            prepare_threshold=0,
            row_factory=dict_row,
            connect_timeout=CONNECT_TIMEOUT_S,
        )
    except psycopg.OperationalError as exc:
        detail = str(exc).strip().splitlines()[0]
        raise StorageError(f"cannot connect to {where(url)}: {detail}") from None
    with conn:
        saver = PostgresSaver(conn)
        conn.execute("SELECT pg_advisory_lock(%s)", (_PG_SETUP_LOCK,))
        try:
            saver.setup()
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (_PG_SETUP_LOCK,))
        yield saver
