"""The double-blind persuasion room: a persuader with Theory of Mind against a hidden mind.

Each round is four steps: the persuader guesses the persuadee's beliefs and desires (ToM) and picks
a target and method, speaks, the persuadee answers from its hidden state, then decides to agree,
continue or refuse. Double-blindness holds by construction: every persuader prompt is built from
``PersuaderView``, a projection of the dialogue that has no hidden field, through ``Agent.view``.

A step is a pair of pure functions (build the request, apply the completion), so the same steps
run one dialogue as a LangGraph graph (``build_graph``) or many at once (``run_batch``), where
each dialogue is an engine program (``dialogue_program``) and ``Engine.drive`` batches them.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from typing import Any, Literal

from langgraph.config import get_config
from langgraph.graph import END, START, StateGraph
from langgraph.runtime import Runtime
from pydantic import BaseModel, ConfigDict, Field, model_validator

from manyheads.agents import Agent, AgentSpec, Turn, hygiene
from manyheads.agents.hygiene import Cleaned, clean
from manyheads.agents.prompts import Prompts
from manyheads.errors import ConfigError, StructuredOutputError
from manyheads.models import Engine, SamplingParams
from manyheads.models.engine import Program, Request
from manyheads.models.types import ChatMessage, Completion
from manyheads.orchestration.room import (
    USER,
    RoomContext,
    RoomState,
    context_of,
    say,
    speech_examples,
    speech_params,
    status,
)
from manyheads.orchestration.rooms.persuasion.metrics import tom_scores
from manyheads.orchestration.rooms.persuasion.mind import (
    FALLBACK_TOM,
    ToMEstimate,
)
from manyheads.orchestration.rooms.persuasion.scenarios import (
    Scenario,
    draft_scenarios,
    load_scenarios,
    package_scenarios,
)

PROMPTS = Prompts(__package__)

Outcome = Literal["active", "agreed", "refused", "turn_limit"]


class PersuasionConfig(BaseModel):
    max_turns: int = Field(3, ge=1, le=20, description="persuader turns before the turn limit")
    max_tokens: int = Field(64, ge=8, le=512, description="per utterance")
    tom_max_tokens: int = Field(128, ge=16, le=1024, description="per ToM estimate (JSON)")
    temperature: float = Field(0.7, ge=0.0, le=2.0)
    seed: int = 0
    observer: bool = Field(False, description="score each ToM estimate against the hidden truth")
    feedback: bool = Field(False, description="show the observer's scores to the persuader: "
                                              "NOT double-blind, recorded as such")

    @model_validator(mode="after")
    def _feedback_needs_observer(self) -> PersuasionConfig:
        if self.feedback and not self.observer:
            self.observer = True
        return self

    @property
    def double_blind(self) -> bool:
        return not self.feedback


class Decision(BaseModel):
    decision: Literal["agree", "continue", "refuse"]


class DialogueState(BaseModel):
    """One dialogue in progress, hidden state included: never shown to the persuader whole."""

    key: str = Field(min_length=1, max_length=100)
    scenario: Scenario
    turns: list[Turn] = Field(default_factory=list)  # public utterances and observer notes
    tom: list[ToMEstimate] = Field(default_factory=list)  # one per persuader turn
    tom_fallbacks: int = 0  # estimates that failed to parse and were replaced by all-unknown
    observer_scores: list[dict[str, float | None]] = Field(default_factory=list)
    decisions: list[str] = Field(default_factory=list)
    outcome: Outcome = "active"
    persuader_prompts: list[list[ChatMessage]] = Field(default_factory=list)  # for leak checks
    hygiene: list[list[str]] = Field(default_factory=list)  # cleaning flags per agent utterance

    @property
    def persuader_turns(self) -> int:
        return sum(t.speaker == self.scenario.persuader for t in self.public_turns)

    @property
    def public_turns(self) -> list[Turn]:
        return [t for t in self.turns if t.visibility == "public"]


class PersuaderView(BaseModel):
    """All the persuader may know. It has no hidden field, so no prompt built from it can leak."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    persuader: str
    persuadee: str
    background: str
    goal: str
    dialogue: tuple[Turn, ...]
    tom: ToMEstimate | None = None
    feedback: str | None = None  # observer scores; set only when the config is not double-blind


def persuader_view(state: DialogueState, config: PersuasionConfig) -> PersuaderView:
    """The projection every persuader prompt is built from."""
    scenario = state.scenario
    feedback = None
    if config.feedback and state.observer_scores:
        feedback = ", ".join(f"{k.replace('_', ' ')} {v:.2f}"
                             for k, v in state.observer_scores[-1].items() if v is not None)
    return PersuaderView(persuader=scenario.persuader, persuadee=scenario.persuadee,
                         background=scenario.background, goal=scenario.goal,
                         dialogue=tuple(state.public_turns),
                         tom=state.tom[-1] if len(state.tom) > state.persuader_turns else None,
                         feedback=feedback or None)


def persuader_spec(view: PersuaderView) -> AgentSpec:
    return AgentSpec(name=view.persuader, role="persuader",
                     system_prompt=PROMPTS.render("persuader_system", **_public(view)),
                     examples=speech_examples(PROMPTS, "persuader", **_public(view)))


def persuadee_spec(scenario: Scenario) -> AgentSpec:
    """The persuadee's system prompt carries its hidden state, in the second person."""
    preventive, generative = scenario.preventive, scenario.generative
    return AgentSpec(
        name=scenario.persuadee, role="persuadee",
        system_prompt=PROMPTS.render(
            "persuadee_system", persuadee=scenario.persuadee,
            persuader=scenario.persuader, background=scenario.background,
            proposal=generative.content,
            preventive_action="" if preventive.is_none else preventive.content,
            preventive_belief=_second_person(preventive.belief),
            preventive_desire=_second_person(preventive.desire),
            generative_belief=_sentence(_second_person(generative.belief)),
            generative_desire=_sentence(_second_person(generative.desire))),
        examples=speech_examples(PROMPTS, "persuadee", persuader=scenario.persuader,
                                 persuadee=scenario.persuadee))


# -- steps: (state, config) -> Call, then (state, config, completion) -> state updated ---------


@dataclass(frozen=True)
class Call:
    """One request: the agent's spec and what ``Agent.view`` builds its conversation from."""

    spec: AgentSpec
    turns: list[Turn]
    instruction: str
    params: SamplingParams


@dataclass(frozen=True)
class Step:
    name: str
    request: Callable[[DialogueState, PersuasionConfig], Call]
    apply: Callable[[DialogueState, PersuasionConfig, Completion], None]
    response_model: type[BaseModel] | None = None
    # An utterance: how hygiene cleans it; an echo or no whole sentence is sampled again.
    cleaned: Callable[[DialogueState, PersuasionConfig, Completion], Cleaned] | None = None


def _tom_request(state: DialogueState, config: PersuasionConfig) -> Call:
    view = persuader_view(state, config)
    return Call(persuader_spec(view), list(view.dialogue),
                PROMPTS.render("tom_request", persuadee=view.persuadee),
                _params(config, state, "tom", config.tom_max_tokens, stop=()))


def _tom_apply(state: DialogueState, config: PersuasionConfig, completion: Completion) -> None:
    try:
        estimate = completion.value()
    except StructuredOutputError:
        estimate = FALLBACK_TOM
        state.tom_fallbacks += 1
    state.tom.append(estimate)
    if config.observer:

        scores = tom_scores(estimate, state.scenario)
        state.observer_scores.append(scores)
        note = ", ".join(f"{k} {v:.2f}" for k, v in scores.items() if v is not None)
        state.turns.append(Turn(speaker="observer", content=f"ToM scores: {note or 'n/a'}",
                                visibility="observer"))


def _persuader_request(state: DialogueState, config: PersuasionConfig) -> Call:
    view = persuader_view(state, config)
    instruction = PROMPTS.render("reply" if view.dialogue else "opening", **_public(view))
    plan = PROMPTS.render("plan", tom=view.tom, feedback=view.feedback)
    return Call(persuader_spec(view), list(view.dialogue), f"{instruction} {plan}".strip(),
                _params(config, state, "persuader", config.max_tokens,
                        stop=("\n\n", f"\n{view.persuadee}:"), speech=True))


def _persuader_cleaned(state: DialogueState, config: PersuasionConfig,
                       completion: Completion) -> Cleaned:
    scenario = state.scenario
    return _clean(state, completion, scenario.persuader, scenario.persuadee,
                  _persuader_request(state, config))


def _persuader_apply(state: DialogueState, config: PersuasionConfig,
                     completion: Completion) -> None:
    _say(state, state.scenario.persuader, _persuader_cleaned(state, config, completion))


def _persuadee_request(state: DialogueState, config: PersuasionConfig) -> Call:
    scenario = state.scenario
    return Call(persuadee_spec(scenario), state.public_turns,
                PROMPTS.render("persuadee_reply", persuader=scenario.persuader),
                _params(config, state, "persuadee", config.max_tokens,
                        stop=("\n\n", f"\n{scenario.persuader}:"), speech=True))


def _persuadee_cleaned(state: DialogueState, config: PersuasionConfig,
                       completion: Completion) -> Cleaned:
    scenario = state.scenario
    return _clean(state, completion, scenario.persuadee, scenario.persuader,
                  _persuadee_request(state, config))


def _persuadee_apply(state: DialogueState, config: PersuasionConfig,
                     completion: Completion) -> None:
    _say(state, state.scenario.persuadee, _persuadee_cleaned(state, config, completion))


def _decision_request(state: DialogueState, config: PersuasionConfig) -> Call:
    scenario = state.scenario
    return Call(persuadee_spec(scenario), state.public_turns,
                PROMPTS.render("decision", proposal=scenario.generative.content),
                _params(config, state, "decision", 16, stop=()))


def _decision_apply(state: DialogueState, config: PersuasionConfig,
                    completion: Completion) -> None:
    try:
        decision = completion.value().decision
    except StructuredOutputError:
        decision = "continue"  # a garbled decision must not end (or break) the dialogue
    state.decisions.append(decision)
    if decision == "agree":
        state.outcome = "agreed"
    elif decision == "refuse":
        state.outcome = "refused"
    elif state.persuader_turns >= config.max_turns:
        state.outcome = "turn_limit"


TOM = Step("tom", _tom_request, _tom_apply, ToMEstimate)
PERSUADER = Step("persuader", _persuader_request, _persuader_apply,
                 cleaned=_persuader_cleaned)
PERSUADEE = Step("persuadee", _persuadee_request, _persuadee_apply,
                 cleaned=_persuadee_cleaned)
DECIDE = Step("decide", _decision_request, _decision_apply, Decision)
ROUND = (TOM, PERSUADER, PERSUADEE, DECIDE)


def step_request(engine: Engine, step: Step, state: DialogueState,
                 config: PersuasionConfig) -> Request:
    """The engine request for ``step``; persuader prompts are kept for the leak check."""
    call = step.request(state, config)
    conversation = Agent(call.spec, engine).view(call.turns, call.instruction)
    if call.spec.role == "persuader":
        state.persuader_prompts.append(conversation)
    return Request(conversation, call.params, response_model=step.response_model)


def step_program(engine: Engine, step: Step, state: DialogueState,
                 config: PersuasionConfig) -> Program:
    """One step as an engine program: its request, once more with another seed when hygiene
    finds the utterance an echo or no whole sentence (as ``room.utter`` does), then applied."""
    request = step_request(engine, step, state, config)
    completion = yield request
    resampled = False
    if step.cleaned is not None and hygiene.enabled():
        first = step.cleaned(state, config, completion)
        if first.retry:
            params = request.params.model_copy(update={
                "temperature": max(request.params.temperature, 0.7),
                "seed": (request.params.seed or 0) + 1})
            again, resampled = (yield replace(request, params=params)), True
            if not step.cleaned(state, config, again).retry:
                completion = again
    step.apply(state, config, completion)
    if resampled:
        state.hygiene[-1].append("resampled")


def run_step(engine: Engine, step: Step, state: DialogueState, config: PersuasionConfig) -> None:
    """One step of one dialogue, applied in place (a graph node)."""
    program = step_program(engine, step, state, config)
    request = next(program)
    while True:
        [completion] = engine.run([request])
        try:
            request = program.send(completion)
        except StopIteration:
            return


def new_dialogue(key: str, scenario: Scenario) -> DialogueState:
    return DialogueState(key=key, scenario=scenario)


def dialogue_program(engine: Engine, key: str, scenario: Scenario,
                     config: PersuasionConfig) -> Program:
    """One dialogue as an engine program: rounds of steps until it ends; returns its state.

    Every dialogue ends within ``config.max_turns`` rounds, which bounds the loop.
    """
    state = new_dialogue(key, scenario)
    while state.outcome == "active":
        for step in ROUND:
            yield from step_program(engine, step, state, config)
    return state


def run_batch(engine: Engine, items: Iterable[tuple[str, Scenario]], config: PersuasionConfig,
              *, concurrency: int = 8,
              on_done: Callable[[DialogueState], None] | None = None) -> list[DialogueState]:
    """Run dialogues ``concurrency`` at a time on one engine; returns them as they ended.

    ``Engine.drive`` refills a finished dialogue's slot at once; on vLLM every request joins the
    running batch as soon as its dialogue asks for it (continuous batching).
    """
    finished: list[DialogueState] = []
    programs = (dialogue_program(engine, key, scenario, config) for key, scenario in items)
    for state in engine.drive(programs, concurrency=concurrency):
        finished.append(state)
        if on_done is not None:
            on_done(state)
    return finished


class PersuasionState(RoomState, total=False):
    """The dialogue, field by field (``DialogueState`` without the leak-check prompts)."""

    key: str
    scenario: dict[str, Any]
    turns: list[dict[str, Any]]  # public utterances (the person's included) and observer notes
    tom: list[dict[str, Any]]
    tom_fallbacks: int
    observer_scores: list[dict[str, float | None]]
    decisions: list[str]
    outcome: Outcome
    hygiene: list[list[str]]
    limit: int  # persuader turns the dialogue may reach before this turn's turn limit


DIALOGUE_FIELDS = ("key", "scenario", "turns", "tom", "tom_fallbacks", "observer_scores",
                   "decisions", "outcome", "hygiene")


def ctx(runtime: Runtime) -> RoomContext[PersuasionConfig]:
    return context_of(runtime, PersuasionConfig)


def dialogue_of(state: PersuasionState) -> DialogueState:
    return DialogueState.model_validate({k: state[k] for k in DIALOGUE_FIELDS})


def fields_of(dialogue: DialogueState) -> dict[str, Any]:
    data = dialogue.model_dump(mode="json")
    return {k: data[k] for k in DIALOGUE_FIELDS}


def stage(state: PersuasionState, runtime: Runtime) -> dict:
    """First message: the scenario agent sets the scene the message asks for."""
    context = ctx(runtime)
    status("the scenario agent is setting the scene")
    scenario, source = chat_scenario(context.engine, state["request"])
    hidden = {"preventive": scenario.preventive.model_dump(),
              "generative": scenario.generative.model_dump()}
    said = [say("Scene", f"{scenario.background}\n\nGoal of {scenario.persuader}: "
                         f"{scenario.goal}", meta={"source": source, "names": [
                             scenario.persuader, scenario.persuadee]}),
            say("Hidden state", f"{scenario.persuadee} wants to: {scenario.preventive.content}",
                visibility="observer", meta={"hidden": hidden})]
    # Seeded per session (the thread), so two sessions on one topic differ, a replay does not.
    dialogue = new_dialogue(str(get_config()["configurable"].get("thread_id", "0")), scenario)
    return {**fields_of(dialogue), "limit": context.config.max_turns, "said": said}


def join(state: PersuasionState, runtime: Runtime) -> dict:
    """A later message: the person speaks into the dialogue, which goes on for more rounds."""
    dialogue = dialogue_of(state)
    dialogue.turns.append(Turn(speaker=USER, content=state["request"]))
    dialogue.outcome = "active"
    return {**fields_of(dialogue),
            "limit": dialogue.persuader_turns + ctx(runtime).config.max_turns}


def advance(state: PersuasionState, runtime: Runtime, step: Step) -> dict:
    """One step of the dialogue; what it added is said (observer material as such)."""
    context = ctx(runtime)
    config = context.config.model_copy(update={"max_turns": state["limit"]})
    dialogue = dialogue_of(state)
    before = (len(dialogue.turns), len(dialogue.tom), len(dialogue.decisions),
              len(dialogue.hygiene))
    run_step(context.engine, step, dialogue, config)
    scenario = dialogue.scenario
    said = [say(f"{scenario.persuader} (ToM)", f"targets {e.target.replace('_', ' ')} by "
                f"{e.method.replace('_', ' ')}", visibility="observer",
                meta={"estimate": e.model_dump()})
            for e in dialogue.tom[before[1]:]]
    flags = iter(dialogue.hygiene[before[3]:])  # one per utterance, none for observer notes
    for turn in dialogue.turns[before[0]:]:
        side = "persuader" if turn.speaker == scenario.persuader else "persuadee"
        meta = {"side": side}
        if turn.visibility == "public":
            meta["hygiene"] = next(flags, [])
        said.append(say(turn.speaker, turn.content, visibility=turn.visibility, meta=meta))
    said += [say(f"{scenario.persuadee} (decision)", d, visibility="observer")
             for d in dialogue.decisions[before[2]:]]
    if step is DECIDE:
        status(f"round {dialogue.persuader_turns} of {state['limit']}")
    return {**fields_of(dialogue), "said": said}


def tom(state: PersuasionState, runtime: Runtime) -> dict:
    return advance(state, runtime, TOM)


def persuade(state: PersuasionState, runtime: Runtime) -> dict:
    return advance(state, runtime, PERSUADER)


def reply(state: PersuasionState, runtime: Runtime) -> dict:
    return advance(state, runtime, PERSUADEE)


def decide(state: PersuasionState, runtime: Runtime) -> dict:
    return advance(state, runtime, DECIDE)


def outcome(state: PersuasionState, runtime: Runtime) -> dict:
    return {"said": [say("Room", f"Outcome: {state['outcome'].replace('_', ' ')}",
                         meta={"outcome": state["outcome"],
                               "double_blind": ctx(runtime).config.double_blind})]}


def opening(state: PersuasionState) -> Literal["stage", "join"]:
    return "stage" if state["turn"] == 0 or not state.get("scenario") else "join"


def next_round(state: PersuasionState) -> Literal["tom", "outcome"]:
    return "tom" if state["outcome"] == "active" else "outcome"


def build_graph() -> StateGraph:
    """One chat turn of a dialogue: set the scene (or let the person in), then ToM, persuader,
    persuadee and decision rounds until it ends."""
    graph = StateGraph(PersuasionState)
    graph.add_node("stage", stage)
    graph.add_node("join", join)
    graph.add_node("tom", tom)
    graph.add_node("persuader", persuade)
    graph.add_node("persuadee", reply)
    graph.add_node("decide", decide)
    graph.add_node("outcome", outcome)
    graph.add_conditional_edges(START, opening, ["stage", "join"])
    graph.add_edge("stage", "tom")
    graph.add_edge("join", "tom")
    graph.add_edge("tom", "persuader")
    graph.add_edge("persuader", "persuadee")
    graph.add_edge("persuadee", "decide")
    graph.add_conditional_edges("decide", next_round, ["tom", "outcome"])
    graph.add_edge("outcome", END)
    return graph


def run_dialogue(engine: Engine, scenario: Scenario, config: PersuasionConfig | None = None,
                 *, key: str = "0") -> DialogueState:
    """One dialogue on a given scenario through the room's steps (no session)."""
    config = config or PersuasionConfig()
    dialogue = new_dialogue(key, scenario)
    while dialogue.outcome == "active":
        for step in ROUND:
            run_step(engine, step, dialogue, config)
    return dialogue


def chat_scenario(engine: Engine, topic: str) -> tuple[Scenario, str]:
    """A scenario for a chat topic, and where it came from.

    The scenario agent writes one; when a small model cannot, a reference scenario from the
    shipped CToMPersu split stands in (chosen by the topic's hash, so it is stable).
    """
    try:
        return draft_scenarios(engine, topic, 1, attempts=2)[0].scenario, "scenario agent"
    except ConfigError:
        records = load_scenarios(package_scenarios())
        index = int(hashlib.sha256(topic.encode()).hexdigest(), 16) % len(records)
        return records[index].scenario, f"CToMPersu reference scenario {index}"


# -- helpers -------------------------------------------------------------------------------------


def _public(view: PersuaderView) -> dict[str, str]:
    return {"persuader": view.persuader, "persuadee": view.persuadee,
            "background": view.background, "goal": view.goal}


def _params(config: PersuasionConfig, state: DialogueState, step: str, max_tokens: int,
            stop: tuple[str, ...], speech: bool = False) -> SamplingParams:
    """Seeded per dialogue, turn and step, so a regenerated dialogue comes out the same; an
    utterance (``speech``) gets the rooms' repetition control, a JSON answer none."""
    text = f"{config.seed}:{state.key}:{len(state.turns)}:{len(state.tom)}:{step}"
    seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "big")
    make = speech_params if speech else SamplingParams
    return make(max_tokens=max_tokens, temperature=config.temperature, seed=seed, stop=stop)


def _clean(state: DialogueState, completion: Completion, speaker: str, other: str,
           call: Call) -> Cleaned:
    """The speaker's own words after the shared hygiene step (a small model prefixes its name,
    scripts the other side, loops, repeats the last turn or its example's answer, echoes its
    instruction or runs out of tokens mid-sentence)."""
    return clean(completion.text, speaker=speaker, others=[other, "Persuader", "Persuadee"],
                 instruction=call.instruction, finish_reason=completion.finish_reason,
                 earlier=[t.content for t in state.public_turns] + call.spec.shown())


def _say(state: DialogueState, speaker: str, cleaned: Cleaned) -> None:
    """An utterance into the dialogue, its hygiene flags kept per turn."""
    state.turns.append(Turn(speaker=speaker, content=cleaned.text))
    state.hygiene.append(cleaned.flags)


def _second_person(text: str) -> str:
    text = re.sub(r"^\s*persuadee\s+believes\b", "you believe", text.strip(), flags=re.I)
    text = re.sub(r"^\s*persuadee\s+wants\b", "you want", text, flags=re.I)
    return re.sub(r"^\s*persuadee\s+", "you ", text, flags=re.I).rstrip(".")


def _sentence(text: str) -> str:
    return text[:1].upper() + text[1:] + "."
