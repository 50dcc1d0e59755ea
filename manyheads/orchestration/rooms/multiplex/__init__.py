"""Multiplex cultural panel: traditions answer, a synthesizer weaves one answer (PDS-scored)."""

from manyheads.orchestration.contract import Room
from manyheads.orchestration.rooms.multiplex.graph import MultiplexConfig, ask, build_graph

ROOM = Room(name="multiplex", description="Multiplex cultural panel: traditions answer, a "
            "synthesizer weaves one answer, scored by its Perspectives Distribution",
            config=MultiplexConfig, build_graph=build_graph,
            example="How should a family decide who cares for an ageing parent?")

__all__ = ["ROOM", "MultiplexConfig", "ask", "build_graph"]
