"""The demo room: two agents on one engine take turns on a topic; every turn is stored.

``build_graph`` reads as the process: speak, then speak again until the target turn count.
Each turn is appended to the store with an idempotency key, so a node replayed after a crash
never duplicates a message, and the LangGraph checkpoint lets ``--resume`` pick up by session id.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from typing import Annotated, Any, TypedDict

from langgraph.graph import END, START, StateGraph
from pydantic import BaseModel, Field

from manyheads.agents import Agent, AgentSpec, Turn
from manyheads.agents.prompts import Prompts
from manyheads.models import Engine, SamplingParams
from manyheads.orchestration.conversation import ChatOptions, Listener, Quiet, store_user_message
from manyheads.orchestration.registry import Room, register

PROMPTS = Prompts(__package__)

USER = "you"  # the person in a chat, as agents see them


class DemoConfig(BaseModel):
    topic: str = Field("keeping a small vegetable garden on a balcony", min_length=3)
    host: str = "Ada"
    guest: str = "Basil"
    turns: int = Field(4, ge=1, le=40)
    max_tokens: int = Field(64, ge=8, le=512)


class DemoState(TypedDict):
    turns: Annotated[list[dict[str, Any]], operator.add]
    target: int


# (turn index, turn, completion) -> the turn as recorded: a replayed turn keeps its first wording
OnTurn = Callable[[int, Turn, Any], Turn]


def make_agents(engine: Engine, config: DemoConfig) -> list[Agent]:
    # A small model rambles into a script of both speakers: stop at the first blank line.
    params = SamplingParams(max_tokens=config.max_tokens, stop=("\n\n",))
    names = {"host": config.host, "guest": config.guest, "topic": config.topic}
    return [
        Agent(AgentSpec(name=config.host, role="host", sampling=params,
                        system_prompt=PROMPTS.render("host_system", **names)), engine),
        Agent(AgentSpec(name=config.guest, role="guest", sampling=params,
                        system_prompt=PROMPTS.render("guest_system", **names)), engine),
    ]


def build_graph(engine: Engine, config: DemoConfig, *, checkpointer=None,
                on_turn: OnTurn | None = None,
                on_delta: Callable[[str, str], None] | None = None):
    """``on_delta(speaker, text)``, when given, receives each turn's tokens as they come."""
    agents = make_agents(engine, config)

    def speak(state: DemoState) -> dict:
        index = len(state["turns"])
        agent, other = agents[index % 2], agents[(index + 1) % 2]
        turns = [Turn(**t) for t in state["turns"]]
        if index == 0:
            instruction = PROMPTS.render("opening", guest=other.name, topic=config.topic)
        else:
            instruction = PROMPTS.render("reply", other=other.name, topic=config.topic)
        if on_delta is None:
            completion = agent.respond(turns, instruction)
            text = completion.text
        else:
            completion = None  # streamed: no usage counts come back
            text = agent.speak(turns, instruction, lambda delta: on_delta(agent.name, delta))
        turn = Turn(speaker=agent.name, content=text.strip() or "(says nothing)")
        if on_turn is not None:
            turn = on_turn(index, turn, completion)
        return {"turns": [turn.model_dump()]}

    def next_step(state: DemoState) -> str:
        return "speak" if len(state["turns"]) < state["target"] else END

    graph = StateGraph(DemoState)
    graph.add_node("speak", speak)
    graph.add_edge(START, "speak")
    graph.add_conditional_edges("speak", next_step, ["speak", END])
    return graph.compile(checkpointer=checkpointer)


def run_demo(engine: Engine, store, config: DemoConfig | None = None, *,
             resume: str | None = None, show: Callable[[Turn], None] | None = None) -> str:
    """Run (or resume) a stored demo session; returns its id.

    A resumed session first finishes an interrupted run from its checkpoint, otherwise it
    continues the conversation for ``config.turns`` more turns.
    """
    if resume is not None:
        session = store.load(resume)
        config = DemoConfig(**{**session.config, **({"turns": config.turns} if config else {})})
        session_id = session.id
    else:
        config = config or DemoConfig()
        session_id = start_session(engine, store, config)
    run_turns(engine, store, session_id, config,
              on_stored=None if show is None else lambda message, turn: show(turn))
    return session_id


def start_session(engine: Engine, store, config: DemoConfig) -> str:
    session_id = store.create_session("demo", title=config.topic,
                                      config=config.model_dump()).id
    for agent in make_agents(engine, config):
        store.add_participant(session_id, name=agent.name, role=agent.spec.role,
                              spec=agent.spec.model_dump(mode="json"))
    return session_id


def run_turns(engine: Engine, store, session_id: str, config: DemoConfig, *,
              joined: Turn | None = None, on_stored: Callable[[Any, Turn], None] | None = None,
              on_delta: Callable[[str, str], None] | None = None) -> None:
    """``config.turns`` more turns (after ``joined``, a person's turn), or finish a crashed run."""

    def record(index: int, turn: Turn, completion: Any) -> Turn:
        usage = completion.usage if completion is not None else None
        stored = store.append_message(
            session_id, role="assistant", participant=turn.speaker, content=turn.content,
            prompt_tokens=usage.prompt_tokens if usage else 0,
            completion_tokens=usage.completion_tokens if usage else 0,
            idempotency_key=f"demo-turn-{index}")
        turn = turn.model_copy(update={"content": stored.content})
        if on_stored is not None:
            on_stored(stored, turn)
        return turn

    run = {"configurable": {"thread_id": session_id}}
    store.set_status(session_id, "running")
    with store.checkpointer() as saver:
        graph = build_graph(engine, config, checkpointer=saver, on_turn=record,
                            on_delta=on_delta)
        snapshot = graph.get_state(run)
        try:
            if snapshot.next:  # interrupted mid-run: replay from the last checkpoint
                graph.invoke(None, run)
            else:
                done = len(snapshot.values.get("turns", [])) if snapshot.values else 0
                new = [joined.model_dump()] if joined else []
                graph.invoke({"turns": new, "target": done + len(new) + config.turns}, run)
        except BaseException:
            store.set_status(session_id, "failed")
            raise
    store.set_status(session_id, "completed")


def converse(engine: Engine, store, session_id: str | None, text: str, *,
             listener: Listener | None = None, options: ChatOptions | None = None) -> str:
    """Chat: the first message is the topic; later ones join the conversation as "you"."""
    listener, options = listener or Quiet(), options or ChatOptions()
    if session_id is None:
        config = DemoConfig(**{"turns": 2, **options.config, "topic": text})
        session_id, joined = start_session(engine, store, config), None
    else:
        config = DemoConfig(**{**store.get_session(session_id).config, **options.config})
        joined = Turn(speaker=USER, content=text)
    store_user_message(store, session_id, text, listener)
    listener.status(f"{config.host} and {config.guest} are talking")
    run_turns(engine, store, session_id, config, joined=joined,
              on_stored=lambda message, turn: listener.message(message),
              on_delta=listener.delta)
    return session_id


register(Room(name="demo", description="two agents take turns on a topic", config=DemoConfig,
              build=build_graph, converse=converse,
              example="keeping a small vegetable garden on a balcony"))
