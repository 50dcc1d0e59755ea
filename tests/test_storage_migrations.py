"""Schema migrations: from empty, down and up again, and refusing schemas of another version."""

from __future__ import annotations

from pathlib import Path

import pytest
import storage_fixtures
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine, inspect, text

from manyheads.errors import StorageError
from manyheads.storage import Store, current_revision, downgrade, head_revision, upgrade
from manyheads.storage.migrate import VERSION_TABLE
from manyheads.storage.models import Base

# Bound by assignment, not import: see test_storage_resume.py.
db_url = storage_fixtures.db_url

STORE_TABLES = set(Base.metadata.tables)


def _tables(url: str) -> set[str]:
    engine = create_engine(url)
    try:
        return set(inspect(engine).get_table_names())
    finally:
        engine.dispose()


def test_upgrade_from_empty_creates_every_table(db_url: str) -> None:
    assert current_revision(db_url) is None
    upgrade(db_url)
    assert current_revision(db_url) == head_revision()
    assert STORE_TABLES <= _tables(db_url)


def test_models_describe_exactly_the_migrated_schema(db_url: str) -> None:
    upgrade(db_url)
    engine = create_engine(db_url)

    def ours(name: str | None, type_: str, _parent: object) -> bool:
        # Search objects live only in the migration (FTS5 tables, the expression index).
        return not (name or "").startswith(("messages_fts", "ix_messages_content_fts")) and (
            type_ != "table" or name != VERSION_TABLE
        )

    try:
        with engine.connect() as conn:
            context = MigrationContext.configure(conn, opts={"include_name": ours})
            assert compare_metadata(context, Base.metadata) == []
    finally:
        engine.dispose()


def test_downgrade_to_base_and_upgrade_again(db_url: str) -> None:
    upgrade(db_url)
    downgrade(db_url, "base")
    assert current_revision(db_url) is None
    assert not STORE_TABLES & _tables(db_url)
    upgrade(db_url)
    with Store.open(db_url) as store:
        session = store.create_session("debate")
        store.append_message(session.id, role="user", content="the round trip worked")
        assert [m.content for m in store.search_messages("round trip")] == ["the round trip worked"]


def test_search_index_covers_messages_stored_before_it(db_url: str) -> None:
    with Store.open(db_url) as store:
        session = store.create_session("debate")
        store.append_message(session.id, role="user", content="written before reindexing")
    downgrade(db_url, "0001")
    upgrade(db_url)
    with Store.open(db_url) as store:
        assert [m.content for m in store.search_messages("reindexing")] == [
            "written before reindexing"
        ]


def test_new_sqlite_file_is_migrated_on_open(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'fresh.db'}"
    with Store.open(url):
        pass
    assert current_revision(url) == head_revision()


def test_older_schema_is_refused_until_upgraded(db_url: str) -> None:
    upgrade(db_url, "0001")
    with pytest.raises(StorageError, match=r"older than .*run `manyheads db upgrade`"):
        Store.open(db_url)
    upgrade(db_url)
    with Store.open(db_url) as store:
        assert store.list_sessions() == []


def test_schema_from_a_newer_manyheads_is_refused(db_url: str) -> None:
    upgrade(db_url)
    engine = create_engine(db_url)
    with engine.begin() as conn:
        conn.execute(text(f"UPDATE {VERSION_TABLE} SET version_num = 'ffff'"))
    engine.dispose()
    with pytest.raises(StorageError, match="revision ffff, which this version of manyheads"):
        Store.open(db_url)


def test_tables_without_a_revision_are_refused(db_url: str) -> None:
    upgrade(db_url)
    engine = create_engine(db_url)
    with engine.begin() as conn:
        conn.execute(text(f"DROP TABLE {VERSION_TABLE}"))
    engine.dispose()
    with pytest.raises(StorageError, match="manyheads tables but no schema revision"):
        Store.open(db_url)
