"""Queries and writes over the store, as plain functions of a SQLAlchemy ``Session``.

The caller owns the transaction: these functions flush but never commit, so several of them
can be combined atomically. ``Store`` in ``store.py`` wraps each in its own short transaction
with retries; use that unless you need to group writes.

Writers that append messages must run in a write transaction: ``Store.transaction()`` starts
SQLite transactions with ``BEGIN IMMEDIATE``; on PostgreSQL ``append_message`` locks the
session row itself.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any, Literal

from sqlalchemy import column, func, literal_column, select, table
from sqlalchemy import orm as sa_orm
from sqlalchemy.orm import selectinload

from manyheads.errors import StorageError
from manyheads.storage.models import (
    Artifact,
    Dataset,
    DatasetItem,
    EvalRun,
    Message,
    Participant,
    Session,
    SessionStatus,
    Visibility,
    utcnow,
)

TranscriptFormat = Literal["json", "markdown"]


class NotFoundError(StorageError):
    """A session or dataset id that is not in the store."""


def create_session(
    db: sa_orm.Session,
    *,
    room: str,
    title: str = "",
    config: dict[str, Any] | None = None,
    status: str = SessionStatus.RUNNING,
) -> Session:
    row = Session(room=room, title=title, config=config or {}, status=_status(status))
    db.add(row)
    db.flush()
    return row


def get_session(db: sa_orm.Session, session_id: str, *, with_messages: bool = False) -> Session:
    """One session; ``with_messages`` also loads participants, messages (by seq) and artifacts."""
    query = select(Session).where(Session.id == session_id)
    if with_messages:
        query = query.options(
            selectinload(Session.participants),
            selectinload(Session.messages),
            selectinload(Session.artifacts),
        )
    row = db.scalars(query).one_or_none()
    if row is None:
        raise NotFoundError(f"no session with id {session_id!r}")
    return row


def list_sessions(
    db: sa_orm.Session,
    *,
    room: str | None = None,
    status: str | None = None,
    limit: int | None = None,
) -> list[Session]:
    """Sessions newest first, optionally only one room's and/or one status."""
    query = select(Session).order_by(Session.created_at.desc(), Session.id)
    if room is not None:
        query = query.where(Session.room == room)
    if status is not None:
        query = query.where(Session.status == _status(status))
    return list(db.scalars(query.limit(limit)))


def set_status(db: sa_orm.Session, session_id: str, status: str) -> Session:
    row = get_session(db, session_id)
    row.status = _status(status)
    db.flush()
    return row


def add_participant(
    db: sa_orm.Session,
    session_id: str,
    *,
    name: str,
    role: str,
    spec: dict[str, Any] | None = None,
) -> Participant:
    row = Participant(session=get_session(db, session_id), name=name, role=role, spec=spec or {})
    db.add(row)
    db.flush()
    return row


def append_message(
    db: sa_orm.Session,
    session_id: str,
    *,
    role: str,
    content: str,
    participant: str | None = None,
    visibility: str = Visibility.PUBLIC,
    visible_to: str | None = None,
    step_scores: list[Any] | None = None,
    prompt_tokens: int = 0,
    completion_tokens: int = 0,
    meta: dict[str, Any] | None = None,
    idempotency_key: str | None = None,
) -> Message:
    """Append a message with the session's next ``seq``.

    The session row is locked first (``SELECT ... FOR UPDATE`` on PostgreSQL; on SQLite the
    enclosing ``BEGIN IMMEDIATE`` already serialises writers), so concurrent appenders queue up
    and ``max(seq) + 1`` never hands out a number twice or skips one. With an
    ``idempotency_key``, appending again returns the stored message unchanged: a step replayed
    after a crash does not say the same thing twice.
    """
    visibility = _visibility(visibility, visible_to)
    session = db.scalars(
        select(Session).where(Session.id == session_id).with_for_update()
    ).one_or_none()
    if session is None:
        raise NotFoundError(f"no session with id {session_id!r}")
    if idempotency_key is not None:
        existing = db.scalars(
            select(Message).where(
                Message.session_id == session_id, Message.idempotency_key == idempotency_key
            )
        ).one_or_none()
        if existing is not None:
            return existing
    last = db.scalar(select(func.max(Message.seq)).where(Message.session_id == session_id))
    row = Message(
        session_id=session_id,
        seq=(last or 0) + 1,
        participant=participant,
        role=role,
        content=content,
        visibility=visibility,
        visible_to=visible_to,
        step_scores=step_scores,
        prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens,
        meta=meta or {},
        idempotency_key=idempotency_key,
    )
    db.add(row)
    session.updated_at = utcnow()
    db.flush()
    return row


def add_artifact(
    db: sa_orm.Session,
    session_id: str,
    *,
    kind: str,
    name: str,
    mime: str,
    data: bytes | None = None,
    path: str | Path | None = None,
    meta: dict[str, Any] | None = None,
) -> Artifact:
    """Store ``data`` inline, or record ``path`` by reference; either way hash the content."""
    if data is not None and path is None:
        content = data
    elif path is not None and data is None:
        try:
            content = Path(path).read_bytes()
        except OSError as exc:
            raise StorageError(f"artifact {name!r}: cannot read {path}: {exc.strerror}") from None
    else:
        raise StorageError(f"artifact {name!r}: give exactly one of data= or path=")
    row = Artifact(
        session=get_session(db, session_id),
        kind=kind,
        name=name,
        mime=mime,
        data=data,
        path=str(Path(path).resolve()) if path is not None else None,
        sha256=hashlib.sha256(content).hexdigest(),
        size=len(content),
        meta=meta or {},
    )
    db.add(row)
    db.flush()
    return row


def delete_session(db: sa_orm.Session, session_id: str) -> None:
    """Delete a session; the database cascades to its participants, messages and artifacts."""
    db.delete(get_session(db, session_id))
    db.flush()


def search_messages(
    db: sa_orm.Session, query: str, *, room: str | None = None, limit: int = 20
) -> list[Message]:
    """Messages whose content matches every word of ``query``, best match first.

    PostgreSQL uses the GIN-indexed ``to_tsvector('english', content)``; SQLite the FTS5 table
    kept by triggers. Both stem English words, so "plans" finds "planning".
    """
    words = re.findall(r"\w+", query)
    if not words:
        return []
    if db.get_bind().dialect.name == "postgresql":
        config = literal_column("'english'::regconfig")
        vector = func.to_tsvector(config, Message.content)
        tsquery = func.plainto_tsquery(config, " ".join(words))
        stmt = (
            select(Message)
            .where(vector.op("@@")(tsquery))
            .order_by(func.ts_rank(vector, tsquery).desc(), Message.id)
        )
    else:
        # Quoting each word keeps FTS5 operators (AND, NEAR, *, :) in user input literal.
        match = " ".join(f'"{word}"' for word in words)
        fts = table("messages_fts", column("rowid"), column("rank"))
        stmt = (
            select(Message)
            .join(fts, fts.c.rowid == Message.id)
            .where(literal_column("messages_fts").op("MATCH")(match))
            .order_by(fts.c.rank, Message.id)
        )
    if room is not None:
        stmt = stmt.join(Session).where(Session.room == room)
    return list(db.scalars(stmt.options(selectinload(Message.session)).limit(limit)))


def export_transcript(
    db: sa_orm.Session, session_id: str, format: TranscriptFormat = "json"
) -> str:
    """The whole session as JSON (lossless, for tools) or Markdown (for people)."""
    session = get_session(db, session_id, with_messages=True)
    if format == "json":
        return json.dumps(_session_dict(session), indent=2, ensure_ascii=False)
    if format == "markdown":
        return _markdown(session)
    raise StorageError(f"unknown transcript format {format!r}; expected 'json' or 'markdown'")


def create_dataset(
    db: sa_orm.Session, *, name: str, room: str, config: dict[str, Any] | None = None
) -> Dataset:
    row = Dataset(name=name, room=room, config=config or {})
    db.add(row)
    db.flush()
    return row


def add_dataset_item(
    db: sa_orm.Session,
    dataset_id: int,
    *,
    payload: dict[str, Any],
    session_id: str | None = None,
) -> DatasetItem:
    if db.get(Dataset, dataset_id) is None:
        raise NotFoundError(f"no dataset with id {dataset_id!r}")
    if session_id is not None:
        get_session(db, session_id)
    row = DatasetItem(dataset_id=dataset_id, session_id=session_id, payload=payload)
    db.add(row)
    db.flush()
    return row


def record_eval_run(
    db: sa_orm.Session, *, name: str, room: str, metrics: dict[str, Any]
) -> EvalRun:
    row = EvalRun(name=name, room=room, metrics=metrics)
    db.add(row)
    db.flush()
    return row


def _status(value: str) -> str:
    try:
        return SessionStatus(value).value
    except ValueError:
        allowed = ", ".join(s.value for s in SessionStatus)
        raise StorageError(f"invalid session status {value!r}; expected one of {allowed}") from None


def _visibility(value: str, visible_to: str | None) -> str:
    try:
        visibility = Visibility(value)
    except ValueError:
        allowed = ", ".join(v.value for v in Visibility)
        raise StorageError(f"invalid visibility {value!r}; expected one of {allowed}") from None
    if (visibility is Visibility.PRIVATE) != (visible_to is not None):
        raise StorageError(
            f"visibility {visibility.value!r} with visible_to={visible_to!r}: a private message "
            "needs visible_to (its one reader), and only a private message may have it"
        )
    return visibility.value


def _session_dict(session: Session) -> dict[str, Any]:
    return {
        "id": session.id,
        "room": session.room,
        "title": session.title,
        "status": session.status,
        "config": session.config,
        "created_at": session.created_at.isoformat(),
        "updated_at": session.updated_at.isoformat(),
        "participants": [
            {"name": p.name, "role": p.role, "spec": p.spec} for p in session.participants
        ],
        "messages": [
            {
                "seq": m.seq,
                "participant": m.participant,
                "role": m.role,
                "content": m.content,
                "visibility": m.visibility,
                "visible_to": m.visible_to,
                "step_scores": m.step_scores,
                "prompt_tokens": m.prompt_tokens,
                "completion_tokens": m.completion_tokens,
                "meta": m.meta,
                "created_at": m.created_at.isoformat(),
            }
            for m in session.messages
        ],
        "artifacts": [
            {
                "kind": a.kind,
                "name": a.name,
                "mime": a.mime,
                "sha256": a.sha256,
                "size": a.size,
                "path": a.path,
                "meta": a.meta,
            }
            for a in session.artifacts
        ],
    }


def _markdown(session: Session) -> str:
    lines = [
        f"# {session.title or session.room}",
        "",
        f"- Session: `{session.id}`",
        f"- Room: {session.room}",
        f"- Status: {session.status}",
        f"- Started: {session.created_at:%Y-%m-%d %H:%M:%S} UTC",
    ]
    if session.participants:
        lines += ["", "## Participants", ""]
        lines += [f"- **{p.name}**: {p.role}" for p in session.participants]
    lines += ["", "## Transcript"]
    for m in session.messages:
        speaker = m.participant or "system"
        note = {
            Visibility.PRIVATE.value: f" _(private to {m.visible_to})_",
            Visibility.OBSERVER.value: " _(observers only)_",
        }.get(m.visibility, "")
        lines += ["", f"### {m.seq}. {speaker} ({m.role}){note}", "", m.content]
    if session.artifacts:
        lines += ["", "## Artifacts", ""]
        lines += [
            f"- {a.name} ({a.kind}, {a.mime}, {a.size} bytes, sha256 `{a.sha256[:12]}`)"
            for a in session.artifacts
        ]
    return "\n".join(lines) + "\n"
