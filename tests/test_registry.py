"""Room discovery: entry points and MANYHEADS_ROOMS; a broken plug-in is named, not fatal."""

from __future__ import annotations

from pathlib import Path

import pytest

from manyheads import ConfigError, Room, get_room, room_errors, rooms
from manyheads.orchestration.registry import discover

BUILT_IN = {"demo", "spp", "multiplex", "persuasion", "studio"}


def plug_in(root: Path, entries: dict[str, str]) -> None:
    """An installed distribution's metadata declaring ``entries`` (what pip would write)."""
    info = root / "broken_rooms-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: broken-rooms\nVersion: 0.1\n")
    lines = "".join(f"{name} = {value}\n" for name, value in entries.items())
    (info / "entry_points.txt").write_text(f"[manyheads.rooms]\n{lines}")


def test_built_in_rooms_register_through_their_entry_points():
    found = rooms()
    assert BUILT_IN <= set(found)
    assert all(isinstance(room, Room) for room in found.values())
    assert room_errors() == []


def test_broken_entry_points_are_named_and_the_rest_keep_working(tmp_path, monkeypatch):
    plug_in(tmp_path, {"missing": "no_such_module_xyz:ROOM",
                       "twin": "manyheads.orchestration.rooms.spp:ROOM",
                       "odd": "manyheads.orchestration.rooms.spp:SppConfig"})
    monkeypatch.syspath_prepend(str(tmp_path))
    found, errors = discover()
    assert BUILT_IN <= set(found)
    by_source = {e.source.split("'")[1]: e.message for e in errors}
    assert "ModuleNotFoundError" in by_source["missing"]
    assert "is a ModelMetaclass, not a Room" in by_source["odd"]
    # the same Room object declared twice is one room, not a clash
    assert "twin" not in by_source


def test_a_second_room_with_a_taken_name_is_refused(tmp_path, monkeypatch):
    impostor = tmp_path / "impostor_room.py"
    impostor.write_text("from manyheads.orchestration.rooms.demo import ROOM as _demo\n"
                        "import dataclasses\nROOM = dataclasses.replace(_demo)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("MANYHEADS_ROOMS", "impostor_room:ROOM, nonsense")
    found, errors = discover()
    assert found["demo"] is get_room("demo")
    messages = [f"{e.source}: {e.message}" for e in errors]
    assert any("impostor_room:ROOM" in m and "'demo' is already taken" in m for m in messages)
    assert any("'nonsense'" in m and "module:attribute" in m for m in messages)


def test_unknown_or_broken_room_names_are_clear(tmp_path, monkeypatch):
    with pytest.raises(ConfigError, match="unknown room 'nope'"):
        get_room("nope")
    plug_in(tmp_path, {"missing": "no_such_module_xyz:ROOM"})
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ConfigError, match="could not be loaded: entry point 'missing'"):
        get_room("missing")


def test_no_import_cycles_in_the_package():
    """Read from the source, function-level imports included; a package importing its own
    children (re-exports) or a module importing its parent package does not count."""
    import ast
    from graphlib import CycleError, TopologicalSorter

    root = Path(__file__).resolve().parent.parent / "manyheads"
    modules = {}
    for path in root.rglob("*.py"):
        parts = path.relative_to(root.parent).with_suffix("").parts
        modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    edges: dict[str, set[str]] = {}
    for module, path in modules.items():
        targets = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                targets.add(node.module)
                targets.update(f"{node.module}.{alias.name}" for alias in node.names)
        edges[module] = {t for t in targets if t in modules and t != module
                         and not module.startswith(t + ".") and not t.startswith(module + ".")}
    try:
        TopologicalSorter(edges).prepare()
    except CycleError as exc:
        pytest.fail(f"import cycle: {' -> '.join(exc.args[1])}")


def test_a_broken_plug_in_does_not_take_the_chat_app_down(tmp_path, monkeypatch):
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("MANYHEADS_DATABASE_URL", f"sqlite:///{tmp_path}/ui.db")
    monkeypatch.setenv("MANYHEADS_ROOMS", "no_such_module_xyz:ROOM")
    app = AppTest.from_file(str(Path(__file__).resolve().parent.parent / "manyheads" / "ui"
                                 / "app.py"), default_timeout=120)
    app.run()
    assert not app.exception
    assert any("no_such_module_xyz:ROOM" in w.value for w in app.warning)
    assert BUILT_IN <= set(app.selectbox(key="room").options)
