"""AutoStudio: multi-turn picture making with consistent subjects."""

from manyheads.orchestration.contract import Room
from manyheads.orchestration.rooms.studio.graph import StudioConfig, build_graph

ROOM = Room(name="studio", description="AutoStudio: multi-turn picture making with consistent "
            "subjects", config=StudioConfig, build_graph=build_graph,
            example="A brown dog sits under a big oak tree on a sunny hill.")

__all__ = ["ROOM", "StudioConfig", "build_graph"]
