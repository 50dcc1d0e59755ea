"""The room contract, for every built-in room: crash-safe turns, memory, one stream path.

The kill tests are the real thing: a turn runs in its own interpreter on the embedded model and
gets SIGKILL as soon as its first agent message is stored; the resumed turn must store every
message exactly once and finish (SQLite, and PostgreSQL when the CI server is there).
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from storage_fixtures import BACKENDS, db_url  # noqa: F401 - fixture

from manyheads import ChatOptions, ConfigError, Store, get_room
from manyheads.models.engine import Engine

WORKER = Path(__file__).with_name("room_worker.py")
PANEL = """members:
  - {name: Stoic Teacher, tradition: Stoic philosophy, values: virtue and calm acceptance,
     voice: plain}
  - {name: Ubuntu Elder, tradition: Ubuntu, values: community and shared humanity, voice: warm}
"""
# Small settings that keep each room's turn to a few model calls on the CPU.
TINY = {
    "demo": {"turns": 3, "max_tokens": 24},
    "spp": {"max_rounds": 1, "max_tokens": 32, "note_tokens": 24},
    "multiplex": {"member_tokens": 24, "max_tokens": 40},
    "persuasion": {"max_turns": 1, "max_tokens": 24, "tom_max_tokens": 96},
    "studio": {"max_rounds": 1},
}
ROOMS = sorted(TINY)


def tiny(room: str, tmp_path: Path) -> dict:
    config = dict(TINY[room])
    if room == "multiplex":
        panel = tmp_path / "panel.yaml"
        panel.write_text(PANEL, encoding="utf-8")
        config["panel_file"] = str(panel)
    return config


def said_keys(store: Store, session_id: str) -> list[str]:
    return [m.idempotency_key for m in store.load(session_id).messages
            if m.role == "assistant"]


def checkpointed_said(store: Store, room: str, session_id: str) -> list[dict]:
    with store.checkpointer() as saver:
        graph = get_room(room).compile(saver)
        return graph.get_state({"configurable": {"thread_id": session_id}}).values["said"]


# Every room on SQLite; on PostgreSQL the room with the most nodes (the contract code is the same
# for every backend, the checkpointer and the store are what differ, and each copy costs ~30 s).
KILLS = [(room, "sqlite") for room in ROOMS] + [("persuasion", b) for b in BACKENDS[1:]]


@pytest.mark.slow
@pytest.mark.parametrize(("room", "db_url"), KILLS, indirect=["db_url"])
def test_a_turn_killed_mid_way_resumes_with_every_message_once(room, db_url, local_engine,  # noqa: F811
                                                             tmp_path):
    config = tiny(room, tmp_path)
    message = get_room(room).example
    Store.open(db_url).close()  # the schema first: the worker and this test then only read it
    worker = subprocess.Popen([sys.executable, str(WORKER), db_url, room, message,
                               json.dumps(config)], stdout=subprocess.PIPE, text=True)
    try:
        assert worker.stdout is not None and worker.stdout.readline().strip() == "started"
        with Store.open(db_url) as store:
            deadline = time.monotonic() + 600
            while time.monotonic() < deadline:
                sessions = store.list_sessions(room=room)
                if sessions and said_keys(store, sessions[0].id):
                    break
                assert worker.poll() is None, "the worker ended before it was killed"
                time.sleep(0.05)
            worker.send_signal(signal.SIGKILL)
            worker.wait(30)
            session_id = sessions[0].id
            before = said_keys(store, session_id)
            assert store.get_session(session_id).status == "running"  # cut off mid-turn

            get_room(room).resume(local_engine, store, session_id,
                                  options=ChatOptions(config=config))

            messages = store.load(session_id).messages
            keys = said_keys(store, session_id)
            assert [m.role for m in messages].count("user") == 1
            assert keys == [f"said-{i}" for i in range(len(keys))]  # none twice, none missing
            assert keys[:len(before)] == before and len(keys) > len(before)
            assert len(checkpointed_said(store, room, session_id)) == len(keys)
            assert store.get_session(session_id).status == "completed"
            with pytest.raises(ConfigError, match="no interrupted turn"):
                get_room(room).resume(local_engine, store, session_id)
    finally:
        if worker.poll() is None:
            worker.kill()


class RecordingEngine(Engine):
    """The real engine, keeping every conversation it was asked to continue."""

    def __init__(self, inner: Engine) -> None:
        self.inner, self.prompts = inner, []
        self.name, self.model_name = inner.name, inner.model_name

    def _run(self, requests):
        self.prompts += [r.prompt for r in requests]
        return self.inner._run(requests)

    def _stream(self, request):
        self.prompts.append(request.prompt)
        return self.inner._stream(request)

    def text(self) -> str:
        return " ".join(m["content"] if isinstance(m, dict) else str(m)
                        for prompt in self.prompts
                        for m in (prompt if isinstance(prompt, list) else [prompt]))


FOLLOW_UP = {"studio": "Add a small red ball next to them."}


@pytest.mark.slow
@pytest.mark.parametrize("room", ROOMS)
def test_a_follow_up_sees_the_earlier_turn(room, local_engine, tmp_path):
    engine = RecordingEngine(local_engine)
    options = ChatOptions(config=tiny(room, tmp_path))
    first = get_room(room).example
    with Store.open(f"sqlite:///{tmp_path / 'db.sqlite'}") as store:
        session_id = get_room(room).converse(engine, store, None, first, options=options)
        spoken = [m for m in store.load(session_id).messages if m.role == "assistant"
                  and m.visibility == "public" and m.participant not in ("Room", "Scene")]
        engine.prompts.clear()
        follow_up = FOLLOW_UP.get(room, "Now explain why, briefly.")
        get_room(room).converse(engine, store, session_id, follow_up, options=options)
        messages = store.load(session_id).messages
        users = [m for m in messages if m.role == "user"]
        assert [m.idempotency_key for m in users] == ["user-0", "user-1"]
        seen = engine.text()
        if room == "studio":  # the studio remembers its subjects: the dog is still there
            manager = [m for m in messages if m.participant == "Subject manager"][-1]
            assert "dog" in manager.content and "ball" in manager.content
            return
        assert follow_up in seen
        assert spoken[-1].content.strip()[:30] in seen  # what was said before is in view
        if room != "persuasion":  # persuasion carries the dialogue, not the topic line
            assert first in seen


class Events:
    def __init__(self) -> None:
        self.log: list[tuple[str, str]] = []

    def status(self, text: str) -> None:
        self.log.append(("status", text))

    def message(self, message) -> None:
        self.log.append(("message", message.idempotency_key or ""))

    def delta(self, speaker: str, text: str) -> None:
        self.log.append(("delta", speaker))


def test_stream_events_arrive_in_order(local_engine, tmp_path):
    events = Events()
    with Store.open(f"sqlite:///{tmp_path / 'db.sqlite'}") as store:
        get_room("demo").converse(local_engine, store, None, "tea or coffee",
                                  listener=events, options=ChatOptions(config=TINY["demo"]))
    stored = [key for kind, key in events.log if kind == "message"]
    assert stored == ["user-0", "said-0", "said-1", "said-2"]
    # each speaker's deltas come before the message that stores the speech
    first_said = events.log.index(("message", "said-0"))
    assert ("delta", "Ada") in events.log[:first_said]
    assert ("delta", "Basil") not in events.log[:first_said]


def test_bad_input_names_the_room_and_keeps_the_session(local_engine, tmp_path):
    with Store.open(f"sqlite:///{tmp_path / 'db.sqlite'}") as store:
        studio = store.create_session("studio", title="pictures").id
        with pytest.raises(ConfigError, match="belongs to room 'studio', not 'demo'"):
            get_room("demo").converse(local_engine, store, studio, "hello")
        with pytest.raises(ConfigError, match="room 'demo' config is invalid: turns"):
            get_room("demo").converse(local_engine, store, None, "hello",
                                      options=ChatOptions(config={"turns": 0}))
        with pytest.raises(ConfigError, match="empty"):
            get_room("demo").converse(local_engine, store, None, "   ")
        assert store.load(studio).messages == []
