"""Solo Performance Prompting (SPP): one model plays a few task-specific personas that help an
AI Assistant brainstorm, critique and refine a single answer.

``build_graph`` reads as the process: identify personas (2-4, chosen per task), brainstorm,
draft, then critique and revise until every persona approves or ``max_rounds`` is reached, then
the final answer. Two modes share the graph and differ only in the persona turns:

- ``single``: one call speaks for every persona in one shared transcript (the paper's setup);
- ``multi``: each persona is its own agent, and a round's persona turns run as one batched
  ``engine.chat`` call, which is how they run side by side on one engine.

The embedded model is small, so every structured step (personas, single-mode notes, verdicts) is
decoded against a bounded JSON schema, and a step whose output still fails falls back to a safe
default (a stock persona pair, no notes, an approval) instead of breaking the run. An optional
``verifier`` scores the assistant's steps; low scores are kept in ``flags`` and shown to the
critics. A follow-up message is a new task with the earlier exchanges in view.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import cache
from typing import Annotated, Any, Literal, Protocol

from langgraph.graph import END, START, StateGraph
from langgraph.runtime import Runtime
from pydantic import BaseModel, Field, create_model

from manyheads.agents import Agent, AgentSpec, Turn
from manyheads.agents.hygiene import PLACEHOLDER, Cleaned, clean, flag_only
from manyheads.agents.prompts import Prompts
from manyheads.errors import ManyheadsError, StructuredOutputError
from manyheads.models import Engine, SamplingParams
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

PROMPTS = Prompts(__package__)

ASSISTANT = "AI Assistant"
MIN_PERSONAS, MAX_PERSONAS = 2, 4
NOTE_CHARS = 160  # one persona turn; ~40 tokens, so a note fits in a small max_tokens
MAX_STEPS = 12  # answer lines sent to the verifier
NO_IDEA = "(no idea)"


class Persona(BaseModel):
    name: str = Field(min_length=1, max_length=32)
    expertise: str = Field(min_length=1, max_length=80)


class PersonaPlan(BaseModel):
    personas: list[Persona] = Field(min_length=MIN_PERSONAS, max_length=MAX_PERSONAS)


class Verdict(BaseModel):
    approve: bool
    suggestion: str = Field("", max_length=NOTE_CHARS)


DEFAULT_PERSONAS = (
    Persona(name="Domain Expert", expertise="knows the facts this task depends on"),
    Persona(name="Careful Reviewer", expertise="checks answers for mistakes and gaps"),
)


@cache
def notes_model(count: int) -> type[BaseModel]:
    """Single mode: exactly one bounded note per persona, in the order they were named."""
    note = Annotated[str, Field(min_length=1, max_length=NOTE_CHARS)]
    return create_model("PersonaNotes", notes=(list[note], Field(min_length=count,
                                                                  max_length=count)))


@cache
def verdicts_model(count: int) -> type[BaseModel]:
    """Single mode: exactly one verdict per persona, in order."""
    return create_model("PersonaVerdicts", verdicts=(list[Verdict], Field(min_length=count,
                                                                          max_length=count)))


class StepScorer(Protocol):
    """What a step verifier must offer (``manyheads.models.uhead.StepVerifier`` does)."""

    def score(self, prompt: str, steps: list[str]) -> list[Any]: ...


class SppConfig(BaseModel):
    mode: Literal["single", "multi"] = "multi"
    max_rounds: int = Field(2, ge=1, le=5, description="critique-and-revise rounds at most")
    max_tokens: int = Field(160, ge=16, le=2048, description="per draft or revision")
    note_tokens: int = Field(64, ge=16, le=512, description="per persona turn")
    flag_below: float = Field(0.5, ge=0.0, le=1.0, description="verifier score that is flagged")


class SppState(RoomState, total=False):
    task: str  # this turn's message, with the earlier exchanges before it
    personas: list[dict[str, str]]
    notes: list[str]  # this turn's brainstorm, one per persona
    suggestions: list[str]  # the last critique round's fixes ("Name: fix")
    draft: str
    round: int  # critique rounds done this turn
    approved: bool
    flags: list[dict[str, Any]]  # this turn's verifier steps scored below the bar
    final: str


def choose_personas(plan: PersonaPlan | None) -> list[Persona]:
    """The planned personas without duplicates or the assistant, else the stock pair."""
    chosen: dict[str, Persona] = {}
    for persona in plan.personas if plan else ():
        name = " ".join(persona.name.split())
        if name and name.lower() != ASSISTANT.lower() and name.lower() not in chosen:
            chosen[name.lower()] = persona.model_copy(update={"name": name})
    personas = list(chosen.values())
    return personas if len(personas) >= MIN_PERSONAS else list(DEFAULT_PERSONAS)


def answer_steps(text: str) -> list[str]:
    """The assistant's answer as steps for a verifier: its lines, else its sentences."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if len(lines) < 2:
        lines = [s.strip() for s in re.split(r"(?<=[.!?])\s+", text) if s.strip()]
    return lines[:MAX_STEPS]


def step_score(item: Any) -> float:
    """A verifier's confidence in one step: ``.score``, or ``1 - p_incorrect`` (UHead)."""
    value = getattr(item, "score", None)
    return float(value) if value is not None else 1.0 - float(item.p_incorrect)


# -- helpers the nodes share --------------------------------------------------------------------


def ctx(runtime: Runtime) -> RoomContext[SppConfig]:
    return context_of(runtime, SppConfig)


def assistant(context: RoomContext[SppConfig]) -> Agent:
    params = speech_params(max_tokens=context.config.max_tokens)
    return Agent(AgentSpec(name=ASSISTANT, role="assistant", sampling=params,
                           system_prompt=PROMPTS.render("assistant_system")), context.engine)


def persona_agents(context: RoomContext[SppConfig], personas: list[Persona]) -> list[Agent]:
    params = speech_params(max_tokens=context.config.note_tokens, stop=("\n\n",))
    return [Agent(AgentSpec(name=p.name, role="persona", sampling=params,
                            system_prompt=PROMPTS.render("persona_system", speaker=p.name,
                                                         expertise=p.expertise)),
                  context.engine)
            for p in personas]


def personas_of(state: SppState) -> list[Persona]:
    return [Persona(**p) for p in state["personas"]]


def single_view(personas: list[Persona], instruction: str) -> list[dict[str, str]]:
    system = PROMPTS.render("single_system", personas=[p.model_dump() for p in personas])
    return [{"role": "system", "content": system}, {"role": "user", "content": instruction}]


def spoken(stage: str, round_: int, speaker: str, content: str,
           steps: list[dict[str, Any]] | None = None,
           cleaned: Cleaned | None = None) -> dict[str, Any]:
    """A said entry; a free-text turn passes its ``cleaned`` result (its hygiene flags)."""
    scores = [{"text": s["text"], "score": s["score"]} for s in steps] if steps else None
    meta = {"stage": stage, "round": round_, **(cleaned.meta() if cleaned else {})}
    return say(speaker, content, step_scores=scores, meta=meta)


def verify(context: RoomContext[SppConfig], task: str, text: str,
           round_: int) -> list[dict[str, Any]]:
    """Every step of the answer with its score (none without a verifier)."""
    steps = answer_steps(text)
    if context.verifier is None or not steps:
        return []
    try:
        scores = [step_score(s) for s in context.verifier.score(task, steps)]
    except ManyheadsError as exc:  # e.g. a step format it cannot read: skip, don't fail
        status(f"step verification skipped: {exc}")
        return []
    return [{"round": round_, "step": i, "text": step, "score": score}
            for i, (step, score) in enumerate(zip(steps, scores, strict=False))]


def _clean_answer(completion: Any) -> Cleaned:
    """The assistant's answer, cut back to whole sentences when the token budget cut it
    (``empty`` when nothing usable came back). An answer that ended on its own is kept as
    written, only flagged: a poem or a list need not end in a full stop."""
    if completion.finish_reason != "length":
        return flag_only(completion.text)
    return clean(completion.text, speaker=ASSISTANT, finish_reason=completion.finish_reason)


def low(context: RoomContext[SppConfig], scored: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [step for step in scored if step["score"] < context.config.flag_below]


# -- nodes ----------------------------------------------------------------------------------------


def identify(state: SppState, runtime: Runtime) -> dict:
    context = ctx(runtime)
    status("choosing the personas this task needs")
    task = with_earlier(state)
    instruction = PROMPTS.render("identify", task=task, low=MIN_PERSONAS, high=MAX_PERSONAS)
    try:
        plan = assistant(context).decide([], PersonaPlan, instruction,
                                         SamplingParams(max_tokens=48 * MAX_PERSONAS))
    except StructuredOutputError:
        plan = None
    personas = choose_personas(plan)
    names = ", ".join(f"{p.name} ({p.expertise})" for p in personas)
    return {"task": task, "personas": [p.model_dump() for p in personas], "round": 0,
            "approved": False, "flags": [], "suggestions": [], "notes": [],
            "said": [spoken("identify", 0, ASSISTANT, f"Participants: {ASSISTANT}; {names}")]}


def brainstorm(state: SppState, runtime: Runtime) -> dict:
    context, personas = ctx(runtime), personas_of(state)
    status("the personas are brainstorming")
    if context.config.mode == "single":
        instruction = PROMPTS.render("brainstorm_single", task=state["task"],
                                     personas=[p.model_dump() for p in personas])
        params = SamplingParams(max_tokens=context.config.note_tokens * len(personas) + 16)
        try:
            notes = context.engine.structured(single_view(personas, instruction),
                                              notes_model(len(personas)), params).notes
        except StructuredOutputError:
            notes = [""] * len(personas)
    else:
        agents = persona_agents(context, personas)
        views = [a.view([], PROMPTS.render("brainstorm_persona", task=state["task"],
                                           speaker=a.name)) for a in agents]
        cleaned = [clean(c.text, speaker=a.name, others=[ASSISTANT],
                         finish_reason=c.finish_reason)
                   for a, c in zip(agents, context.engine.chat(views, agents[0].spec.sampling),
                                   strict=True)]
        notes = [c.text for c in cleaned]
    notes = [n.strip() if n.strip() and n != PLACEHOLDER else NO_IDEA for n in notes]
    if context.config.mode == "single":  # JSON fields, not free-text turns
        return {"notes": notes, "said": [spoken("brainstorm", 0, p.name, n)
                                         for p, n in zip(personas, notes, strict=True)]}
    return {"notes": notes, "said": [spoken("brainstorm", 0, p.name, n, cleaned=c)
                                     for p, n, c in zip(personas, notes, cleaned, strict=True)]}


def draft(state: SppState, runtime: Runtime) -> dict:
    context = ctx(runtime)
    status("the assistant is drafting")
    notes = [f"{p['name']}: {n}" for p, n in zip(state["personas"], state["notes"], strict=True)
             if n != NO_IDEA]
    cleaned = _clean_answer(assistant(context).respond([], PROMPTS.render(
        "draft", task=state["task"], notes=notes)))
    text = PLACEHOLDER if cleaned.empty else cleaned.text
    scored = verify(context, state["task"], text, 0)
    return {"draft": text, "said": [spoken("draft", 0, ASSISTANT, text, scored, cleaned)],
            "flags": low(context, scored)}


def critique(state: SppState, runtime: Runtime) -> dict:
    context, personas, round_ = ctx(runtime), personas_of(state), state["round"] + 1
    status(f"critique round {round_}")
    flagged = [f["text"] for f in state["flags"] if f["round"] == state["round"]]
    common = {"task": state["task"], "draft": state["draft"], "flagged": flagged}
    if context.config.mode == "single":
        instruction = PROMPTS.render("critique_single",
                                     personas=[p.model_dump() for p in personas], **common)
        params = SamplingParams(max_tokens=context.config.note_tokens * len(personas) + 16)
        try:
            verdicts: list[Verdict | None] = list(context.engine.structured(
                single_view(personas, instruction), verdicts_model(len(personas)),
                params).verdicts)
        except StructuredOutputError:
            verdicts = [None] * len(personas)
    else:
        views = [a.view([], PROMPTS.render("critique_persona", speaker=a.name, **common))
                 for a in persona_agents(context, personas)]
        params = SamplingParams(max_tokens=context.config.note_tokens + 16)
        verdicts = [c.parsed for c in context.engine.chat(views, params, response_model=Verdict)]
    # A verdict that did not parse, or a "fix" with no words, counts as approval: there is
    # nothing concrete to revise with, and the round limit bounds the loop either way.
    said, suggestions = [], []
    for persona, verdict in zip(personas, verdicts, strict=True):
        fix = verdict.suggestion.strip() if verdict and not verdict.approve else ""
        if fix:
            suggestions.append(f"{persona.name}: {fix}")
        content = f"Suggestion: {fix}" if fix else ("Approved." if verdict else
                                                     "(no usable verdict; counted as approval)")
        said.append(spoken("critique", round_, persona.name, content))
    return {"said": said, "round": round_, "approved": not suggestions,
            "suggestions": suggestions}


def revise(state: SppState, runtime: Runtime) -> dict:
    context = ctx(runtime)
    status("the assistant is revising")
    cleaned = _clean_answer(assistant(context).respond([], PROMPTS.render(
        "revise", task=state["task"], draft=state["draft"], suggestions=state["suggestions"])))
    text = state["draft"] if cleaned.empty else cleaned.text
    scored = verify(context, state["task"], text, state["round"])
    return {"draft": text,
            "said": [spoken("revise", state["round"], ASSISTANT, text, scored,
                            None if cleaned.empty else cleaned)],
            "flags": state["flags"] + low(context, scored)}


def final(state: SppState) -> dict:
    return {"final": state["draft"],
            "said": [spoken("final", state["round"], ASSISTANT, state["draft"])]}


def after_critique(state: SppState, runtime: Runtime) -> Literal["revise", "final"]:
    done = state["approved"] or state["round"] >= ctx(runtime).config.max_rounds
    return "final" if done else "revise"


def build_graph() -> StateGraph:
    graph = StateGraph(SppState)
    graph.add_node("identify", identify)
    graph.add_node("brainstorm", brainstorm)
    graph.add_node("draft", draft)
    graph.add_node("critique", critique)
    graph.add_node("revise", revise)
    graph.add_node("final", final)
    graph.add_edge(START, "identify")
    graph.add_edge("identify", "brainstorm")
    graph.add_edge("brainstorm", "draft")
    graph.add_edge("draft", "critique")
    graph.add_conditional_edges("critique", after_critique, ["revise", "final"])
    graph.add_edge("revise", "critique")
    graph.add_edge("final", END)
    return graph


class SppResult(BaseModel):
    final: str
    personas: list[Persona]
    transcript: list[Turn]
    rounds: int
    approved: bool
    flags: list[dict[str, Any]]


def solve(engine: Engine, task: str, config: SppConfig | None = None, *,
          verifier: StepScorer | None = None,
          on_event: Callable[[dict[str, Any]], None] | None = None) -> SppResult:
    """Run the room on one task without a session (evaluation); ``on_event`` gets each
    ``said`` entry as it is spoken."""
    context = RoomContext(engine=engine, config=config or SppConfig(), verifier=verifier)
    state = run_alone(build_graph(), task, context, on_event)
    said = state["said"]
    return SppResult(final=state["final"], personas=state["personas"],
                     transcript=[Turn(speaker=e["speaker"], content=e["content"]) for e in said],
                     rounds=state["round"], approved=state["approved"], flags=state["flags"])
