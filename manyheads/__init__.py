"""manyheads: multi-agent LLM rooms on one engine, with draft heads and uncertainty heads.

Everything needed to build and run a room::

    import manyheads as mh

    engine = mh.make_engine("local")            # or "vllm", or "openai" for a stronger model
    with mh.Store.open() as store:
        room = mh.get_room("demo")               # any registered room, built-in or your own
        session = room.converse(engine, store, None, "bicycles in cities")
        room.converse(engine, store, session, "What about rain?")   # remembers the first turn

A room of your own is a state (``RoomState`` plus your keys), module-level nodes that read
``runtime.context`` (a ``RoomContext``) and return ``{"said": [say(...)]}``, one
``build_graph()`` and a ``Room(...)`` registered under the ``manyheads.rooms`` entry-point group:
see ``examples/debate`` and the README's "Write your own room".
"""

from manyheads.agents import Agent, AgentSpec, Turn
from manyheads.agents.prompts import Prompts
from manyheads.errors import ConfigError, ManyheadsError
from manyheads.models import Engine, SamplingParams, make_engine
from manyheads.orchestration.contract import Room
from manyheads.orchestration.conversation import ChatOptions, Listener
from manyheads.orchestration.registry import get_room, room_errors, rooms
from manyheads.orchestration.room import (
    RoomContext,
    RoomState,
    context_of,
    history_turns,
    say,
    status,
    utter,
    with_earlier,
)
from manyheads.storage import Store

__all__ = [
    "Agent", "AgentSpec", "ChatOptions", "ConfigError", "Engine", "Listener", "ManyheadsError",
    "Prompts", "Room", "RoomContext", "RoomState", "SamplingParams", "Store", "Turn",
    "context_of", "get_room", "history_turns", "make_engine", "room_errors", "rooms", "say",
    "status", "utter", "with_earlier",
]
