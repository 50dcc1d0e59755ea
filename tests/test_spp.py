"""The SPP room and its evaluation harness: metrics by hand, the graph on the embedded model,
resumable runs, and clear errors for bad input."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from manyheads.cli.eval import eval_app
from manyheads.errors import ConfigError
from manyheads.models.engine import Engine
from manyheads.models.types import Completion
from manyheads.orchestration.registry import get_room
from manyheads.orchestration.room import Said
from manyheads.orchestration.rooms.spp import ROOM
from manyheads.orchestration.rooms.spp import eval as spp_eval
from manyheads.orchestration.rooms.spp.graph import (
    DEFAULT_PERSONAS,
    MAX_PERSONAS,
    MIN_PERSONAS,
    SppConfig,
    solve,
)

TINY = SppConfig(max_rounds=1, max_tokens=24, note_tokens=20)


# -- metrics ------------------------------------------------------------------------------------
def test_trivia_counts_any_alias_case_insensitively():
    answers = [["David Seville"], ["Sunset Blvd", "Sunset Boulevard"], ["Campbell-Bannerman"]]
    assert spp_eval.trivia_score("david SEVILLE sang on sunset boulevard.", answers) == 2 / 3
    assert spp_eval.trivia_score("Nothing relevant.", answers) == 0.0


def test_codenames_counts_whole_guesses_with_partial_credit():
    targets = ["director", "kiss", "popcorn", "street"]
    assert spp_eval.codenames_score("Guesses: Director, \"popcorn\".", targets) == 0.5
    assert spp_eval.codenames_score("kissing, streets", targets) == 0.0  # substrings don't count
    assert spp_eval.codenames_score("I pick these.\nGuesses: king arthur, kiss", ["king arthur",
                                                                                  "kiss"]) == 1.0


def test_logic_grid_needs_the_target_and_no_other_house():
    houses = ["1", "2", "3", "4"]
    assert spp_eval.logic_grid_score("Answer: 2", "2", houses) == 1.0
    assert spp_eval.logic_grid_score("It lives in house Two.", "2", houses) == 1.0
    assert spp_eval.logic_grid_score("Answer: 2 or 3", "2", houses) == 0.0
    assert spp_eval.logic_grid_score("Answer: house two, not four", "2", houses) == 0.0
    assert spp_eval.logic_grid_score("Answer: 3", "2", houses) == 0.0
    # reasoning before the final answer may mention other houses
    assert spp_eval.logic_grid_score("House 1 and 3 are out. Answer: 2", "2", houses) == 1.0


# -- the graph: control flow on a fake engine ------------------------------------------------
class FakeCriticEngine(Engine):
    """Never gives usable personas and always asks for a fix; records each batch's size."""

    def __init__(self) -> None:
        self.batches: list[tuple[str | None, int]] = []

    def _run(self, requests):
        schema = requests[0].schema
        title = schema.get("title") if schema else None
        self.batches.append((title, len(requests)))
        texts = {"PersonaPlan": "not json", "Verdict": '{"approve": false, "suggestion": "more"}',
                 "PersonaVerdicts": json.dumps({"verdicts": [{"approve": False,
                                                              "suggestion": "more"}] * 2}),
                 "PersonaNotes": json.dumps({"notes": ["a hint", "another"]}),
                 None: "Answer: 2"}
        return [Completion(text=texts[title], finish_reason="stop") for _ in requests]

    async def _stream(self, request):
        yield ""


@pytest.mark.parametrize("mode", ["single", "multi"])
def test_rounds_are_bounded_and_persona_turns_batched(mode):
    engine = FakeCriticEngine()
    events = []
    result = solve(engine, "Which house?", SppConfig(mode=mode, max_rounds=3),
                   on_event=events.append)
    assert result.personas == list(DEFAULT_PERSONAS)  # unparsable plan: the stock pair
    assert result.rounds == 3 and not result.approved and result.final == "Answer: 2"
    persona_calls = [b for b in engine.batches if b[0] not in (None, "PersonaPlan")]
    # brainstorm (free text in multi mode) is the one batch with title None and size 2
    brainstorm = [b for b in engine.batches if b == (None, 2)]
    if mode == "multi":
        assert persona_calls == [("Verdict", 2)] * 3 and len(brainstorm) == 1
    else:
        assert persona_calls == [("PersonaNotes", 1)] + [("PersonaVerdicts", 1)] * 3
    spoken = [e for e in events if e["meta"]["stage"] == "critique"]
    assert len(spoken) == 3 * 2 and {e["meta"]["round"] for e in spoken} == {1, 2, 3}
    assert {e["speaker"] for e in spoken} == {p.name for p in DEFAULT_PERSONAS}
    # every event is a said entry: the contract stores exactly this dict
    assert all(Said.model_validate(e).model_dump() == e for e in events)
    assert [e["meta"]["stage"] for e in events][-1] == "final"


def test_room_is_registered():
    room = get_room("spp")
    assert room is ROOM and room.config is SppConfig and room.example


# -- the graph on the embedded model -----------------------------------------------------------
class FakeVerifier:
    """A duck-typed step verifier: doubts every step, so every scored step is flagged."""

    class Score:
        score = 0.1

    def score(self, prompt, steps):
        return [self.Score() for _ in steps]


def check_result(result, rounds):
    assert MIN_PERSONAS <= len(result.personas) <= MAX_PERSONAS
    assert 1 <= result.rounds <= rounds
    assert result.final.strip()
    speakers = {t.speaker for t in result.transcript}
    assert {p.name for p in result.personas} <= speakers


def test_multi_mode_on_the_embedded_model(local_engine):
    events = []
    result = solve(local_engine, "Name a fruit that is yellow.", TINY, on_event=events.append)
    check_result(result, TINY.max_rounds)
    assert sum(e["meta"]["stage"] == "brainstorm" for e in events) == len(result.personas)


def test_single_mode_with_a_verifier(local_engine):
    config = TINY.model_copy(update={"mode": "single"})
    events = []
    result = solve(local_engine, "Name a fruit that is yellow.", config, verifier=FakeVerifier(),
                   on_event=events.append)
    check_result(result, config.max_rounds)
    assert result.flags and all(f["score"] < config.flag_below for f in result.flags)
    drafts = [e for e in events if e["meta"]["stage"] == "draft"]
    assert len(drafts) == 1 and drafts[0]["step_scores"]
    assert all(s["score"] == FakeVerifier.Score.score for s in drafts[0]["step_scores"])


# -- the harness ------------------------------------------------------------------------------
def test_an_interrupted_run_resumes_with_the_missing_items(local_engine, tmp_path):
    out = tmp_path / "run.jsonl"
    done = [{"task": "logic_grid", "method": "standard", "mode": None, "idx": i,
             "output": "Answer: 2", "score": 1.0} for i in (0, 2)]
    out.write_text("".join(json.dumps(row) + "\n" for row in done))
    ran = []
    summary = spp_eval.run_eval(local_engine, "logic_grid", "standard", out, limit=3,
                                max_tokens=8, on_item=lambda row, fresh: fresh and ran.append(row))
    assert [row["idx"] for row in ran] == [1]
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["idx"] for r in rows] == [0, 2, 1] and rows[:2] == done
    assert {"input", "output", "parsed", "score"} <= rows[2].keys()
    assert summary["items"] == 3


def test_score_reports_a_malformed_line(tmp_path):
    outputs = tmp_path / "outputs.jsonl"
    outputs.write_text('{"idx": 0, "output": "Answer: 2"}\n{"idx": 1, "output": \n')
    result = CliRunner().invoke(eval_app, ["spp", "score", "--task", "logic_grid",
                                           "--outputs", str(outputs)])
    assert isinstance(result.exception, ConfigError)
    assert f"{outputs}:2" in str(result.exception)


def test_score_prints_the_summary(tmp_path):
    outputs = tmp_path / "outputs.jsonl"
    outputs.write_text('{"idx": 0, "output": "Answer: 2"}\n{"idx": 1, "output": "no idea"}\n')
    result = CliRunner().invoke(eval_app, ["spp", "score", "--task", "logic_grid",
                                           "--outputs", str(outputs)])
    assert result.exit_code == 0, result.output
    assert "50.0" in result.output


def test_unknown_task_or_method_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="unknown task"):
        spp_eval.score_file("chess", tmp_path / "x.jsonl")
    with pytest.raises(ConfigError, match="unknown method"):
        spp_eval.check_method("tree_of_thought")


def test_run_checks_its_names_before_starting_an_engine():
    result = CliRunner().invoke(eval_app, ["spp", "run", "--task", "logic_grid", "--method",
                                           "tree_of_thought", "--engine", "local"])
    assert isinstance(result.exception, ConfigError)
    assert "unknown method" in str(result.exception)
