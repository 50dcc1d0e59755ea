"""Double-blind persuasion with Theory of Mind over a hidden mind (ToMMA-style)."""

from manyheads.orchestration.contract import Room
from manyheads.orchestration.rooms.persuasion.graph import PersuasionConfig, build_graph

# Each round is four graph steps; 4 per persuader turn, plus the scene and the outcome.
ROOM = Room(name="persuasion",
            description="double-blind persuasion with Theory of Mind over a hidden mind",
            config=PersuasionConfig, build_graph=build_graph,
            example="getting a flatmate to join a weekly cooking rota", recursion_limit=100)

__all__ = ["ROOM", "PersuasionConfig", "build_graph"]
