"""The demo room: two agents discuss a topic; later messages join their conversation."""

from manyheads.orchestration.contract import Room
from manyheads.orchestration.rooms.demo.graph import DemoConfig, build_graph

ROOM = Room(name="demo", description="two agents take turns on a topic", config=DemoConfig,
            build_graph=build_graph, example="keeping a small vegetable garden on a balcony")

__all__ = ["ROOM", "DemoConfig", "build_graph"]
