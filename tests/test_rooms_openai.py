"""Every room and every SPP method through OpenAIEngine, against `manyheads serve` on loopback.

Switching to a stronger model is a URL away; these tests prove the rooms only use what an
OpenAI-compatible server offers (chat, JSON-schema constrained output).
"""

from __future__ import annotations

import pytest

from manyheads.orchestration.conversation import ChatOptions
from manyheads.orchestration.registry import get_room
from manyheads.orchestration.rooms.spp.eval import run_eval
from manyheads.storage import Store

SMALL = {
    "spp": {"max_rounds": 1, "max_tokens": 24, "note_tokens": 16},
    "persuasion": {"max_turns": 1, "max_tokens": 16, "tom_max_tokens": 64},
    "multiplex/baseline": {"mode": "baseline", "max_tokens": 24},
    "multiplex/contextual": {"mode": "contextual", "max_tokens": 24},
    "multiplex/panel": {"mode": "panel", "max_tokens": 24, "member_tokens": 16},
    "studio": {"max_rounds": 0, "max_tokens": 96},
    "demo": {"max_tokens": 16},
}


@pytest.mark.slow
@pytest.mark.parametrize("case", list(SMALL))
def test_room_runs_on_an_openai_compatible_server(openai_engine, tmp_path, case):
    room = get_room(case.split("/")[0])
    with Store.open(f"sqlite:///{tmp_path}/openai.db") as store:
        session_id = room.converse(openai_engine, store, None, room.example,
                                   options=ChatOptions(config=SMALL[case]))
        messages = store.load(session_id).messages
    assert messages[0].participant == "you" and messages[0].content == room.example
    assert any(m.role == "assistant" and m.content.strip() for m in messages[1:])


@pytest.mark.slow
@pytest.mark.parametrize("method,mode", [("standard", "multi"), ("cot", "multi"),
                                         ("self_refine", "multi"), ("spp", "single"),
                                         ("spp", "multi")])
def test_spp_methods_score_through_openai_engine(openai_engine, tmp_path, method, mode):
    summary = run_eval(openai_engine, "logic_grid", method, tmp_path / "out.jsonl", mode=mode,
                       limit=1, max_tokens=32)
    assert summary["items"] == 1 and 0.0 <= summary["score"] <= 100.0
