"""The room registry: the UI, the CLI, batch generation and ``langgraph.json`` list rooms here.

Rooms are found, built-in and user rooms alike, through the ``manyheads.rooms`` entry-point
group (``name = "package.module:ROOM"`` in a ``pyproject.toml``), plus ``MANYHEADS_ROOMS``
(comma-separated ``module:attr`` references) for scripts and rooms that are not installed. A room
that fails to load, is not a ``Room`` or reuses a taken name is left out with a ``RoomLoadError``
naming it; the other rooms keep working (``room_errors()`` lists what went wrong, the UI shows it).
"""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass
from importlib.metadata import entry_points

from manyheads.errors import ConfigError
from manyheads.orchestration.contract import Room

GROUP = "manyheads.rooms"
ENV = "MANYHEADS_ROOMS"


@dataclass(frozen=True)
class RoomLoadError:
    source: str  # the entry point or MANYHEADS_ROOMS item
    message: str


def _sources() -> list[tuple[str, str]]:
    """(where it was declared, ``module:attr``), entry points first."""
    found = [(f"entry point {ep.name!r} ({ep.value})", ep.value)
             for ep in sorted(entry_points(group=GROUP), key=lambda ep: ep.name)]
    for item in filter(None, (part.strip() for part in os.environ.get(ENV, "").split(","))):
        found.append((f"{ENV} item {item!r}", item))
    return found


def _load(reference: str) -> object:
    module, _, attr = reference.partition(":")
    if not module or not attr:
        raise ConfigError(f"{reference!r} is not of the form module:attribute")
    value: object = importlib.import_module(module)
    for part in attr.split("."):
        value = getattr(value, part)
    return value


def discover() -> tuple[dict[str, Room], list[RoomLoadError]]:
    """Every loadable room by name (in name order) and what could not be loaded."""
    loaded: dict[str, tuple[Room, str]] = {}
    errors: list[RoomLoadError] = []
    for source, reference in _sources():
        try:
            room = _load(reference)
        except Exception as exc:  # a broken plug-in must not take the others down
            errors.append(RoomLoadError(source, f"{type(exc).__name__}: {exc}"))
            continue
        if not isinstance(room, Room):
            errors.append(RoomLoadError(source, f"is a {type(room).__name__}, not a Room"))
        elif room.name in loaded and loaded[room.name][0] is not room:
            errors.append(RoomLoadError(source, f"room name {room.name!r} is already taken by "
                                                f"{loaded[room.name][1]}"))
        else:
            loaded.setdefault(room.name, (room, source))
    return {name: loaded[name][0] for name in sorted(loaded)}, errors


def rooms() -> dict[str, Room]:
    """Every room that loaded, by name."""
    return discover()[0]


def room_errors() -> list[RoomLoadError]:
    """Rooms that were declared but could not be loaded, with the reason."""
    return discover()[1]


def get_room(name: str) -> Room:
    found, errors = discover()
    if name in found:
        return found[name]
    broken = [e for e in errors if name in e.source]
    if broken:
        raise ConfigError(f"room {name!r} could not be loaded: {broken[0].source}: "
                          f"{broken[0].message}")
    raise ConfigError(f"unknown room {name!r}: choose one of {', '.join(found)}",
                      hint=f"install a package with a {GROUP!r} entry point or set {ENV}")
