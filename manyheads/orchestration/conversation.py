"""What a front end gives a room turn and gets back: options in, listener events out.

``Room.converse(engine, store, session_id, text, listener=..., options=...)`` (see
``orchestration.contract``) reports every stored message, status line and token delta to a
``Listener``. The store is the only record: a page reopened tomorrow renders the same session
from it alone.
"""

from __future__ import annotations

import weakref
from typing import Any, Protocol

from pydantic import BaseModel

from manyheads.models import Engine
from manyheads.storage.models import Message


class Listener(Protocol):
    """What a room reports while it runs; the UI renders it, the CLI prints it."""

    def status(self, text: str) -> None:
        """A progress line ("the panel is answering")."""

    def message(self, message: Message) -> None:
        """A message that has just been stored."""

    def delta(self, speaker: str, text: str) -> None:
        """New tokens of a free-text turn ``speaker`` is still speaking."""


class Quiet:
    """A listener that ignores everything (batch runs, tests of the stored result)."""

    def status(self, text: str) -> None:
        pass

    def message(self, message: Message) -> None:
        pass

    def delta(self, speaker: str, text: str) -> None:
        pass


class ChatOptions(BaseModel):
    """Switches a chat front end offers for every room."""

    verify: bool = False  # score reasoning steps with the shipped StepVerifier
    config: dict[str, Any] = {}  # overrides of the room's own pydantic config



_VERIFIERS: weakref.WeakKeyDictionary[Engine, Any] = weakref.WeakKeyDictionary()


def step_verifier(engine: Engine):
    """The shipped StepVerifier, loaded once per engine.

    It reads a LocalEngine's own backbone when the engine is one; any other engine's text is
    scored on a separate embedded backbone (the head was trained on the embedded model).
    """
    from manyheads.models.local.engine import LocalEngine
    from manyheads.models.uhead.verifier import StepVerifier

    if engine not in _VERIFIERS:
        eager = getattr(getattr(engine, "model", None), "config", None)
        own = isinstance(engine, LocalEngine) and eager._attn_implementation == "eager"
        _VERIFIERS[engine] = StepVerifier.default(engine if own else None)
    return _VERIFIERS[engine]
