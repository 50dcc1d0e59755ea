"""AutoStudio: a person builds pictures turn by turn; subjects stay the same from turn to turn.

``build_graph`` reads as one turn of the process: the subject manager updates the subject
database from the person's message, the layout generator places a box per subject, the supervisor
checks the layout and sends it back with its objections for at most ``max_rounds`` rounds (then
repairs it deterministically, so a valid layout always comes out), and the drawer paints it.

The subjects live in the graph state, which the room contract checkpoints per session, so the
next message (tomorrow, in another process) edits the same cast. Every picture, layout and
subject list goes out as an artifact of the drawer's message.
"""


from __future__ import annotations

import io
import json
from functools import cache
from typing import Any, Literal

from langgraph.graph import END, START, StateGraph
from langgraph.runtime import Runtime
from pydantic import BaseModel, Field

from manyheads.orchestration.room import (
    Artifact,
    RoomContext,
    RoomState,
    context_of,
    say,
    status,
)
from manyheads.orchestration.rooms.studio.agents import (
    changes,
    generate_layout,
    manage_subjects,
    place_of,
)
from manyheads.orchestration.rooms.studio.draw import DiffusersDrawer, Drawer, SketchDrawer
from manyheads.orchestration.rooms.studio.layout import Layout, Subject, layout_issues, repair


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


class StudioState(RoomState, total=False):
    subjects: list[dict[str, Any]]  # the subject database, carried from turn to turn
    next_id: int
    layout: dict[str, Any] | None  # the plan under review
    drawn: dict[str, Any] | None  # the layout of the last picture
    issues: list[str]
    round: int  # supervisor rounds this turn


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


@cache
def diffusers_drawer(path: str, steps: int, width: int, height: int) -> DiffusersDrawer:
    """One loaded pipeline per folder and size for the whole process (loading takes seconds)."""
    return DiffusersDrawer.from_path(path, steps=steps, width=width, height=height)


def make_drawer(config: StudioConfig) -> Drawer:
    """The configured drawer; diffusion needs a local pipeline folder, the sketch needs nothing."""
    if config.drawer == "diffusers" and config.model_path:
        return diffusers_drawer(config.model_path, config.steps, config.width, config.height)
    return SketchDrawer(config.width, config.height)


def ctx(runtime: Runtime) -> RoomContext[StudioConfig]:
    return context_of(runtime, StudioConfig)


def manage(state: StudioState, runtime: Runtime) -> dict:
    context = ctx(runtime)
    status("the subject manager is reading your turn")
    before = subjects_of(state)
    subjects, next_id = manage_subjects(context.engine, state["request"], before,
                                        state.get("next_id", 1), context.config.max_tokens)
    cast = ", ".join(f"{s.name} ({s.description})" for s in subjects) or "nobody yet"
    return {"subjects": [s.model_dump() for s in subjects], "next_id": next_id, "round": 0,
            "issues": [],
            "said": [say("Subject manager", f"{changes(before, subjects)} Subjects: {cast}.",
                         meta={"subjects": [s.model_dump() for s in subjects]})]}


def plan(state: StudioState, runtime: Runtime) -> dict:
    context = ctx(runtime)
    config = context.config
    status(f"the layout generator is placing subjects (round {state['round']})")
    subjects, drawn = subjects_of(state), layout_of(state.get("drawn"))
    layout = generate_layout(context.engine, state["request"], subjects, drawn, state["issues"],
                             config.max_tokens)
    from_model = layout is not None
    if layout is None:  # no usable answer: the last picture's boxes, new subjects in gaps
        keep = repair(drawn or Layout(), subjects, config.overlap_limit)
        layout = keep.model_copy(update={
            "background": place_of(state["request"]) or keep.background, "caption": ""})
    if not layout.caption:  # the subjects' own descriptions make a usable prompt
        words = ", ".join(s.description or s.name for s in subjects if s.parent_id is None)
        where = f" in {layout.background}" if layout.background else ""
        layout = layout.model_copy(update={"caption": f"{words}{where}"[:200]})
    return {"layout": layout.model_dump(),
            "said": [say("Layout generator", describe(layout, subjects),
                         meta={"layout": layout.model_dump(), "from_model": from_model})]}


def supervise(state: StudioState, runtime: Runtime) -> dict:
    config = ctx(runtime).config
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
    retry = bool(issues) and not last
    return {"layout": layout.model_dump(), "issues": issues if retry else [],
            "round": state["round"] + retry,
            "said": [say("Supervisor", note, meta={"issues": issues,
                                                   "repaired": bool(issues) and last})]}


def draw(state: StudioState, runtime: Runtime) -> dict:
    config = ctx(runtime).config
    status("the drawer is painting")
    subjects, layout = subjects_of(state), Layout(**state["layout"])
    turn = state["turn"] + 1
    image = make_drawer(config).draw(layout, subjects, config.seed)
    subjects = [s if s.reference else s.model_copy(update={"reference": turn}) for s in subjects]
    record = {"turn": turn, "layout": layout.model_dump(),
              "subjects": [s.model_dump() for s in subjects]}
    artifacts = [Artifact(kind="image", name=f"turn-{turn}.png", mime="image/png",
                          data=png(image), meta=record)]
    artifacts += [Artifact(kind=kind, name=f"turn-{turn}-{kind}.json", mime="application/json",
                           data=json.dumps(record[kind]).encode(), meta={"turn": turn})
                  for kind in ("layout", "subjects")]
    return {"subjects": record["subjects"], "drawn": layout.model_dump(),
            "said": [say("Drawer", layout.caption or "Here is the picture.",
                         meta={"layout": record["layout"], "subjects": record["subjects"]},
                         artifacts=artifacts)]}


def after_check(state: StudioState) -> Literal["plan", "draw"]:
    return "plan" if state["issues"] else "draw"


def build_graph() -> StateGraph:
    graph = StateGraph(StudioState)
    graph.add_node("manage", manage)
    graph.add_node("plan", plan)
    graph.add_node("supervise", supervise)
    graph.add_node("draw", draw)
    graph.add_edge(START, "manage")
    graph.add_edge("manage", "plan")
    graph.add_edge("plan", "supervise")
    graph.add_conditional_edges("supervise", after_check, ["plan", "draw"])
    graph.add_edge("draw", END)
    return graph
