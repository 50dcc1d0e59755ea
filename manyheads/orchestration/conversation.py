"""How a chat front end talks to a room: one user message in, stored agent messages out.

Every room that can be chatted with registers a ``converse`` function with this signature::

    converse(engine, store, session_id, text, *, listener, options) -> session_id

It creates the session when ``session_id`` is None, stores the user's message and every agent
message (observer-only material with ``visibility="observer"``, step scores in ``step_scores``,
images as artifacts), and reports each stored message to the listener as soon as it exists. The
store is the only record: a page reopened tomorrow renders the same session from it alone.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import Any, Protocol

from pydantic import BaseModel

from manyheads.models import Engine
from manyheads.storage import Store
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


Converse = Callable[..., str]  # see the module docstring for the signature


def open_session(store: Store, room: str, session_id: str | None, text: str,
                 config: BaseModel) -> str:
    """The session to talk in: the given one, or a new one titled by the first message."""
    if session_id is not None:
        store.get_session(session_id)
        return session_id
    title = " ".join(text.split())[:80] or room
    return store.create_session(room, title=title, config=config.model_dump(mode="json")).id


def store_user_message(store: Store, session_id: str, text: str, listener: Listener) -> Message:
    message = store.append_message(session_id, role="user", participant="you", content=text)
    listener.message(message)
    return message


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
