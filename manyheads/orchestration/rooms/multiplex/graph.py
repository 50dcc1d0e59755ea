"""Multiplex cultural panel: one question answered from many cultural and wisdom traditions.

Three modes share the graph, so they differ only in how the answer is made:

- ``baseline``: the model answers plainly;
- ``contextual``: one answer under a system prompt that asks for several traditions, evidence and
  values, with no single frame as the default;
- ``panel``: every panel member (a tradition with its values and voice) answers in one batched
  ``engine.chat`` call, optionally revises once after reading the others (batched again), and a
  synthesizer weaves the answers into one that names the traditions it draws on.

Every mode ends with ``final``. The Perspectives Distribution Score of that answer is measured in
``orchestration.pds``; ``converse`` stores it with the answer. Panels are pydantic specs, loaded
from YAML or JSON with errors that name the file and the bad field.
"""

from __future__ import annotations

import json
import operator
import re
from collections.abc import Callable
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal, TypedDict

import yaml
from langgraph.config import get_stream_writer
from langgraph.graph import END, START, StateGraph
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from manyheads.agents.prompts import Prompts
from manyheads.errors import ConfigError
from manyheads.models import Engine, SamplingParams
from manyheads.models.types import ChatMessage
from manyheads.orchestration.conversation import (
    ChatOptions,
    Listener,
    Quiet,
    open_session,
    store_user_message,
)
from manyheads.orchestration.registry import Room, register
from manyheads.orchestration.rooms.multiplex.pds import Classifier, score
from manyheads.storage import Store

PROMPTS = Prompts(__package__)

ROOM = "multiplex"
ASSISTANT, SYNTHESIZER = "Assistant", "Synthesizer"
MIN_MEMBERS, MAX_MEMBERS = 2, 12
NO_ANSWER = "(no answer)"
GIST_CHARS = 240  # of each member answer, shown to the others and to the synthesizer
MIN_DISTINCT = 0.35  # distinct/total words below which an answer is a loop, not an answer
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

    def panel(self) -> Panel:
        return load_panel(self.panel_file) if self.panel_file else default_panel()


class MultiplexState(TypedDict, total=False):
    question: str
    answers: list[dict[str, str]]  # {name, tradition, text}: the panel's latest answers
    transcript: Annotated[list[dict[str, Any]], operator.add]  # every turn, in speaking order
    synthesis: str  # the answer the PDS is measured on
    sources: list[str]  # members the final answer draws on
    final: str


def named_members(text: str, panel: Panel) -> list[str]:
    """Members the text names, by full name or by the first word of it ("Confucian")."""
    lowered = text.lower()
    return [m.name for m in panel.members
            if m.name.lower() in lowered
            or re.search(rf"\b{re.escape(m.name.split()[0].lower())}", lowered)]


def gist(text: str, limit: int = GIST_CHARS) -> str:
    """The first two sentences of an answer, cut at ``limit``: what others are shown of it."""
    sentences = re.split(r"(?<=[.!?])\s+", " ".join(text.split()))
    return " ".join(sentences[:2])[:limit]


def degenerate(text: str) -> bool:
    """A looping answer ("a wise and wise answer that is a wise..."): few distinct words."""
    words = re.findall(r"[a-z']+", text.lower())
    return len(words) >= 20 and len(set(words)) / len(words) < MIN_DISTINCT


def build_graph(engine: Engine, config: MultiplexConfig, *, checkpointer=None,
                panel: Panel | None = None):
    panel = panel or config.panel()
    members = panel.members
    sampling = {"temperature": config.temperature, "top_p": 0.9, "seed": config.seed}
    answer_params = SamplingParams(max_tokens=config.max_tokens, **sampling)
    member_params = SamplingParams(max_tokens=config.member_tokens, **sampling)

    def say(stage: str, speaker: str, content: str, tradition: str = "") -> dict[str, Any]:
        turn = {"stage": stage, "speaker": speaker, "tradition": tradition, "content": content}
        get_stream_writer()(turn)
        return turn

    def conversation(system: str, user: str) -> list[ChatMessage]:
        return [{"role": "system", "content": system}, {"role": "user", "content": user}]

    def member_system(member: PanelMember) -> str:
        return PROMPTS.render("member_system", speaker=member.name, tradition=member.tradition,
                      values=member.values, voice=member.voice)

    def spoken(stage: str, texts: list[str]) -> dict[str, Any]:
        answers = [{"name": m.name, "tradition": m.tradition, "text": t.strip() or NO_ANSWER}
                   for m, t in zip(members, texts, strict=True)]
        return {"answers": answers,
                "transcript": [say(stage, a["name"], a["text"], a["tradition"]) for a in answers]}

    def answer(state: MultiplexState) -> dict:
        system = (PROMPTS.render("baseline_system") if config.mode == "baseline" else
                  PROMPTS.render("contextual_system", traditions=[m.tradition for m in members]))
        text = engine.chat([conversation(system, state["question"])], answer_params)[0].text
        text = text.strip() or NO_ANSWER
        return {"synthesis": text, "final": text, "sources": [],
                "transcript": [say("final", ASSISTANT, text)]}

    def ask_panel(state: MultiplexState) -> dict:
        views = [conversation(member_system(m), PROMPTS.render("member_answer",
                                                       question=state["question"]))
                 for m in members]
        return spoken("answer", [c.text for c in engine.chat(views, member_params)])

    def revise(state: MultiplexState) -> dict:
        answers = state["answers"]
        views = [conversation(member_system(m), PROMPTS.render(
            "member_revise", question=state["question"], own=answers[i]["text"],
            others=[a | {"text": gist(a["text"])} for j, a in enumerate(answers)
                    if j != i and a["text"] != NO_ANSWER]))
            for i, m in enumerate(members)]
        return spoken("revise", [c.text for c in engine.chat(views, member_params)])

    def synthesize(state: MultiplexState) -> dict:
        heard = [a | {"text": gist(a["text"])} for a in state["answers"]
                 if a["text"] != NO_ANSWER and not degenerate(a["text"])]
        text = ""
        if heard:
            prompt = PROMPTS.render("synthesize", question=state["question"], answers=heard)
            text = engine.chat([conversation(PROMPTS.render("synthesizer_system"), prompt)],
                               answer_params)[0].text.strip()
        # A small model may return nothing or loop: the panel's own words are then the answer.
        if not text or degenerate(text):
            text = "\n".join(f"{a['name']}: {a['text']}" for a in heard)
        body = text or NO_ANSWER
        sources = named_members(body, panel)
        final = body
        if not sources:  # it forgot to name them: say whose answers it was given
            sources = [a["name"] for a in heard]
            final = f"{body}\n\nPerspectives drawn on: {', '.join(sources)}." if sources else body
        return {"synthesis": body, "sources": sources, "final": final,
                "transcript": [say("final", SYNTHESIZER, final)]}

    def first(state: MultiplexState) -> str:
        return "panel" if config.mode == "panel" else "answer"

    def after_panel(state: MultiplexState) -> str:
        return "revise" if config.revise else "synthesize"

    graph = StateGraph(MultiplexState)
    graph.add_node("answer", answer)
    graph.add_node("panel", ask_panel)
    graph.add_node("revise", revise)
    graph.add_node("synthesize", synthesize)
    graph.add_conditional_edges(START, first, ["answer", "panel"])
    graph.add_edge("answer", END)
    graph.add_conditional_edges("panel", after_panel, ["revise", "synthesize"])
    graph.add_edge("revise", "synthesize")
    graph.add_edge("synthesize", END)
    return graph.compile(checkpointer=checkpointer)


class MultiplexResult(BaseModel):
    mode: Mode
    final: str  # what the reader sees
    synthesis: str  # the answer itself, without an appended sources line: what PDS measures
    speaker: str
    sources: list[str]
    transcript: list[dict[str, Any]]


def ask(engine: Engine, question: str, config: MultiplexConfig | None = None, *,
        panel: Panel | None = None,
        on_event: Callable[[dict[str, Any]], None] | None = None) -> MultiplexResult:
    """Run the room on one question; ``on_event`` gets each turn as it is spoken."""
    config = config or MultiplexConfig()
    graph = build_graph(engine, config, panel=panel)
    state: dict[str, Any] = {}
    for kind, chunk in graph.stream({"question": question, "transcript": []},
                                    stream_mode=["custom", "values"]):
        if kind == "values":
            state = chunk
        elif on_event is not None:
            on_event(chunk)
    return MultiplexResult(mode=config.mode, final=state["final"], synthesis=state["synthesis"],
                           speaker=SYNTHESIZER if config.mode == "panel" else ASSISTANT,
                           sources=state["sources"], transcript=state["transcript"])


STATUS = {"baseline": "answering", "contextual": "answering from several traditions",
          "panel": "the panel is answering"}


def converse(engine: Engine, store: Store, session_id: str | None, text: str, *,
             listener: Listener | None = None, options: ChatOptions | None = None) -> str:
    """Chat contract (see ``conversation``): each user message is a new question to the room.

    Panel members' answers are stored as they are spoken (participant = member name); the final
    answer carries its PDS, PDS entropy and sentiment in ``meta``.
    """
    listener, options = listener or Quiet(), options or ChatOptions()
    config = MultiplexConfig.model_validate(options.config)
    panel = config.panel()
    session_id = open_session(store, ROOM, session_id, text, config)
    store_user_message(store, session_id, text, listener)
    listener.status(STATUS[config.mode])

    def on_event(turn: dict[str, Any]) -> None:
        if turn["stage"] == "final":
            return  # stored below, with its score
        message = store.append_message(session_id, role="assistant", participant=turn["speaker"],
                                       content=turn["content"],
                                       meta={"stage": turn["stage"],
                                             "tradition": turn["tradition"]})
        listener.message(message)

    result = ask(engine, text, config, panel=panel, on_event=on_event)
    listener.status("measuring the perspectives")
    pds = score(result.synthesis, panel.perspectives(), classifier=config.classifier,
                engine=engine)
    message = store.append_message(
        session_id, role="assistant", participant=result.speaker, content=result.final,
        meta={"stage": "final", "mode": config.mode, "pds": pds.shares,
              "pds_entropy": pds.entropy, "sentiment": pds.sentiment, "sources": result.sources})
    listener.message(message)
    return session_id


register(Room(name=ROOM, description="Multiplex cultural panel: traditions answer, a synthesizer "
              "weaves one answer, scored by its Perspectives Distribution", config=MultiplexConfig,
              build=build_graph, converse=converse,
              example="How should a family decide who cares for an ageing parent?"))
