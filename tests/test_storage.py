"""The session store: CRUD, transcripts, search, cascades, bad input and the `db` commands."""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import storage_fixtures
from langgraph.checkpoint.postgres import PostgresSaver
from langgraph.checkpoint.sqlite import SqliteSaver
from sqlalchemy import func, select
from typer.testing import CliRunner

from manyheads.cli.db import db_app
from manyheads.errors import ConfigError, StorageError
from manyheads.storage import (
    Artifact,
    DatasetItem,
    Message,
    NotFoundError,
    Participant,
    Store,
)
from manyheads.storage.checkpoint import open_checkpointer

# Bound by assignment, not import: see test_storage_resume.py.
db_url = storage_fixtures.db_url
store = storage_fixtures.store


def _debate(store: Store) -> str:
    """A small session with two participants, every kind of message and one artifact."""
    session = store.create_session("debate", title="Tabs or spaces", config={"rounds": 2})
    store.add_participant(session.id, name="ada", role="proponent", spec={"model": "small"})
    store.add_participant(session.id, name="bob", role="opponent")
    store.append_message(session.id, role="system", content="Debate: tabs versus spaces.")
    store.append_message(
        session.id,
        role="assistant",
        participant="ada",
        content="Tabs let every reader choose an indentation width.",
        step_scores=[0.9, 0.8],
        prompt_tokens=12,
        completion_tokens=9,
    )
    store.append_message(
        session.id,
        role="assistant",
        participant="bob",
        content="Note to ada: I am about to concede.",
        visibility="private",
        visible_to="ada",
    )
    store.append_message(
        session.id,
        role="assistant",
        participant="judge",
        content="Scoring: ada is ahead.",
        visibility="observer",
        step_scores=[{"token": "ahead", "uncertainty": 0.1}],
        meta={"round": 1},
    )
    store.add_artifact(session.id, kind="image", name="score.png", mime="image/png", data=b"png!")
    return session.id


def test_load_returns_everything_in_order(store: Store) -> None:
    session_id = _debate(store)
    session = store.load(session_id)
    assert (session.room, session.title, session.config) == (
        "debate",
        "Tabs or spaces",
        {"rounds": 2},
    )
    assert session.status == "running"
    assert [(p.name, p.role, p.spec) for p in session.participants] == [
        ("ada", "proponent", {"model": "small"}),
        ("bob", "opponent", {}),
    ]
    assert [m.seq for m in session.messages] == [1, 2, 3, 4]
    system, ada, note, judge = session.messages
    assert system.participant is None and system.visibility == "public"
    assert (ada.step_scores, ada.prompt_tokens, ada.completion_tokens) == ([0.9, 0.8], 12, 9)
    assert (note.visibility, note.visible_to) == ("private", "ada")
    assert judge.visibility == "observer" and judge.meta == {"round": 1}
    assert judge.step_scores == [{"token": "ahead", "uncertainty": 0.1}]
    assert session.created_at.tzinfo is not None
    assert session.updated_at >= session.created_at


def test_list_sessions_filters_and_puts_newest_first(store: Store) -> None:
    first = store.create_session("debate").id
    second = store.create_session("story").id
    third = store.create_session("debate").id
    store.set_status(first, "completed")
    assert [s.id for s in store.list_sessions()] == [third, second, first]
    assert [s.id for s in store.list_sessions(room="debate")] == [third, first]
    assert [s.id for s in store.list_sessions(status="completed")] == [first]
    assert [s.id for s in store.list_sessions(room="debate", status="running")] == [third]
    assert [s.id for s in store.list_sessions(limit=1)] == [third]


def test_idempotency_key_returns_the_stored_message(store: Store) -> None:
    session_id = store.create_session("story").id
    first = store.append_message(session_id, role="user", content="once", idempotency_key="s1")
    again = store.append_message(session_id, role="user", content="twice", idempotency_key="s1")
    later = store.append_message(session_id, role="user", content="next", idempotency_key="s2")
    assert (again.id, again.seq, again.content) == (first.id, 1, "once")
    assert later.seq == 2


def test_artifacts_are_hashed_inline_or_by_path(store: Store, tmp_path: Path) -> None:
    session_id = store.create_session("design").id
    layout = tmp_path / "layout.json"
    layout.write_text('{"boxes": []}')
    inline = store.add_artifact(session_id, kind="image", name="a.png", mime="image/png", data=b"x")
    linked = store.add_artifact(
        session_id, kind="layout", name="layout", mime="application/json", path=layout
    )
    assert (inline.sha256, inline.size, inline.path) == (hashlib.sha256(b"x").hexdigest(), 1, None)
    assert linked.sha256 == hashlib.sha256(layout.read_bytes()).hexdigest()
    assert (linked.data, linked.path) == (None, str(layout.resolve()))
    assert [a.name for a in store.load(session_id).artifacts] == ["a.png", "layout"]


def test_export_json_holds_the_whole_session(store: Store) -> None:
    session_id = _debate(store)
    exported = json.loads(store.export_transcript(session_id, "json"))
    assert exported["id"] == session_id and exported["title"] == "Tabs or spaces"
    assert [p["name"] for p in exported["participants"]] == ["ada", "bob"]
    assert [(m["seq"], m["participant"], m["visibility"]) for m in exported["messages"]] == [
        (1, None, "public"),
        (2, "ada", "public"),
        (3, "bob", "private"),
        (4, "judge", "observer"),
    ]
    assert exported["messages"][1]["step_scores"] == [0.9, 0.8]
    assert exported["artifacts"][0]["sha256"] == hashlib.sha256(b"png!").hexdigest()


def test_export_markdown_reads_as_a_transcript(store: Store) -> None:
    session_id = _debate(store)
    markdown = store.export_transcript(session_id, "markdown")
    assert markdown.startswith("# Tabs or spaces\n")
    assert "- **ada**: proponent" in markdown
    assert "### 1. system (system)\n\nDebate: tabs versus spaces." in markdown
    assert "### 3. bob (assistant) _(private to ada)_" in markdown
    assert "### 4. judge (assistant) _(observers only)_" in markdown
    assert "- score.png (image, image/png, 4 bytes" in markdown
    with pytest.raises(StorageError, match="unknown transcript format 'html'"):
        store.export_transcript(session_id, "html")  # type: ignore[arg-type]


def test_search_stems_words_and_filters_by_room(store: Store) -> None:
    debate = _debate(store)
    story = store.create_session("story").id
    store.append_message(
        story, role="assistant", content="Once upon a time, readers were choosing tabs."
    )
    hits = store.search_messages("reader choosing")
    assert {(m.session_id, m.seq) for m in hits} == {(debate, 2), (story, 1)}
    assert [m.session.room for m in store.search_messages("tabs", room="story")] == ["story"]
    assert store.search_messages("spaceships") == []
    assert store.search_messages("  ") == []
    # Search syntax in user input is taken literally instead of failing.
    assert [m.seq for m in store.search_messages('"versus" tabs* (spaces')] == [1]


def test_delete_cascades_to_everything_in_the_session(store: Store) -> None:
    doomed = _debate(store)
    kept = _debate(store)
    dataset = store.create_dataset("pairs", room="debate", config={"n": 1})
    item = store.add_dataset_item(dataset.id, payload={"q": "tabs?"}, session_id=doomed)
    store.delete_session(doomed)
    with pytest.raises(NotFoundError, match=doomed):
        store.load(doomed)
    with store.reading() as db:
        for model in (Participant, Message, Artifact):
            counts = dict(
                db.execute(select(model.session_id, func.count()).group_by(model.session_id)).all()
            )
            assert counts == {kept: len(getattr(store.load(kept), model.__tablename__))}
        assert db.get(DatasetItem, item.id).session_id is None
    assert store.search_messages("concede") != []
    assert {m.session_id for m in store.search_messages("concede")} == {kept}


def test_datasets_and_eval_runs(store: Store) -> None:
    session_id = store.create_session("debate").id
    dataset = store.create_dataset("debates-v1", room="debate", config={"model": "small"})
    first = store.add_dataset_item(dataset.id, payload={"winner": "ada"}, session_id=session_id)
    second = store.add_dataset_item(dataset.id, payload={"winner": "bob"})
    run = store.record_eval_run("nightly", room="debate", metrics={"accuracy": 0.75})
    assert (dataset.name, dataset.room, dataset.config) == (
        "debates-v1",
        "debate",
        {"model": "small"},
    )
    assert (first.session_id, second.session_id) == (session_id, None)
    assert (run.name, run.metrics) == ("nightly", {"accuracy": 0.75})
    with pytest.raises(NotFoundError, match="no dataset with id 999"):
        store.add_dataset_item(999, payload={})
    with pytest.raises(StorageError, match="database error"):
        store.create_dataset("debates-v1", room="debate")


def test_invalid_values_name_the_problem(store: Store) -> None:
    session_id = store.create_session("debate").id
    with pytest.raises(StorageError, match="invalid session status 'done'; expected one of"):
        store.set_status(session_id, "done")
    with pytest.raises(StorageError, match="invalid visibility 'secret'"):
        store.append_message(session_id, role="user", content="x", visibility="secret")
    with pytest.raises(StorageError, match="private message needs visible_to"):
        store.append_message(session_id, role="user", content="x", visibility="private")
    with pytest.raises(StorageError, match="give exactly one of data= or path="):
        store.add_artifact(session_id, kind="image", name="none", mime="image/png")
    with pytest.raises(NotFoundError, match="no session with id 'missing'"):
        store.append_message("missing", role="user", content="x")


def test_checkpointer_shares_the_store_database(store: Store) -> None:
    with store.checkpointer() as checkpointer:
        assert isinstance(checkpointer, SqliteSaver | PostgresSaver)
        config = {"configurable": {"thread_id": "t1", "checkpoint_ns": ""}}
        assert checkpointer.get_tuple(config) is None
    with store.reading() as db:
        tables = set(db.connection().dialect.get_table_names(db.connection()))
    assert {"checkpoints", "sessions", "messages"} <= tables


@pytest.mark.parametrize("url", ["notadb://x", "not a url at all", "sqlite://", "mysql://h/db"])
def test_malformed_urls_are_config_errors(url: str) -> None:
    with pytest.raises(ConfigError, match="database URL"):
        Store.open(url)


def test_unopenable_sqlite_file_is_named(tmp_path: Path) -> None:
    path = tmp_path / "no such dir" / "x.db"
    with pytest.raises(StorageError, match=f"cannot open SQLite file {path}"):
        Store.open(f"sqlite:///{path}")


def test_unreachable_server_fails_fast_naming_host_and_port() -> None:
    url = "postgresql://postgres@127.0.0.1:1/manyheads"
    started = time.monotonic()
    with pytest.raises(StorageError, match="cannot connect to PostgreSQL at 127.0.0.1:1"):
        Store.open(url)
    with pytest.raises(StorageError, match="cannot connect to PostgreSQL at 127.0.0.1:1"):
        with open_checkpointer(url):
            pass
    assert time.monotonic() - started < 10


def test_locked_sqlite_file_is_reported_by_name(tmp_path: Path) -> None:
    path = tmp_path / "busy.db"
    with Store.open(f"sqlite:///{path}", busy_timeout_s=0.05) as store:
        session_id = store.create_session("debate").id
        holder = sqlite3.connect(path, isolation_level=None)
        holder.execute("BEGIN EXCLUSIVE")
        try:
            with pytest.raises(StorageError, match=f"database is locked: {path}"):
                store.append_message(session_id, role="user", content="blocked")
        finally:
            holder.execute("ROLLBACK")
            holder.close()
        assert store.append_message(session_id, role="user", content="free again").seq == 1


def test_default_store_is_a_file_in_manyheads_home(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "MANYHEADS_DATABASE_URL"}
    env["MANYHEADS_HOME"] = str(tmp_path / "home")
    code = "from manyheads.storage import Store; print(Store.open().url.database)"
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    assert done.stdout.strip() == str(tmp_path / "home" / "manyheads.db")
    assert (tmp_path / "home" / "manyheads.db").exists()


def test_db_commands(db_url: str) -> None:
    runner = CliRunner()

    def db(*args: str) -> str:
        result = runner.invoke(db_app, [*args, "--url", db_url])
        assert result.exit_code == 0, result.output
        return result.output

    assert "schema at revision 0003" in db("upgrade")
    assert "current: 0003" in db("current")
    with Store.open(db_url) as store:
        session_id = _debate(store)
    assert session_id in db("sessions", "--room", "debate")
    assert session_id not in db("sessions", "--room", "story")
    assert json.loads(db("export", session_id))["id"] == session_id
    assert db("export", session_id, "--format", "markdown").startswith("# Tabs or spaces")
    assert session_id in db("search", "concede")
    assert session_id not in db("search", "spaceships")
    assert "schema at revision base" in db("downgrade", "base")

    missing = runner.invoke(db_app, ["export", "nope", "--url", db_url])
    assert missing.exit_code == 1
    assert "error: " in missing.output and "no session with id 'nope'" in missing.output
