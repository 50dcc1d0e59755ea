"""Multiplex cultural panel: one question answered from many cultural and wisdom traditions.

Three modes share the graph, so they differ only in how the answer is made:

- ``baseline``: the model answers plainly;
- ``contextual``: one answer under a system prompt that asks for several traditions, evidence and
  values, with no single frame as the default;
- ``panel``: every panel member (a tradition with its values and voice) answers in one batched
  ``engine.chat`` call, optionally revises once after reading the others (batched again), and a
  synthesizer writes a one-sentence overview and one whole key point per member, each attributed
  (``synthesis.py``: JSON-schema drafts, validated and retried, with an extractive fallback).

Every mode ends with ``final``. The Perspectives Distribution Score of that answer is measured in
``orchestration.pds``; ``converse`` stores it with the answer. Panels are pydantic specs, loaded
from YAML or JSON with errors that name the file and the bad field.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml
from langgraph.graph import END, START, StateGraph
from langgraph.runtime import Runtime
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from manyheads.agents.hygiene import clean
from manyheads.agents.prompts import Prompts
from manyheads.errors import ConfigError
from manyheads.models import Engine, SamplingParams
from manyheads.models.types import ChatMessage, Completion
from manyheads.orchestration.room import (
    RoomContext,
    RoomState,
    context_of,
    run_alone,
    say,
    speech_params,
    status,
    with_earlier,
)
from manyheads.orchestration.rooms.multiplex.pds import Classifier, score
from manyheads.orchestration.rooms.multiplex.synthesis import (
    degenerate,
    synthesize_panel,
    whole_sentences,
)

PROMPTS = Prompts(__package__)

ASSISTANT, SYNTHESIZER = "Assistant", "Synthesizer"
MIN_MEMBERS, MAX_MEMBERS = 2, 12
NO_ANSWER = "(No answer this time.)"  # a whole sentence: a reader never sees a cut one
GIST_CHARS = 240  # of each member answer, shown to the others when they revise
Mode = Literal["baseline", "contextual", "panel"]
MODES: tuple[Mode, ...] = ("baseline", "contextual", "panel")


class PanelMember(BaseModel):
    """One perspective agent; ``values`` is also the description the PDS classifier matches."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    name: str = Field(min_length=1, max_length=40)
    tradition: str = Field(min_length=1, max_length=120)
    values: str = Field(min_length=1, max_length=400)
    voice: str = Field(min_length=1, max_length=200)

    @property
    def description(self) -> str:
        return f"{self.name}, {self.tradition}: {self.values}"


class Panel(BaseModel):
    model_config = ConfigDict(extra="forbid")

    members: list[PanelMember] = Field(min_length=MIN_MEMBERS, max_length=MAX_MEMBERS)

    @model_validator(mode="after")
    def _unique_names(self) -> Panel:
        seen: set[str] = set()
        for member in self.members:
            if member.name.lower() in seen:
                raise ValueError(f"two members are named {member.name!r}")
            seen.add(member.name.lower())
        return self

    def perspectives(self) -> dict[str, str]:
        """Name -> description, in panel order: what the PDS classifiers label sentences with."""
        return {m.name: m.description for m in self.members}


def _describe(exc: ValidationError) -> str:
    """Pydantic's errors as ``members.2.tradition: field required``, the first three."""
    parts = []
    for error in exc.errors()[:3]:
        where = ".".join(str(x) for x in error["loc"]) or "(top level)"
        message = error["msg"]
        parts.append(f"{where}: {message[:1].lower()}{message[1:]}")
    return "; ".join(parts)


def load_panel(path: str | Path) -> Panel:
    """A panel from YAML or JSON (a mapping with ``members``, or just the list of members)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the panel file ({exc.strerror})") from None
    try:
        data = json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: not valid {path.suffix.lstrip('.') or 'YAML'}: {exc}") from None
    if isinstance(data, list):
        data = {"members": data}
    try:
        return Panel.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"{path}: {_describe(exc)}",
                          hint="each member needs name, tradition, values and voice") from None


@cache
def default_panel() -> Panel:
    """The shipped panel of seven traditions (package data ``data/multiplex/panel.yaml``)."""
    return load_panel(Path(str(resources.files("manyheads.orchestration.rooms.multiplex.data")
                               / "panel.yaml")))


class MultiplexConfig(BaseModel):
    mode: Mode = "panel"
    revise: bool = Field(False, description="panel: one round where each member reads the others")
    max_tokens: int = Field(192, ge=16, le=2048, description="per final answer or synthesis")
    member_tokens: int = Field(96, ge=16, le=512, description="per panel member answer")
    panel_file: str | None = Field(None, description="YAML/JSON panel; default: the shipped one")
    classifier: Classifier = Field("embedding", description="how the chat measures the PDS")
    temperature: float = Field(0.7, ge=0.0, le=2.0, description="greedy decoding makes a small "
                               "model loop; light sampling, seeded, stays reproducible")
    seed: int = 0
    measure: bool = Field(True, description="score the final answer's Perspectives Distribution")

    def panel(self) -> Panel:
        return load_panel(self.panel_file) if self.panel_file else default_panel()


class MultiplexState(RoomState, total=False):
    question: str  # this turn's message, with the earlier exchanges before it
    answers: list[dict[str, str]]  # {name, tradition, text}: the panel's latest answers
    synthesis: str  # the answer the PDS is measured on
    sources: list[str]  # members the final answer draws on
    final: str
    speaker: str  # who gives the final answer
    woven: dict[str, Any]  # panel: how the synthesis was made (drafted / extracted points)


def gist(text: str, limit: int = GIST_CHARS) -> str:
    """The first two sentences of an answer, cut at ``limit``: what others are shown of it."""
    sentences = re.split(r"(?<=[.!?])\s+", " ".join(text.split()))
    return " ".join(sentences[:2])[:limit]


STATUS = {"baseline": "answering", "contextual": "answering from several traditions",
          "panel": "the panel is answering"}


def ctx(runtime: Runtime) -> RoomContext[MultiplexConfig]:
    return context_of(runtime, MultiplexConfig)


def sampling(config: MultiplexConfig, max_tokens: int) -> SamplingParams:
    """The room's sampling with the rooms' shared repetition control (``speech_params``)."""
    return speech_params(max_tokens=max_tokens, temperature=config.temperature, top_p=0.9,
                         seed=config.seed)


def conversation(system: str, user: str) -> list[ChatMessage]:
    return [{"role": "system", "content": system}, {"role": "user", "content": user}]


def member_system(member: PanelMember) -> str:
    return PROMPTS.render("member_system", speaker=member.name, tradition=member.tradition,
                          values=member.values, voice=member.voice)


def heard(member: PanelMember, completion: Completion, names: list[str]):
    """A member's answer after the shared hygiene step: its text (``NO_ANSWER`` when nothing
    was left) and what hygiene did."""
    cleaned = clean(completion.text, speaker=member.name, others=names,
                    finish_reason=completion.finish_reason)
    return (NO_ANSWER if cleaned.empty else cleaned.text), cleaned


def usable(text: str, question: str) -> bool:
    """An answer the synthesis can draw on: not empty, no loop, one whole sentence at least."""
    return text != NO_ANSWER and not degenerate(text) and bool(whole_sentences(text, question))


def spoken(stage: str, members: list[PanelMember], completions: list[Completion],
           again: set[int] = frozenset()) -> dict[str, Any]:
    """The members' answers after the shared hygiene step (whole sentences, no loops)."""
    names = [m.name for m in members]
    answers, said = [], []
    for i, (member, completion) in enumerate(zip(members, completions, strict=True)):
        text, cleaned = heard(member, completion, names)
        answers.append({"name": member.name, "tradition": member.tradition, "text": text})
        meta = {"stage": stage, "tradition": member.tradition, **cleaned.meta()}
        said.append(say(member.name, text, meta=meta | ({"asked_again": True} if i in again
                                                        else {})))
    return {"answers": answers, "said": said}


def ask_members(engine: Engine, members: list[PanelMember], views: list[list[ChatMessage]],
                params: SamplingParams, question: str) -> tuple[list[Completion], set[int]]:
    """All members in one batch; those with nothing usable (empty, a loop, no whole sentence,
    another script) are asked once more, together, with the next seed."""
    names = [m.name for m in members]
    completions = engine.chat(views, params)
    failed = [i for i, c in enumerate(completions)
              if not usable(heard(members[i], c, names)[0], question)]
    again: set[int] = set()
    if failed:
        retry = engine.chat([views[i] for i in failed],
                            params.model_copy(update={"seed": (params.seed or 0) + 1}))
        for i, completion in zip(failed, retry, strict=True):
            if usable(heard(members[i], completion, names)[0], question):
                completions[i] = completion
                again.add(i)
    return completions, again


def open_turn(state: MultiplexState, runtime: Runtime) -> dict:
    status(STATUS[ctx(runtime).config.mode])
    return {"question": with_earlier(state), "answers": [], "sources": []}


def answer(state: MultiplexState, runtime: Runtime) -> dict:
    context = ctx(runtime)
    config, members = context.config, context.config.panel().members
    system = (PROMPTS.render("baseline_system") if config.mode == "baseline" else
              PROMPTS.render("contextual_system", traditions=[m.tradition for m in members]))
    text = context.engine.chat([conversation(system, state["question"])],
                               sampling(config, config.max_tokens))[0].text
    text = text.strip() or NO_ANSWER
    return {"synthesis": text, "final": text, "sources": [], "speaker": ASSISTANT}


def ask_panel(state: MultiplexState, runtime: Runtime) -> dict:
    context = ctx(runtime)
    members = context.config.panel().members
    views = [conversation(member_system(m), PROMPTS.render("member_answer",
                                                           question=state["question"]))
             for m in members]
    params = sampling(context.config, context.config.member_tokens)
    completions, again = ask_members(context.engine, members, views, params, state["question"])
    return spoken("answer", members, completions, again)


def revise(state: MultiplexState, runtime: Runtime) -> dict:
    context = ctx(runtime)
    members, answers = context.config.panel().members, state["answers"]
    status("the panel is reading each other")
    views = [conversation(member_system(m), PROMPTS.render(
        "member_revise", question=state["question"], own=answers[i]["text"],
        others=[a | {"text": gist(a["text"])} for j, a in enumerate(answers)
                if j != i and a["text"] != NO_ANSWER]))
        for i, m in enumerate(members)]
    params = sampling(context.config, context.config.member_tokens)
    completions, again = ask_members(context.engine, members, views, params, state["question"])
    return spoken("revise", members, completions, again)


def synthesize(state: MultiplexState, runtime: Runtime) -> dict:
    """A one-sentence overview and one whole, attributed key point per member (``synthesis``);
    when no member's point survived, the final answer says whose answers it had."""
    context = ctx(runtime)
    status("the synthesizer is weaving the answers")
    panel = context.config.panel()
    answers = [a for a in state["answers"] if a["text"] != NO_ANSWER and not degenerate(a["text"])]
    values = {m.name: m.values for m in panel.members}
    woven = synthesize_panel(context.engine, state["question"], answers, values,
                             sampling(context.config, context.config.max_tokens))
    body = woven.text() or NO_ANSWER
    sources = [p.member for p in woven.points]
    final = body
    if not sources:  # no member's point to show: say whose answers the synthesizer had
        sources = [a["name"] for a in answers]
        final = f"{body}\n\nPerspectives drawn on: {', '.join(sources)}." if sources else body
    return {"synthesis": body, "sources": sources, "final": final, "speaker": SYNTHESIZER,
            "woven": woven.meta()}


def conclude(state: MultiplexState, runtime: Runtime) -> dict:
    """The final answer, with its Perspectives Distribution Score when the config asks for it."""
    context = ctx(runtime)
    config = context.config
    meta: dict[str, Any] = {"stage": "final", "mode": config.mode, "sources": state["sources"]}
    if state.get("woven"):
        meta["synthesis"] = state["woven"]
    if config.measure:
        status("measuring the perspectives")
        pds = score(state["synthesis"], config.panel().perspectives(),
                    classifier=config.classifier, engine=context.engine)
        meta |= {"pds": pds.shares, "pds_entropy": pds.entropy, "sentiment": pds.sentiment}
    return {"said": [say(state["speaker"], state["final"], meta=meta)]}


def first(state: MultiplexState, runtime: Runtime) -> Literal["answer", "panel"]:
    return "panel" if ctx(runtime).config.mode == "panel" else "answer"


def after_panel(state: MultiplexState, runtime: Runtime) -> Literal["revise", "synthesize"]:
    return "revise" if ctx(runtime).config.revise else "synthesize"


def build_graph() -> StateGraph:
    graph = StateGraph(MultiplexState)
    graph.add_node("open_turn", open_turn)
    graph.add_node("answer", answer)
    graph.add_node("panel", ask_panel)
    graph.add_node("revise", revise)
    graph.add_node("synthesize", synthesize)
    graph.add_node("conclude", conclude)
    graph.add_edge(START, "open_turn")
    graph.add_conditional_edges("open_turn", first, ["answer", "panel"])
    graph.add_edge("answer", "conclude")
    graph.add_conditional_edges("panel", after_panel, ["revise", "synthesize"])
    graph.add_edge("revise", "synthesize")
    graph.add_edge("synthesize", "conclude")
    graph.add_edge("conclude", END)
    return graph


class MultiplexResult(BaseModel):
    mode: Mode
    final: str  # what the reader sees
    synthesis: str  # the answer itself, without an appended sources line: what PDS measures
    speaker: str
    sources: list[str]
    transcript: list[dict[str, Any]]


def ask(engine: Engine, question: str, config: MultiplexConfig | None = None, *,
        on_event: Callable[[dict[str, Any]], None] | None = None) -> MultiplexResult:
    """Run the room on one question without a session (evaluation: no PDS here, the caller
    measures it); ``on_event`` gets each ``said`` entry as it is spoken."""
    config = (config or MultiplexConfig()).model_copy(update={"measure": False})
    state = run_alone(build_graph(), question, RoomContext(engine=engine, config=config),
                      on_event)
    return MultiplexResult(mode=config.mode, final=state["final"], synthesis=state["synthesis"],
                           speaker=state["speaker"], sources=state["sources"],
                           transcript=state["said"])
