"""The built-in rooms' graphs for the LangGraph API server (``langgraph.json`` at the root).

``langgraph dev`` (or LangGraph Studio) imports this module and supplies persistence itself, so
the graphs are compiled without a checkpointer. Their nodes find no ``RoomContext`` there and
build one from the settings (``MANYHEADS_ENGINE``, ``MANYHEADS_MODEL``, ...), with the run's
``context`` as config overrides. A run's input is ``{"request": "...", "turn": 0, "history": []}``.
"""

from manyheads.orchestration.registry import get_room

demo = get_room("demo").compile()
spp = get_room("spp").compile()
multiplex = get_room("multiplex").compile()
persuasion = get_room("persuasion").compile()
studio = get_room("studio").compile()
