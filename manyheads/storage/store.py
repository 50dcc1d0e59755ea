"""``Store``: the one object rooms, the CLI and the UI use to persist sessions.

Each method is one short transaction, so a crash loses at most the message being written and
never leaves half a step behind. Writes are retried a bounded number of times when another
writer holds a lock (SQLite) or wins a deadlock (PostgreSQL); the busy timeout is the first line
of defence and the retries the second. Returned rows are detached but fully loaded (the
sessionmaker does not expire them on commit); ``load`` also brings a session's messages.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self, TypeVar

from sqlalchemy import URL, Engine
from sqlalchemy import orm as sa_orm
from sqlalchemy.exc import DBAPIError, SQLAlchemyError

from manyheads.storage import repository as repo
from manyheads.storage.engine import (
    DEFAULT_BUSY_TIMEOUT_S,
    WRITE_OPTION,
    create_store_engine,
    is_transient,
    resolve_url,
    storage_error,
    translating,
)
from manyheads.storage.migrate import ensure_current
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
)

if TYPE_CHECKING:
    from langgraph.checkpoint.base import BaseCheckpointSaver

WRITE_ATTEMPTS = 5

T = TypeVar("T")


class Store:
    """Owns the engine and sessionmakers for one database; see ``Store.open``."""

    def __init__(
        self, engine: Engine, url: URL, *, busy_timeout_s: float = DEFAULT_BUSY_TIMEOUT_S
    ) -> None:
        self.engine = engine
        self.url = url
        self.busy_timeout_s = busy_timeout_s
        self._reader = sa_orm.sessionmaker(engine, expire_on_commit=False)
        self._writer = sa_orm.sessionmaker(
            engine.execution_options(**{WRITE_OPTION: True}), expire_on_commit=False
        )

    @classmethod
    def open(
        cls, url: str | URL | Path | None = None, *, busy_timeout_s: float = DEFAULT_BUSY_TIMEOUT_S
    ) -> Store:
        """Connect and check the schema: an empty database is migrated, an old one refused.

        ``url`` defaults to ``MANYHEADS_DATABASE_URL``, else ``<MANYHEADS_HOME>/manyheads.db``.
        """
        resolved = resolve_url(url)
        engine = create_store_engine(resolved, busy_timeout_s=busy_timeout_s)
        try:
            ensure_current(engine, resolved)
        except BaseException:
            engine.dispose()
            raise
        return cls(engine, resolved, busy_timeout_s=busy_timeout_s)

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def checkpointer(self) -> AbstractContextManager[BaseCheckpointSaver[str]]:
        """A LangGraph checkpointer on this store's database (see ``open_checkpointer``)."""
        # Imported here so that the store and `manyheads db` start without LangGraph (~0.5 s).
        from manyheads.storage.checkpoint import open_checkpointer

        return open_checkpointer(self.url, busy_timeout_s=self.busy_timeout_s)

    @contextmanager
    def reading(self) -> Iterator[sa_orm.Session]:
        """A read-only unit of work for the functions in ``repository``."""
        with translating(self.url), self._reader() as db:
            yield db

    @contextmanager
    def transaction(self) -> Iterator[sa_orm.Session]:
        """A write transaction, committed when the block ends without an exception.

        Not retried (the block cannot be replayed for you); prefer the methods below.
        """
        with translating(self.url), self._writer.begin() as db:
            yield db

    def create_session(
        self,
        room: str,
        *,
        title: str = "",
        config: dict[str, Any] | None = None,
        status: str = SessionStatus.RUNNING,
    ) -> Session:
        return self._write(
            lambda db: repo.create_session(db, room=room, title=title, config=config, status=status)
        )

    def get_session(self, session_id: str) -> Session:
        return self._read(lambda db: repo.get_session(db, session_id))

    def load(self, session_id: str) -> Session:
        """A session with its participants, messages (in ``seq`` order) and artifacts."""
        return self._read(lambda db: repo.get_session(db, session_id, with_messages=True))

    def list_sessions(
        self, *, room: str | None = None, status: str | None = None, limit: int | None = None
    ) -> list[Session]:
        return self._read(lambda db: repo.list_sessions(db, room=room, status=status, limit=limit))

    def set_status(self, session_id: str, status: str) -> Session:
        return self._write(lambda db: repo.set_status(db, session_id, status))

    def add_participant(
        self, session_id: str, *, name: str, role: str, spec: dict[str, Any] | None = None
    ) -> Participant:
        return self._write(
            lambda db: repo.add_participant(db, session_id, name=name, role=role, spec=spec)
        )

    def append_message(
        self,
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
        """Append with the next gapless ``seq``; see ``repository.append_message``."""
        return self._write(
            lambda db: repo.append_message(
                db,
                session_id,
                role=role,
                content=content,
                participant=participant,
                visibility=visibility,
                visible_to=visible_to,
                step_scores=step_scores,
                prompt_tokens=prompt_tokens,
                completion_tokens=completion_tokens,
                meta=meta,
                idempotency_key=idempotency_key,
            )
        )

    def add_artifact(
        self,
        session_id: str,
        *,
        kind: str,
        name: str,
        mime: str,
        data: bytes | None = None,
        path: str | Path | None = None,
        meta: dict[str, Any] | None = None,
    ) -> Artifact:
        return self._write(
            lambda db: repo.add_artifact(
                db, session_id, kind=kind, name=name, mime=mime, data=data, path=path, meta=meta
            )
        )

    def delete_session(self, session_id: str) -> None:
        self._write(lambda db: repo.delete_session(db, session_id))

    def export_transcript(self, session_id: str, format: repo.TranscriptFormat = "json") -> str:
        return self._read(lambda db: repo.export_transcript(db, session_id, format))

    def search_messages(
        self, query: str, *, room: str | None = None, limit: int = 20
    ) -> list[Message]:
        """Full-text search; each result's ``session`` is loaded too."""
        return self._read(lambda db: repo.search_messages(db, query, room=room, limit=limit))

    def create_dataset(
        self, name: str, *, room: str, config: dict[str, Any] | None = None
    ) -> Dataset:
        return self._write(lambda db: repo.create_dataset(db, name=name, room=room, config=config))

    def add_dataset_item(
        self, dataset_id: int, *, payload: dict[str, Any], session_id: str | None = None
    ) -> DatasetItem:
        return self._write(
            lambda db: repo.add_dataset_item(db, dataset_id, payload=payload, session_id=session_id)
        )

    def record_eval_run(self, name: str, *, room: str, metrics: dict[str, Any]) -> EvalRun:
        return self._write(
            lambda db: repo.record_eval_run(db, name=name, room=room, metrics=metrics)
        )

    def _read(self, work: Callable[[sa_orm.Session], T]) -> T:
        with self.reading() as db:
            return work(db)

    def _write(self, work: Callable[[sa_orm.Session], T]) -> T:
        """Run ``work`` in a fresh write transaction, retrying lock conflicts with backoff."""
        attempt = 1
        while True:
            try:
                with self._writer.begin() as db:
                    return work(db)
            except DBAPIError as exc:
                if attempt >= WRITE_ATTEMPTS or not is_transient(exc):
                    raise storage_error(exc, self.url) from exc
            except SQLAlchemyError as exc:
                raise storage_error(exc, self.url) from exc
            time.sleep(random.uniform(0.5, 1.0) * 0.05 * 2**attempt)
            attempt += 1
