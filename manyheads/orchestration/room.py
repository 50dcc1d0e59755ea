"""What a room's nodes use: the state every room shares, its run context, and how a node speaks.

A room is a LangGraph graph over a state that extends ``RoomState``. The contract
(``orchestration.contract``) fills ``request``, ``turn`` and ``history`` before each turn and stores
every entry a node appends to ``said``, so a node never touches the store, the session or the
listener: it returns ``{"said": [say(...)]}`` and the contract persists and reports it.

Nodes are module-level functions ``node(state, runtime)``; ``runtime.context`` is the
``RoomContext`` (engine, validated config, optional step verifier). Under the LangGraph server,
where no context object is passed, ``context_of`` builds one from the settings.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from typing import Annotated, Any, Generic, TypedDict, TypeVar

from langgraph.config import get_stream_writer
from langgraph.graph import StateGraph
from langgraph.runtime import Runtime
from pydantic import BaseModel, Field

from manyheads.agents import Agent, Example, Turn, hygiene
from manyheads.agents.hygiene import clean
from manyheads.agents.prompts import Prompts
from manyheads.models import Engine, SamplingParams

C = TypeVar("C", bound=BaseModel)
USER = "you"  # the person in a chat, as agents see them
HISTORY_TURNS = 12  # earlier turns an agent is shown at most: keeps prompts inside small contexts
# Repetition control of every free-text turn, chosen by measurement: the ``penalty_sweep`` of
# bench/results/quality.json (bench/quality.py). Not for JSON answers, whose keys must repeat.
SPEECH_PENALTIES: dict[str, float | int] = {"repetition_penalty": 1.1, "no_repeat_ngram_size": 4}


class Artifact(BaseModel):
    """A file a message carries (a picture, a layout); stored once, linked from the message."""

    kind: str
    name: str
    mime: str
    data: bytes
    meta: dict[str, Any] = Field(default_factory=dict)


class Said(BaseModel):
    """One message a room has spoken; the contract stores it exactly once, in order."""

    speaker: str
    content: str
    visibility: str = "public"
    visible_to: str | None = None
    meta: dict[str, Any] = Field(default_factory=dict)
    step_scores: list[dict[str, Any]] | None = None
    artifacts: list[Artifact] = Field(default_factory=list)
    prompt_tokens: int = 0
    completion_tokens: int = 0


class RoomState(TypedDict, total=False):
    """The keys the contract owns; a room's state extends this ``TypedDict``."""

    request: str  # the person's message this turn answers
    turn: int  # its index among the person's messages in the session (0, 1, ...)
    history: list[dict[str, Any]]  # earlier public turns of the session (``Turn`` dumps)
    said: Annotated[list[dict[str, Any]], operator.add]  # every ``Said``, all turns, in order


@dataclass(frozen=True)
class RoomContext(Generic[C]):
    """What every node of one run may use."""

    engine: Engine
    config: C
    verifier: Any = None  # a StepVerifier when the person asked for step scores
    streaming: bool = False  # a listener wants token deltas (a live UI)


def say(speaker: str, content: str, **fields: Any) -> dict[str, Any]:
    """A ``said`` entry (see ``Said``), ready to return from a node: ``{"said": [say(...)]}``."""
    return Said(speaker=speaker, content=content, **fields).model_dump()


def status(text: str) -> None:
    """A progress line for the person watching ("the panel is answering")."""
    _write({"kind": "status", "text": text})


def history_turns(state: RoomState, limit: int = HISTORY_TURNS) -> list[Turn]:
    """The session's earlier public turns as agents see them (the person speaks as ``you``)."""
    return [Turn(**t) for t in state.get("history", [])[-limit:]]


def earlier(state: RoomState, limit: int = 3) -> str:
    """The last ``limit`` exchanges of the session as text: each message of the person and the
    last answer that followed it. Rooms put it before a follow-up, so "now explain why" has
    something to refer to; empty on a session's first message."""
    exchanges: list[list[str]] = []
    for turn in state.get("history", []):
        if turn["speaker"] == USER:
            exchanges.append([turn["content"], ""])
        elif exchanges:
            exchanges[-1][1] = f"{turn['speaker']}: {turn['content']}"
    lines = [f"{USER}: {q}\n{a}".rstrip() for q, a in exchanges[-limit:]]
    return "\n\n".join(lines)


def with_earlier(state: RoomState, limit: int = 3) -> str:
    """This turn's message, preceded by the earlier exchanges when there are any."""
    before = earlier(state, limit)
    if not before:
        return state["request"]
    return f"Earlier in this conversation:\n{before}\n\nNow: {state['request']}"


def this_turn(state: RoomState, start: int) -> list[dict[str, Any]]:
    """``said`` entries from index ``start`` on (a room records ``start`` when a turn begins)."""
    return state.get("said", [])[start:]


def speech_params(**fields: Any) -> SamplingParams:
    """Sampling for an agent's free-text turn: ``fields`` over the rooms' repetition control
    (``SPEECH_PENALTIES``; none while hygiene is off, see ``hygiene.enabled``)."""
    penalties = SPEECH_PENALTIES if hygiene.enabled() else {}
    return SamplingParams(**{**penalties, **fields})


def speech_examples(prompts: Prompts, role: str, **variables: Any) -> list[Example]:
    """Few-shot exchanges for a free-text turn (``<room>/examples.yaml``); none while hygiene
    is off, so ``MANYHEADS_HYGIENE=0`` measures the bare prompts."""
    return prompts.examples(role, **variables) if hygiene.enabled() else []


def utter(ctx: RoomContext, agent: Agent, turns: list[Turn], instruction: str | None,
          **fields: Any) -> dict[str, Any]:
    """An agent's free-text turn as a ``said`` entry, streamed when someone watches.

    Every free-text turn goes through the same hygiene step (``agents.hygiene.clean``): a
    script of the other speakers, a leading name, a loop, a sentence said before or a sentence
    cut by the token budget is cut back; an echo of the instruction or a reply with no whole
    sentence left is sampled once more, and an empty reply becomes a placeholder. What was
    done is kept in the message's ``meta["hygiene"]``.
    """
    others = tuple(dict.fromkeys(t.speaker for t in turns if t.speaker != agent.name))
    earlier = [t.content for t in turns if agent.spec.can_see(t)] + agent.spec.shown()
    if ctx.streaming:
        text, finish = agent.speak(turns, instruction, delta_sink(agent.name)), None
    else:
        completion = agent.respond(turns, instruction)
        text, finish = completion.text, completion.finish_reason
    cleaned = clean(text, speaker=agent.name, others=others, instruction=instruction,
                    finish_reason=finish, earlier=earlier)
    if cleaned.retry and hygiene.enabled():  # once more, another seed
        params = agent.spec.sampling.model_copy(update={
            "temperature": max(agent.spec.sampling.temperature, 0.7),
            "seed": (agent.spec.sampling.seed or 0) + 1})
        completion = agent.respond(turns, instruction, params)
        again = clean(completion.text, speaker=agent.name, others=others,
                      instruction=instruction, finish_reason=completion.finish_reason,
                      earlier=earlier)
        cleaned = again if not again.retry else cleaned
        cleaned.flags.append("resampled")
    meta = {**fields.pop("meta", {}), **cleaned.meta()}
    return say(agent.name, cleaned.text, meta=meta, **fields)


def run_alone(graph: StateGraph, request: str, context: RoomContext,
              on_said: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """One turn of a room without a session or store (evaluation, benchmarks); ``on_said``
    gets each ``said`` entry as it is spoken. Returns the final state."""
    state: dict[str, Any] = {}
    seen = 0
    for state in graph.compile().stream({"request": request, "turn": 0, "history": []},
                                        context=context, stream_mode="values"):
        for entry in state.get("said", [])[seen:]:
            if on_said is not None:
                on_said(entry)
        seen = len(state.get("said", []))
    return state


def delta_sink(speaker: str) -> Callable[[str], None]:
    """A callback that streams ``speaker``'s new tokens to the person watching."""
    return lambda text: _write({"kind": "delta", "speaker": speaker, "text": text})


def context_of(runtime: Runtime, config_type: type[C]) -> RoomContext[C]:
    """The run's context; under the LangGraph server, one built from settings and the run's
    ``context`` dict (config overrides)."""
    if isinstance(runtime.context, RoomContext):
        return runtime.context
    overrides = runtime.context if isinstance(runtime.context, dict) else {}
    return RoomContext(engine=_settings_engine(), config=config_type(**overrides))


@cache
def _settings_engine() -> Engine:
    from manyheads.models import make_engine

    return make_engine()


def _write(event: dict[str, Any]) -> None:
    try:
        writer = get_stream_writer()
    except RuntimeError:  # called outside a graph run (a node tested alone)
        return
    writer(event)
