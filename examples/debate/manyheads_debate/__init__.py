"""A three-agent debate room, written only against ``import manyheads``.

The first message is the motion; a later message is a remark from the floor that both sides
answer. Proposer and Opposer argue, then the Moderator gives a verdict.
"""

from langgraph.graph import END, START, StateGraph
from langgraph.runtime import Runtime
from pydantic import BaseModel, Field

import manyheads as mh

PROMPTS = mh.Prompts(__package__)
STANCES = {"Proposer": "for", "Opposer": "against"}


class DebateConfig(BaseModel):
    max_tokens: int = Field(64, ge=16, le=256, description="per speech")


class DebateState(mh.RoomState, total=False):
    motion: str  # the first message
    start: int  # where this turn's speeches begin in ``said``


def speaker(state: DebateState, runtime: Runtime, name: str, system: str, ask: str) -> dict:
    ctx = mh.context_of(runtime, DebateConfig)
    params = mh.SamplingParams(max_tokens=ctx.config.max_tokens, stop=("\n\n",))
    agent = mh.Agent(mh.AgentSpec(name=name, system_prompt=system, sampling=params), ctx.engine)
    turns = mh.history_turns(state)
    if state["turn"] > 0:
        turns.append(mh.Turn(speaker="you", content=state["request"]))
    turns += [mh.Turn(speaker=s["speaker"], content=s["content"])
              for s in state["said"][state["start"]:]]
    return {"said": [mh.utter(ctx, agent, turns, ask)]}


def open_floor(state: DebateState) -> dict:
    motion = state["request"] if state["turn"] == 0 else state["motion"]
    return {"motion": motion, "start": len(state.get("said", []))}


def argue(name: str):
    def node(state: DebateState, runtime: Runtime) -> dict:
        stance, motion = STANCES[name], state["motion"]
        return speaker(state, runtime, name, PROMPTS.render(
            "debater_system", name=name, stance=stance, motion=motion),
            PROMPTS.render("speak", stance=stance))
    return node


def moderate(state: DebateState, runtime: Runtime) -> dict:
    return speaker(state, runtime, "Moderator", PROMPTS.render(
        "moderator_system", motion=state["motion"]), PROMPTS.render("verdict"))


def build_graph() -> StateGraph:
    graph = StateGraph(DebateState)
    graph.add_node("open_floor", open_floor)
    graph.add_node("proposer", argue("Proposer"))
    graph.add_node("opposer", argue("Opposer"))
    graph.add_node("moderator", moderate)
    graph.add_edge(START, "open_floor")
    graph.add_edge("open_floor", "proposer")
    graph.add_edge("proposer", "opposer")
    graph.add_edge("opposer", "moderator")
    graph.add_edge("moderator", END)
    return graph


ROOM = mh.Room(name="debate", description="a proposer and an opposer debate; a moderator judges",
               config=DebateConfig, build_graph=build_graph,
               example="Cities should ban cars from their centres.")
