"""Room turns and their nodes are traced like engine requests, with room, session, node and
agent attributes, when tracing is on (off by default)."""

from __future__ import annotations

from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from manyheads import ChatOptions, Store, get_room
from manyheads.models import telemetry


def test_a_turn_its_nodes_and_its_engine_calls_are_spans(local_engine, tmp_path):
    exporter = InMemorySpanExporter()
    telemetry.configure(exporter=exporter, content=False)
    try:
        with Store.open(f"sqlite:///{tmp_path / 'db.sqlite'}") as store:
            session_id = get_room("demo").converse(
                local_engine, store, None, "tea or coffee",
                options=ChatOptions(config={"turns": 2, "max_tokens": 12}))
    finally:
        telemetry.configure("off")
    spans = exporter.get_finished_spans()
    [turn] = [s for s in spans if s.name == "room.turn"]
    assert turn.attributes["manyheads.room"] == "demo"
    assert turn.attributes["manyheads.session"] == session_id
    nodes = [s for s in spans if s.name.startswith("room.node ")]
    assert [s.attributes["manyheads.node"] for s in nodes] == ["open_turn", "speak", "speak"]
    assert [tuple(s.attributes.get("manyheads.agents", ())) for s in nodes[1:]] == [
        ("Ada",), ("Basil",)]
    assert all(s.parent.span_id == turn.context.span_id for s in nodes)
    engine_calls = [s for s in spans if "gen_ai.request.model" in s.attributes]
    assert len(engine_calls) == 2
    assert all(s.parent is not None and s.parent.trace_id == turn.context.trace_id
               for s in engine_calls)  # engine calls belong to the turn's trace
