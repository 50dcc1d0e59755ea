"""Durable sessions: transcripts, artifacts, datasets and LangGraph checkpoints in one database.

SQLite by default (``<MANYHEADS_HOME>/manyheads.db``), PostgreSQL when ``MANYHEADS_DATABASE_URL``
or an explicit URL says so. Start with ``Store.open()``; ``Store.checkpointer()`` (or
``manyheads.storage.checkpoint.open_checkpointer``) gives LangGraph a checkpointer on the same
database. This package does not import LangGraph until a checkpointer is asked for.
"""

from manyheads.storage.migrate import current_revision, downgrade, head_revision, upgrade
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
from manyheads.storage.repository import NotFoundError
from manyheads.storage.store import Store

__all__ = [
    "Artifact",
    "Dataset",
    "DatasetItem",
    "EvalRun",
    "Message",
    "NotFoundError",
    "Participant",
    "Session",
    "SessionStatus",
    "Store",
    "Visibility",
    "current_revision",
    "downgrade",
    "head_revision",
    "upgrade",
]
