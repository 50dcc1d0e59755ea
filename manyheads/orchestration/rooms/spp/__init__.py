"""Solo Performance Prompting: personas brainstorm, critique and refine one answer."""

from manyheads.orchestration.contract import Room
from manyheads.orchestration.rooms.spp.graph import SppConfig, build_graph, solve

ROOM = Room(name="spp", description="Solo Performance Prompting: personas brainstorm, critique "
            "and refine one answer", config=SppConfig, build_graph=build_graph,
            example="Write a short poem that names the capital of France and the largest planet.")

__all__ = ["ROOM", "SppConfig", "build_graph", "solve"]
