"""AutoStudio: a person builds pictures turn by turn; subjects stay the same from turn to turn.

``build_graph`` reads as one turn of the process, looping forever with a human in it: listen
(a LangGraph ``interrupt``; the caller answers with ``Command(resume=text)``), the subject manager
updates the subject database, the layout generator places a box per subject, the supervisor
checks the layout and sends it back with its objections for at most ``max_rounds`` rounds (then
repairs it deterministically, so a valid layout always comes out), and the drawer paints it.

What a turn produces goes through a ``Recorder``: ``StoreRecorder`` stores every agent message
(idempotency keys) and every image, layout and subject list as an artifact, so a replayed node
never duplicates one, and the checkpoint in the same database lets a new process continue a
session with the same subjects. ``converse`` is the chat entry point of ``conversation.py``.
"""

from __future__ import annotations

import io
import json
import operator
from functools import cache
from typing import Annotated, Any, Literal, Protocol, TypedDict

from langgraph.graph import START, StateGraph
from langgraph.types import Command, interrupt
from pydantic import BaseModel, Field

from manyheads.models import Engine
from manyheads.orchestration.conversation import (
    ChatOptions,
    Listener,
    Quiet,
    open_session,
    store_user_message,
)
from manyheads.orchestration.registry import Room, register
from manyheads.orchestration.rooms.studio.agents import (
    changes,
    generate_layout,
    manage_subjects,
    place_of,
)
from manyheads.orchestration.rooms.studio.draw import DiffusersDrawer, Drawer, SketchDrawer
from manyheads.orchestration.rooms.studio.layout import Layout, Subject, layout_issues, repair

ROOM = "studio"


class StudioConfig(BaseModel):
    width: int = Field(256, ge=64, le=1024, description="picture width in pixels")
    height: int = Field(256, ge=64, le=1024, description="picture height in pixels")
    max_rounds: int = Field(2, ge=0, le=4, description="supervisor refinement rounds at most")
    max_tokens: int = Field(192, ge=32, le=1024, description="per structured agent answer")
    overlap_limit: float = Field(0.3, ge=0.0, le=1.0, description="allowed overlap (of smaller)")
    seed: int = Field(0, ge=0, description="scene seed; subjects have their own")
    drawer: Literal["sketch", "diffusers"] = "sketch"
    model_path: str | None = Field(None, description="GLIGEN pipeline folder for diffusers")
    steps: int = Field(25, ge=1, le=100, description="diffusion steps")


class StudioState(TypedDict, total=False):
    turn: str
    turn_index: int
    subjects: list[dict[str, Any]]
    next_id: int
    layout: dict[str, Any] | None  # the plan under review
    drawn: dict[str, Any] | None  # the layout of the last picture
    issues: list[str]
    round: int
    images: Annotated[list[int], operator.add]  # image artifact ids, one per turn


class Recorder(Protocol):
    """Where a turn's messages and pictures go; ``key`` makes a replayed write a no-op."""

    def status(self, text: str) -> None: ...

    def say(self, speaker: str, content: str, *, key: str, meta: dict[str, Any] | None = None
            ) -> None: ...

    def artifact(self, kind: str, name: str, data: bytes, mime: str, *, key: str,
                 meta: dict[str, Any] | None = None) -> int: ...


class MemoryRecorder:
    """Keeps a session in memory: for the Python API without a store."""

    def __init__(self) -> None:
        self.messages: dict[str, dict[str, Any]] = {}
        self.artifacts: dict[str, dict[str, Any]] = {}

    def status(self, text: str) -> None:
        pass

    def say(self, speaker: str, content: str, *, key: str, meta: dict[str, Any] | None = None
            ) -> None:
        self.messages.setdefault(key, {"speaker": speaker, "content": content, "meta": meta})

    def artifact(self, kind: str, name: str, data: bytes, mime: str, *, key: str,
                 meta: dict[str, Any] | None = None) -> int:
        entry = self.artifacts.setdefault(key, {"id": len(self.artifacts) + 1, "kind": kind,
                                                "name": name, "data": data, "meta": meta})
        return entry["id"]


class StoreRecorder:
    """Stores a session's turn in SQL and reports each stored message to the listener."""

    def __init__(self, store: Any, session_id: str, listener: Listener) -> None:
        self.store, self.session_id, self.listener = store, session_id, listener

    def status(self, text: str) -> None:
        self.listener.status(text)

    def say(self, speaker: str, content: str, *, key: str, meta: dict[str, Any] | None = None
            ) -> None:
        message = self.store.append_message(
            self.session_id, role="assistant", participant=speaker, content=content, meta=meta,
            idempotency_key=f"{ROOM}-{key}")
        self.listener.message(message)

    def artifact(self, kind: str, name: str, data: bytes, mime: str, *, key: str,
                 meta: dict[str, Any] | None = None) -> int:
        for existing in self.store.load(self.session_id).artifacts:
            if existing.meta.get("key") == key:
                return existing.id
        return self.store.add_artifact(self.session_id, kind=kind, name=name, mime=mime,
                                       data=data, meta={**(meta or {}), "key": key}).id


def subjects_of(state: StudioState) -> list[Subject]:
    return [Subject(**s) for s in state.get("subjects", [])]


def layout_of(data: dict[str, Any] | None) -> Layout | None:
    return Layout(**data) if data else None


def describe(layout: Layout, subjects: list[Subject]) -> str:
    names = {s.id: s.name for s in subjects}
    boxes = "; ".join(f"{names[i]} at {box.as_list()}" for i, box in layout.boxes.items()
                      if i in names)
    return f"{boxes or 'nothing to place'} on {layout.background or 'a plain background'}"


def png(image: Any) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def build_graph(engine: Engine, config: StudioConfig, *, checkpointer=None,
                drawer: Drawer | None = None, recorder: Recorder | None = None):
    drawer = drawer or make_drawer(config)
    recorder = recorder or MemoryRecorder()

    def listen(state: StudioState) -> dict:
        text = interrupt({"ask": "describe the next picture or an edit"})
        return {"turn": str(text), "turn_index": state.get("turn_index", 0) + 1, "round": 0,
                "issues": []}

    def manage(state: StudioState) -> dict:
        recorder.status("the subject manager is reading your turn")
        before = subjects_of(state)
        subjects, next_id = manage_subjects(engine, state["turn"], before,
                                            state.get("next_id", 1), config.max_tokens)
        cast = ", ".join(f"{s.name} ({s.description})" for s in subjects) or "nobody yet"
        recorder.say("Subject manager", f"{changes(before, subjects)} Subjects: {cast}.",
                     key=f"{state['turn_index']}-subjects",
                     meta={"subjects": [s.model_dump() for s in subjects]})
        return {"subjects": [s.model_dump() for s in subjects], "next_id": next_id}

    def plan(state: StudioState) -> dict:
        recorder.status(f"the layout generator is placing subjects (round {state['round']})")
        subjects, drawn = subjects_of(state), layout_of(state.get("drawn"))
        layout = generate_layout(engine, state["turn"], subjects, drawn, state["issues"],
                                 config.max_tokens)
        from_model = layout is not None
        if layout is None:  # no usable answer: the last picture's boxes, new subjects in gaps
            keep = repair(drawn or Layout(), subjects, config.overlap_limit)
            layout = keep.model_copy(update={
                "background": place_of(state["turn"]) or keep.background, "caption": ""})
        if not layout.caption:  # the subjects' own descriptions make a usable prompt
            words = ", ".join(s.description or s.name for s in subjects if s.parent_id is None)
            where = f" in {layout.background}" if layout.background else ""
            layout = layout.model_copy(update={"caption": f"{words}{where}"[:200]})
        recorder.say("Layout generator", describe(layout, subjects),
                     key=f"{state['turn_index']}-layout-{state['round']}",
                     meta={"layout": layout.model_dump(), "from_model": from_model})
        return {"layout": layout.model_dump()}

    def supervise(state: StudioState) -> dict:
        subjects, layout = subjects_of(state), Layout(**state["layout"])
        issues = layout_issues(layout, subjects, config.overlap_limit)
        last = state["round"] >= config.max_rounds
        if issues and last:
            layout = repair(layout, subjects, config.overlap_limit)
            note = f"Repaired the layout myself: {'; '.join(issues)}."
        elif issues:
            note = f"Please revise: {'; '.join(issues)}."
        else:
            note = "The layout is in bounds, without overlaps, and covers every subject."
        recorder.say("Supervisor", note, key=f"{state['turn_index']}-check-{state['round']}",
                     meta={"issues": issues, "repaired": bool(issues) and last})
        retry = bool(issues) and not last
        return {"layout": layout.model_dump(), "issues": issues if retry else [],
                "round": state["round"] + retry}

    def draw(state: StudioState) -> dict:
        recorder.status("the drawer is painting")
        subjects, layout = subjects_of(state), Layout(**state["layout"])
        turn = state["turn_index"]
        image = drawer.draw(layout, subjects, config.seed)
        record = {"turn": turn, "layout": layout.model_dump(),
                  "subjects": [s.model_dump() for s in subjects]}
        image_id = recorder.artifact("image", f"turn-{turn}.png", png(image), "image/png",
                                     key=f"{turn}-image", meta=record)
        for kind in ("layout", "subjects"):
            recorder.artifact(kind, f"turn-{turn}-{kind}.json", json.dumps(record[kind]).encode(),
                              "application/json", key=f"{turn}-{kind}", meta={"turn": turn})
        subjects = [s if s.reference else s.model_copy(update={"reference": image_id})
                    for s in subjects]
        recorder.say("Drawer", layout.caption or "Here is the picture.", key=f"{turn}-image",
                     meta={"image_artifact": image_id, "layout": layout.model_dump(),
                           "subjects": [s.model_dump() for s in subjects]})
        return {"subjects": [s.model_dump() for s in subjects], "drawn": layout.model_dump(),
                "images": [image_id]}

    def after_check(state: StudioState) -> str:
        return "plan" if state["issues"] else "draw"

    graph = StateGraph(StudioState)
    graph.add_node("listen", listen)
    graph.add_node("manage", manage)
    graph.add_node("plan", plan)
    graph.add_node("supervise", supervise)
    graph.add_node("draw", draw)
    graph.add_edge(START, "listen")
    graph.add_edge("listen", "manage")
    graph.add_edge("manage", "plan")
    graph.add_edge("plan", "supervise")
    graph.add_conditional_edges("supervise", after_check, ["plan", "draw"])
    graph.add_edge("draw", "listen")
    return graph.compile(checkpointer=checkpointer)


@cache
def diffusers_drawer(path: str, steps: int, width: int, height: int) -> DiffusersDrawer:
    """One loaded pipeline per folder and size for the whole process (loading takes seconds)."""
    return DiffusersDrawer.from_path(path, steps=steps, width=width, height=height)


def make_drawer(config: StudioConfig) -> Drawer:
    """The configured drawer; diffusion needs a local pipeline folder, the sketch needs nothing."""
    if config.drawer == "diffusers" and config.model_path:
        return diffusers_drawer(config.model_path, config.steps, config.width, config.height)
    return SketchDrawer(config.width, config.height)


def take_turn(graph: Any, thread_id: str, text: str) -> dict[str, Any]:
    """Run one user turn on a thread: start it, or finish a turn a crash cut short, then answer
    the waiting interrupt with ``text``. Returns the state after the picture is drawn."""
    run = {"configurable": {"thread_id": thread_id}}
    snapshot = graph.get_state(run)
    if not snapshot.next:
        graph.invoke({"subjects": [], "next_id": 1, "images": []}, run)
    elif snapshot.next != ("listen",):
        graph.invoke(None, run)
    graph.invoke(Command(resume=text), run)
    return graph.get_state(run).values


def converse(engine: Engine, store: Any, session_id: str | None, text: str, *,
             listener: Listener | None = None, options: ChatOptions | None = None,
             drawer: Drawer | None = None) -> str:
    """One chat turn (see ``conversation.py``); a stopped session continues where it was."""
    listener, options = listener or Quiet(), options or ChatOptions()
    if session_id is None:
        config = StudioConfig(**options.config)
    else:
        config = StudioConfig(**{**store.get_session(session_id).config, **options.config})
    session_id = open_session(store, ROOM, session_id, text, config)
    store_user_message(store, session_id, text, listener)
    store.set_status(session_id, "running")
    recorder = StoreRecorder(store, session_id, listener)
    with store.checkpointer() as saver:
        graph = build_graph(engine, config, checkpointer=saver, drawer=drawer, recorder=recorder)
        try:
            take_turn(graph, session_id, text)
        except BaseException:
            store.set_status(session_id, "failed")
            raise
    store.set_status(session_id, "paused")  # waiting for the person's next turn
    return session_id


register(Room(name=ROOM, description="AutoStudio: multi-turn picture making with consistent "
              "subjects", config=StudioConfig, build=build_graph, converse=converse,
              example="A brown dog sits under a big oak tree on a sunny hill."))
