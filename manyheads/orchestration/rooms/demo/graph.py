"""The demo room: two agents on one engine take turns on a topic.

The first message is the topic; a later message joins the conversation as "you", and both agents
answer with everything said before in view. ``build_graph`` reads as the process: open the turn,
then speak until this turn's share of speeches is done.
"""

from __future__ import annotations

from typing import Literal

from langgraph.graph import END, START, StateGraph
from langgraph.runtime import Runtime
from pydantic import BaseModel, Field

from manyheads.agents import Agent, AgentSpec, Turn
from manyheads.agents.prompts import Prompts
from manyheads.orchestration.room import (
    USER,
    RoomContext,
    RoomState,
    context_of,
    history_turns,
    speech_examples,
    speech_params,
    this_turn,
    utter,
)

PROMPTS = Prompts(__package__)


class DemoConfig(BaseModel):
    host: str = "Ada"
    guest: str = "Basil"
    turns: int = Field(2, ge=1, le=40, description="speeches per message")
    max_tokens: int = Field(64, ge=8, le=512)


class DemoState(RoomState, total=False):
    topic: str  # the first message
    start: int  # index in ``said`` where this turn began


def ctx(runtime: Runtime) -> RoomContext[DemoConfig]:
    return context_of(runtime, DemoConfig)


def make_agents(context: RoomContext[DemoConfig], topic: str) -> list[Agent]:
    config = context.config
    # A small model rambles into a script of both speakers: stop at the first blank line.
    params = speech_params(max_tokens=config.max_tokens, stop=("\n\n",))
    names = {"host": config.host, "guest": config.guest, "topic": topic}
    return [Agent(AgentSpec(name=name, role=role, sampling=params,
                            system_prompt=PROMPTS.render(f"{role}_system", **names),
                            examples=speech_examples(PROMPTS, role, **names)),
                  context.engine)
            for name, role in ((config.host, "host"), (config.guest, "guest"))]


def open_turn(state: DemoState) -> dict:
    """The first message sets the topic; every message starts a new share of speeches."""
    topic = state["request"] if state["turn"] == 0 else state["topic"]
    return {"topic": topic, "start": len(state.get("said", []))}


def speak(state: DemoState, runtime: Runtime) -> dict:
    context = ctx(runtime)
    spoken = this_turn(state, state["start"])
    agents = make_agents(context, state["topic"])
    agent, other = agents[len(spoken) % 2], agents[(len(spoken) + 1) % 2]
    turns = history_turns(state)
    if state["turn"] > 0:  # the person's new message joins the conversation
        turns.append(Turn(speaker=USER, content=state["request"]))
    turns += [Turn(speaker=s["speaker"], content=s["content"]) for s in spoken]
    if state["turn"] == 0 and not spoken:
        instruction = PROMPTS.render("opening", guest=other.name, topic=state["topic"])
    else:
        instruction = PROMPTS.render("reply", other=turns[-1].speaker, topic=state["topic"])
    return {"said": [utter(context, agent, turns, instruction)]}


def more(state: DemoState, runtime: Runtime) -> Literal["speak", "__end__"]:
    done = len(this_turn(state, state["start"]))
    return "speak" if done < ctx(runtime).config.turns else END


def build_graph() -> StateGraph:
    graph = StateGraph(DemoState)
    graph.add_node("open_turn", open_turn)
    graph.add_node("speak", speak)
    graph.add_edge(START, "open_turn")
    graph.add_edge("open_turn", "speak")
    graph.add_conditional_edges("speak", more, ["speak", END])
    return graph
