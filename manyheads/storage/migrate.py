"""Schema migrations: Alembic, configured in code, with the scripts shipped inside the package.

There is no ``alembic.ini``: every entry point builds the Alembic ``Config`` here and hands
``env.py`` an open connection, so the same code path serves ``manyheads db upgrade``,
``Store.open`` and the tests. Migrations run inside one write transaction (BEGIN IMMEDIATE on
SQLite, an advisory lock on PostgreSQL; both backends have transactional DDL), so two processes
opening a fresh database at once cannot both create the tables.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util import CommandError
from sqlalchemy import URL, Connection, Engine, inspect, text

from manyheads.errors import StorageError
from manyheads.storage.engine import (
    WRITE_OPTION,
    create_store_engine,
    resolve_url,
    translating,
    where,
)
from manyheads.storage.models import Base

MIGRATIONS_DIR = Path(__file__).with_name("migrations")
# Our own version table, so a database shared with another Alembic project stays unambiguous.
VERSION_TABLE = "manyheads_alembic_version"
# Arbitrary constant key for pg_advisory_xact_lock: serialises concurrent migrators.
_PG_MIGRATION_LOCK = 0x6D616E79

_Action = Callable[[Config], None]


def alembic_config(connection: Connection | None = None) -> Config:
    """The Alembic config ``env.py`` expects: script location plus the connection to use."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["connection"] = connection
    return config


@cache
def _scripts() -> ScriptDirectory:
    return ScriptDirectory.from_config(alembic_config())


def head_revision() -> str:
    head = _scripts().get_current_head()
    assert head is not None, "the package ships at least one migration"
    return head


def upgrade(url: str | Path | None = None, revision: str = "head") -> None:
    """Migrate the database at ``url`` (default: the configured store) up to ``revision``."""
    _run(url, lambda config: command.upgrade(config, revision))


def downgrade(url: str | Path | None, revision: str) -> None:
    """Migrate down to ``revision`` (``"base"`` drops every manyheads table)."""
    _run(url, lambda config: command.downgrade(config, revision))


def current_revision(url: str | Path | None = None) -> str | None:
    """The revision the database is at, or None for a database never migrated."""
    resolved = resolve_url(url)
    engine = create_store_engine(resolved)
    try:
        with translating(resolved), engine.connect() as conn:
            return _current(conn)
    finally:
        engine.dispose()


def ensure_current(engine: Engine, url: URL) -> None:
    """Bring an empty database to head; refuse one that holds an older or unknown schema.

    Upgrading a database that already holds sessions is left to the user (``manyheads db
    upgrade``) so that it happens once, deliberately, and never from two programs at once.
    """
    head = head_revision()
    with translating(url), engine.connect() as conn:
        current = _current(conn)
        if current == head:
            return
        empty = current is None and not _has_store_tables(conn)
    if empty:
        _migrate(engine, url, lambda config: command.upgrade(config, "head"))
        return
    if current is None and url.get_backend_name() == "postgresql":
        # Another program may be migrating this database right now (a migration commits in
        # steps): wait for its lock, then look again.
        current = _after_migrations(engine, url)
        if current == head:
            return
    if current is None:
        raise StorageError(
            f"{where(url)} has manyheads tables but no schema revision",
            hint="it was not created by manyheads migrations; use a new database",
        )
    try:
        _scripts().get_revision(current)
    except CommandError:
        raise StorageError(
            f"{where(url)} is at schema revision {current}, which this version of manyheads "
            f"does not know (its newest is {head})",
            hint="upgrade manyheads",
        ) from None
    raise StorageError(
        f"{where(url)} is at schema revision {current}, older than {head}; "
        "run `manyheads db upgrade`"
    )


def _run(url: str | Path | None, action: _Action) -> None:
    resolved = resolve_url(url)
    engine = create_store_engine(resolved)
    try:
        _migrate(engine, resolved, action)
    finally:
        engine.dispose()


def _migrate(engine: Engine, url: URL, action: _Action) -> None:
    writer = engine.execution_options(**{WRITE_OPTION: True})
    with translating(url), writer.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_MIGRATION_LOCK})
        try:
            action(alembic_config(conn))
        except CommandError as exc:
            raise StorageError(f"migration failed on {where(url)}: {exc}") from None


def _after_migrations(engine: Engine, url: URL) -> str | None:
    """The revision once no other program holds the migration lock (PostgreSQL)."""
    with translating(url), engine.begin() as conn:
        conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_MIGRATION_LOCK})
        return _current(conn)


def _current(conn: Connection) -> str | None:
    return MigrationContext.configure(
        conn, opts={"version_table": VERSION_TABLE}
    ).get_current_revision()


def _has_store_tables(conn: Connection) -> bool:
    return bool(set(inspect(conn).get_table_names()) & set(Base.metadata.tables))
