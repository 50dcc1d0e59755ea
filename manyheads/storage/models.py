"""Typed SQLAlchemy models for durable sessions, datasets and evaluation runs.

The schema itself is owned by the Alembic migrations in ``migrations/versions``; these models
must describe the same tables (a test compares them). Columns are portable between SQLite and
PostgreSQL: JSON rather than JSONB, strings with CHECK constraints rather than native enums.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    JSON,
    CheckConstraint,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


class SessionStatus(StrEnum):
    RUNNING = "running"
    PAUSED = "paused"
    COMPLETED = "completed"
    FAILED = "failed"


class Visibility(StrEnum):
    """Who may read a message: everyone, one participant (``visible_to``), or only observers."""

    PUBLIC = "public"
    PRIVATE = "private"
    OBSERVER = "observer"


def utcnow() -> datetime:
    return datetime.now(UTC)


def new_id() -> str:
    return str(uuid.uuid4())


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC timestamps on both backends.

    SQLite has no timezone type and hands back naive values; tagging them as UTC on the way out
    makes exports and comparisons identical to PostgreSQL's ``timestamptz``.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}; store timestamps in UTC")
        return value.astimezone(UTC) if value is not None else None

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value


def _check_in(column: str, values: type[StrEnum]) -> str:
    return f"{column} IN ({', '.join(repr(v.value) for v in values)})"


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSON, list[Any]: JSON, datetime: UTCDateTime}


class Session(Base):
    """One run of a room: its configuration, lifecycle status and everything said in it."""

    __tablename__ = "sessions"
    __table_args__ = (
        CheckConstraint(_check_in("status", SessionStatus), name="ck_sessions_status"),
        Index("ix_sessions_room_created", "room", "created_at"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    room: Mapped[str] = mapped_column(String(100))
    title: Mapped[str] = mapped_column(String(200), default="")
    config: Mapped[dict[str, Any]] = mapped_column(default=dict)
    status: Mapped[str] = mapped_column(String(16), default=SessionStatus.RUNNING.value)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    # passive_deletes: the database's ON DELETE CASCADE removes children without loading them.
    participants: Mapped[list[Participant]] = relationship(
        back_populates="session",
        cascade="all, delete-orphan",
        passive_deletes=True,
        order_by="Participant.id",
    )
    messages: Mapped[list[Message]] = relationship(
        back_populates="session",
        cascade="all, delete-orphan",
        passive_deletes=True,
        order_by="Message.seq",
    )
    artifacts: Mapped[list[Artifact]] = relationship(
        back_populates="session",
        cascade="all, delete-orphan",
        passive_deletes=True,
        order_by="Artifact.id",
    )


class Participant(Base):
    """An agent seated in a session, with the spec it was built from."""

    __tablename__ = "participants"
    __table_args__ = (UniqueConstraint("session_id", "name", name="uq_participants_session_name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    session_id: Mapped[str] = mapped_column(ForeignKey("sessions.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(100))
    role: Mapped[str] = mapped_column(String(100))
    spec: Mapped[dict[str, Any]] = mapped_column(default=dict)

    session: Mapped[Session] = relationship(back_populates="participants")


class Message(Base):
    """One utterance; ``seq`` numbers a session's messages 1, 2, 3... with no gaps.

    ``idempotency_key`` lets a replayed step (after a crash, before its checkpoint was written)
    find the message it already stored instead of adding a second copy.
    """

    __tablename__ = "messages"
    __table_args__ = (
        UniqueConstraint("session_id", "seq", name="uq_messages_session_seq"),
        UniqueConstraint("session_id", "idempotency_key", name="uq_messages_session_key"),
        CheckConstraint(_check_in("visibility", Visibility), name="ck_messages_visibility"),
        CheckConstraint(
            "(visibility = 'private') = (visible_to IS NOT NULL)", name="ck_messages_visible_to"
        ),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    session_id: Mapped[str] = mapped_column(ForeignKey("sessions.id", ondelete="CASCADE"))
    seq: Mapped[int] = mapped_column(Integer)
    participant: Mapped[str | None] = mapped_column(String(100))
    role: Mapped[str] = mapped_column(String(32))
    content: Mapped[str] = mapped_column(Text)
    visibility: Mapped[str] = mapped_column(String(16), default=Visibility.PUBLIC.value)
    visible_to: Mapped[str | None] = mapped_column(String(100))
    # none_as_null: "no scores" is SQL NULL, not the JSON value null.
    step_scores: Mapped[list[Any] | None] = mapped_column(JSON(none_as_null=True))
    prompt_tokens: Mapped[int] = mapped_column(Integer, default=0)
    completion_tokens: Mapped[int] = mapped_column(Integer, default=0)
    meta: Mapped[dict[str, Any]] = mapped_column(default=dict)
    idempotency_key: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    session: Mapped[Session] = relationship(back_populates="messages")


class Artifact(Base):
    """A file a session produced, stored inline (``data``) or by reference (``path``)."""

    __tablename__ = "artifacts"
    __table_args__ = (
        CheckConstraint("(data IS NULL) <> (path IS NULL)", name="ck_artifacts_data_or_path"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    session_id: Mapped[str] = mapped_column(
        ForeignKey("sessions.id", ondelete="CASCADE"), index=True
    )
    kind: Mapped[str] = mapped_column(String(50))
    name: Mapped[str] = mapped_column(String(200))
    mime: Mapped[str] = mapped_column(String(100))
    data: Mapped[bytes | None] = mapped_column(LargeBinary)
    path: Mapped[str | None] = mapped_column(String(1000))
    sha256: Mapped[str] = mapped_column(String(64))
    size: Mapped[int] = mapped_column(Integer)
    meta: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    session: Mapped[Session] = relationship(back_populates="artifacts")


class Dataset(Base):
    """A named collection of examples generated by a room under a given configuration."""

    __tablename__ = "datasets"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    room: Mapped[str] = mapped_column(String(100))
    config: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    items: Mapped[list[DatasetItem]] = relationship(
        back_populates="dataset",
        cascade="all, delete-orphan",
        passive_deletes=True,
        order_by="DatasetItem.id",
    )


class DatasetItem(Base):
    """One example; keeps pointing at its dataset even if the source session is deleted."""

    __tablename__ = "dataset_items"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    dataset_id: Mapped[int] = mapped_column(
        ForeignKey("datasets.id", ondelete="CASCADE"), index=True
    )
    session_id: Mapped[str | None] = mapped_column(
        ForeignKey("sessions.id", ondelete="SET NULL"), index=True
    )
    payload: Mapped[dict[str, Any]] = mapped_column()
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    dataset: Mapped[Dataset] = relationship(back_populates="items")


class EvalRun(Base):
    """Metrics from one evaluation of a room."""

    __tablename__ = "eval_runs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    room: Mapped[str] = mapped_column(String(100), index=True)
    metrics: Mapped[dict[str, Any]] = mapped_column()
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class WorkStatus(StrEnum):
    PENDING = "pending"
    LEASED = "leased"
    DONE = "done"
    FAILED = "failed"


class WorkItem(Base):
    """One dataset item's place in the work ledger of a (possibly distributed) generation job.

    A worker claims a ``pending`` item, or a ``leased`` one whose lease expired (its worker
    died), by setting ``lease_owner`` and ``lease_expires_at``; it marks the item ``done`` in
    the same transaction that stores the dataset row, and only while it still holds the lease.
    ``worker`` names who finished it (the per-worker tally); ``session_id`` is the session the
    latest attempt writes into, deleted by whoever takes the item over.
    """

    __tablename__ = "work_items"
    __table_args__ = (
        UniqueConstraint("dataset_id", "key", name="uq_work_items_dataset_key"),
        CheckConstraint(_check_in("status", WorkStatus), name="ck_work_items_status"),
        Index("ix_work_items_dataset_status", "dataset_id", "status"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    dataset_id: Mapped[int] = mapped_column(ForeignKey("datasets.id", ondelete="CASCADE"))
    key: Mapped[str] = mapped_column(String(64))
    input: Mapped[dict[str, Any]] = mapped_column(default=dict)
    status: Mapped[str] = mapped_column(String(16), default=WorkStatus.PENDING.value)
    lease_owner: Mapped[str | None] = mapped_column(String(200))
    lease_expires_at: Mapped[datetime | None] = mapped_column()
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    worker: Mapped[str | None] = mapped_column(String(200))
    session_id: Mapped[str | None] = mapped_column(String(36))
    error: Mapped[str | None] = mapped_column(Text)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
