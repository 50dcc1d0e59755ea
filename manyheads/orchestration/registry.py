"""The room registry: the UI and CLI list rooms from here, never by importing them by name.

A room is a LangGraph builder, its pydantic config, a one-line description and (for rooms a person
can chat with) a ``converse`` function; rooms register themselves in ``ROOMS`` when their module is
imported by ``rooms()``.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass

from pydantic import BaseModel

from manyheads.errors import ConfigError

ROOM_MODULES = (
    "manyheads.orchestration.rooms.demo.graph",
    "manyheads.orchestration.rooms.spp.graph",
    "manyheads.orchestration.rooms.persuasion.graph",
    "manyheads.orchestration.rooms.studio.graph",
    "manyheads.orchestration.rooms.multiplex.graph",
)


@dataclass(frozen=True)
class Room:
    name: str
    description: str
    config: type[BaseModel]
    build: Callable[..., object]  # build(engine, config, *, checkpointer=None, ...) -> graph
    converse: Callable[..., str] | None = None  # chat entry point, see orchestration.conversation
    example: str = ""  # a first message that shows what the room does (demo runs, placeholders)


ROOMS: dict[str, Room] = {}


def register(room: Room) -> Room:
    if room.name in ROOMS and ROOMS[room.name] != room:
        raise ConfigError(f"two rooms are named {room.name!r}")
    ROOMS[room.name] = room
    return room


def rooms() -> dict[str, Room]:
    """Every room by name, in name order (not import order, which depends on the caller)."""
    for module in ROOM_MODULES:
        importlib.import_module(module)
    return dict(sorted(ROOMS.items()))


def get_room(name: str) -> Room:
    available = rooms()
    if name not in available:
        raise ConfigError(f"unknown room {name!r}: choose one of {', '.join(sorted(available))}")
    return available[name]
