"""The room contract: what every room gets done for it, once.

A room gives its name, its pydantic config and ``build_graph()`` (an uncompiled LangGraph
``StateGraph`` over a ``RoomState``). ``Room.converse`` then:

1. opens the session (or reopens it, checking that it belongs to this room) and stores the
   person's message under an idempotency key;
2. compiles the graph with the SQL checkpointer, ``thread_id`` = session id, so a session's state
   (e.g. the studio's subjects) carries over from turn to turn and process to process;
3. hands the turn its input: the message, its index and the session's earlier public turns
   (``history``), which is how every room remembers what was said before;
4. streams the run (LangGraph ``custom`` and ``values`` modes) to one ``Listener``: status lines,
   token deltas, and each ``said`` entry as soon as its step is checkpointed, stored with the key
   ``said-<index>`` so a replayed step never stores a message twice;
5. finishes an interrupted turn first: after a crash (even ``kill -9``) the next ``converse`` or
   ``resume`` continues from the last checkpoint, stores what the checkpoint holds but the store
   lacks, and runs any stored message whose turn never started.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from langgraph.graph import StateGraph
from pydantic import BaseModel, ValidationError

from manyheads.errors import ConfigError
from manyheads.models import Engine, telemetry
from manyheads.orchestration.conversation import ChatOptions, Listener, Quiet, step_verifier
from manyheads.orchestration.room import USER, RoomContext, Said
from manyheads.storage import Store
from manyheads.storage.models import Message


@dataclass(frozen=True)
class Room:
    """A room: register it under the ``manyheads.rooms`` entry-point group to list it everywhere.

    ``build_graph()`` returns the uncompiled graph; its state type extends ``RoomState`` and its
    nodes get their ``RoomContext`` with ``context_of(runtime, Config)``. ``example`` is a first
    message that shows what the room does (``manyheads demo``, the chat box placeholder).
    """

    name: str
    description: str
    config: type[BaseModel]
    build_graph: Callable[[], StateGraph]
    example: str = ""
    recursion_limit: int = 100  # graph steps per turn at most; every room loop is bounded below

    def compile(self, checkpointer: Any = None):
        return self.build_graph().compile(checkpointer=checkpointer)

    def converse(self, engine: Engine, store: Store, session_id: str | None, text: str, *,
                 listener: Listener | None = None, options: ChatOptions | None = None) -> str:
        """One message from the person; returns the session id (a new session when None).

        An interrupted earlier turn of the session is finished first.
        """
        if not text.strip():
            raise ConfigError("the message is empty")
        listener, options = listener or Quiet(), options or ChatOptions()
        session_id = self._open(store, session_id, text, options)
        turn = sum(m.role == "user" for m in store.load(session_id).messages)
        listener.message(store.append_message(session_id, role="user", participant=USER,
                                              content=text, idempotency_key=f"user-{turn}"))
        self._drive(engine, store, session_id, listener, options)
        return session_id

    def resume(self, engine: Engine, store: Store, session_id: str, *,
               listener: Listener | None = None, options: ChatOptions | None = None) -> str:
        """Finish the session's interrupted turn; an error when there is none."""
        listener, options = listener or Quiet(), options or ChatOptions()
        self._check_room(store, session_id)
        if not self._drive(engine, store, session_id, listener, options):
            raise ConfigError(f"session {session_id} of room {self.name!r} has no interrupted "
                              "turn to resume", hint="send a new message to continue it")
        return session_id

    # -- the runtime ------------------------------------------------------------------------------
    def _open(self, store: Store, session_id: str | None, text: str,
              options: ChatOptions) -> str:
        if session_id is not None:
            self._check_room(store, session_id)
            return session_id
        config = self._config({}, options)
        title = " ".join(text.split())[:80] or self.name
        return store.create_session(self.name, title=title,
                                    config=config.model_dump(mode="json")).id

    def _check_room(self, store: Store, session_id: str) -> None:
        session = store.get_session(session_id)
        if session.room != self.name:
            raise ConfigError(f"session {session_id} belongs to room {session.room!r}, "
                              f"not {self.name!r}")

    def _config(self, stored: dict[str, Any], options: ChatOptions) -> BaseModel:
        try:
            return self.config(**{**stored, **options.config})
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'config'}: {e['msg']}"
                                 for e in exc.errors())
            raise ConfigError(f"room {self.name!r} config is invalid: {problems}") from None

    def _drive(self, engine: Engine, store: Store, session_id: str, listener: Listener,
               options: ChatOptions) -> bool:
        """Run until every stored message of the person has its turn done; True if any ran."""
        session = store.load(session_id)
        ctx = RoomContext(engine=engine, config=self._config(session.config, options),
                          verifier=step_verifier(engine) if options.verify else None,
                          streaming=not isinstance(listener, Quiet))
        run = {"configurable": {"thread_id": session_id}, "recursion_limit": self.recursion_limit}
        ran = False
        store.set_status(session_id, "running")
        try:
            with store.checkpointer() as saver:
                graph = self.compile(saver)
                recorder = _Recorder(store, session_id, listener, session.messages,
                                     session.artifacts)
                recorder.record(graph.get_state(run).values.get("said", []))
                while (start := self._next_input(graph, run, store, session_id)) is not False:
                    ran = True
                    nodes = _NodeSpans(self.name, session_id)
                    with telemetry.span("room.turn", **{"manyheads.room": self.name,
                                                        "manyheads.session": session_id}):
                        for mode, chunk in graph.stream(
                                start, run, context=ctx, durability="sync",
                                stream_mode=["custom", "values", "tasks"]):
                            if mode == "custom":
                                _report(chunk, listener)
                            elif mode == "tasks":
                                nodes.track(chunk)
                            else:
                                recorder.record(chunk.get("said", []))
                        nodes.close()
                    recorder.record(graph.get_state(run).values.get("said", []))
        except BaseException:
            store.set_status(session_id, "failed")
            raise
        store.set_status(session_id, "completed")
        return ran

    def _next_input(self, graph: Any, run: dict, store: Store,
                    session_id: str) -> dict[str, Any] | None | bool:
        """``None`` to continue an interrupted run, a turn's input, or False when all is done."""
        snapshot = graph.get_state(run)
        if snapshot.next:
            return None
        done = snapshot.values.get("turn", -1)
        messages = store.load(session_id).messages
        asked = [m for m in messages if m.role == "user"]
        if done + 1 >= len(asked):
            return False
        message = asked[done + 1]
        history = [_turn(m) for m in messages
                   if m.seq < message.seq and m.visibility == "public"]
        return {"request": message.content, "turn": done + 1, "history": history}


class _Recorder:
    """Stores ``said`` entries the store does not hold yet and reports them to the listener."""

    def __init__(self, store: Store, session_id: str, listener: Listener,
                 messages: list[Message], artifacts: list[Any]) -> None:
        self.store, self.session_id, self.listener = store, session_id, listener
        self.keys = {m.idempotency_key for m in messages if m.idempotency_key}
        self.artifacts = {a.meta.get("key"): a.id for a in artifacts if a.meta.get("key")}

    def record(self, said: list[dict[str, Any]]) -> None:
        for index, entry in enumerate(said):
            key = f"said-{index}"
            if key in self.keys:
                continue
            item = Said.model_validate(entry)
            meta = dict(item.meta)
            ids = [self._artifact(f"{key}-{j}", a) for j, a in enumerate(item.artifacts)]
            if ids:
                meta["artifacts"] = ids
                images = [i for i, a in zip(ids, item.artifacts, strict=True)
                          if a.mime.startswith("image/")]
                if images:
                    meta["image_artifact"] = images[0]
            message = self.store.append_message(
                self.session_id, role="assistant", participant=item.speaker,
                content=item.content, visibility=item.visibility, visible_to=item.visible_to,
                step_scores=item.step_scores, meta=meta, prompt_tokens=item.prompt_tokens,
                completion_tokens=item.completion_tokens, idempotency_key=key)
            self.keys.add(key)
            self.listener.message(message)

    def _artifact(self, key: str, artifact: Any) -> int:
        if key not in self.artifacts:
            self.artifacts[key] = self.store.add_artifact(
                self.session_id, kind=artifact.kind, name=artifact.name, mime=artifact.mime,
                data=artifact.data, meta={**artifact.meta, "key": key}).id
        return self.artifacts[key]


class _NodeSpans:
    """One span per graph node run (room, session, node, the agents who spoke), from LangGraph's
    ``tasks`` stream: a task's start opens it, its result or error ends it."""

    def __init__(self, room: str, session_id: str) -> None:
        self.room, self.session_id = room, session_id
        self.open: dict[str, Any] = {}

    def track(self, task: dict[str, Any]) -> None:
        if "result" not in task and "error" not in task:
            self.open[task["id"]] = telemetry.start_span(
                f"room.node {task['name']}", **{"manyheads.room": self.room,
                                                "manyheads.session": self.session_id,
                                                "manyheads.node": task["name"]})
            return
        span = self.open.pop(task["id"], None)
        if span is None:
            return
        result = task.get("result")
        writes = dict(result) if isinstance(result, list) else result or {}
        speakers = [s.get("speaker") for s in writes.get("said", []) if isinstance(s, dict)]
        if speakers:
            span.set_attribute("manyheads.agents", speakers)
        if task.get("error"):
            span.set_attribute("error.type", type(task["error"]).__name__)
        span.end()

    def close(self) -> None:
        for span in self.open.values():  # a run cut short: end what it started
            span.end()
        self.open.clear()


def _turn(message: Message) -> dict[str, Any]:
    speaker = USER if message.role == "user" else (message.participant or message.role)
    return {"speaker": speaker, "content": message.content}


def _report(event: Any, listener: Listener) -> None:
    if not isinstance(event, dict):
        return
    if event.get("kind") == "delta":
        listener.delta(event["speaker"], event["text"])
    elif event.get("kind") == "status":
        listener.status(event["text"])
