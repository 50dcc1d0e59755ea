"""The persuasion room: double-blind by construction, robust scenario files, resumable batches.

The leak and resume tests run the real embedded model (tiny token budgets keep them short);
the one fake engine below only drives control flow, with canned JSON.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from manyheads.agents import Turn
from manyheads.agents.hygiene import PLACEHOLDER
from manyheads.errors import ConfigError
from manyheads.models.engine import Engine
from manyheads.models.types import Completion
from manyheads.orchestration.conversation import ChatOptions
from manyheads.orchestration.registry import get_room
from manyheads.orchestration.rooms.persuasion import ROOM
from manyheads.orchestration.rooms.persuasion.graph import (
    DIALOGUE_FIELDS,
    DialogueState,
    PersuaderView,
    PersuasionConfig,
    dialogue_of,
    fields_of,
    persuader_spec,
    persuader_view,
    run_batch,
    run_dialogue,
)
from manyheads.orchestration.rooms.persuasion.metrics import leaks, public_texts
from manyheads.orchestration.rooms.persuasion.mind import hidden_texts
from manyheads.orchestration.rooms.persuasion.scenarios import (
    Scenario,
    draft_scenarios,
    load_scenarios,
    package_scenarios,
)
from manyheads.storage.store import Store

ROOT = Path(__file__).resolve().parent.parent
RECORDS = load_scenarios(package_scenarios())
SECRET_SCENARIO = next(r.scenario for r in RECORDS if not r.scenario.preventive.is_none)


class RecordingEngine(Engine):
    """The real engine, plus a log of every conversation and batch size sent to it."""

    def __init__(self, inner: Engine) -> None:
        self.inner = inner
        self.name = inner.name
        self.model_name = inner.model_name
        self.conversations: list[list[dict[str, str]]] = []
        self.batches: list[int] = []

    def _run(self, requests):
        self.batches.append(len(requests))
        self.conversations += [list(r.prompt) for r in requests]
        return self.inner.run(requests)

    def _stream(self, request):
        return self.inner._stream(request)


class FakeScriptEngine(Engine):
    """Canned answers by schema, for control flow only; ``garble`` breaks every JSON answer,
    ``parrot`` says the same words every turn (else each turn's words depend on its prompt)."""

    name = "fake"

    def __init__(self, decision: str = "continue", garble: bool = False,
                 parrot: bool = False) -> None:
        self.decision = decision
        self.garble = garble
        self.parrot = parrot
        self.batches: list[int] = []

    def _run(self, requests):
        self.batches.append(len(requests))
        return [Completion(text=self._answer(r.schema or {}, len(r.prompt)), finish_reason="stop")
                for r in requests]

    def _answer(self, schema: dict, turn: int = 0) -> str:
        properties = schema.get("properties", {})
        if properties and self.garble:
            return "{not json"
        if "decision" in properties:
            return json.dumps({"decision": self.decision})
        if "background" in properties:
            return json.dumps({key: "Ann" if key == "persuader" else "Bo" if key == "persuadee"
                               else f"some {key}" for key in properties})
        if "target" in properties:
            return json.dumps({"preventive_belief": "unknown", "preventive_desire": "unknown",
                               "generative_belief": "it costs too much",
                               "generative_desire": "unknown", "target": "generative_belief",
                               "method": "remove_concern"})
        if self.parrot:
            return "I hear you. Let me explain why it helps."
        return f"I hear you on point {turn}. Let me explain why it helps, {turn} times over."

    async def _stream(self, request):
        yield ""


# -- double-blindness by construction ---------------------------------------------------------


def test_persuader_view_has_no_hidden_fields():
    assert set(PersuaderView.model_fields) == {
        "persuader", "persuadee", "background", "goal", "dialogue", "tom", "feedback"}
    assert not {"preventive", "generative", "scenario", "hidden"} & set(PersuaderView.model_fields)
    state = DialogueState(key="0", scenario=SECRET_SCENARIO)
    view = persuader_view(state, PersuasionConfig())
    dumped = view.model_dump_json() + persuader_spec(view).system_prompt
    secrets = hidden_texts(SECRET_SCENARIO)
    assert len(secrets) == 4
    assert not [s for s in secrets if s in dumped]


def test_leak_detector_finds_planted_and_paraphrased_secrets():
    belief = SECRET_SCENARIO.preventive.belief
    system = {"role": "system", "content": f"You are Lucy. Note: {belief}"}
    assert leaks([system], SECRET_SCENARIO, public=[]) == [belief]
    said = {"role": "user", "content": f"Mike: {belief}"}
    assert leaks([said], SECRET_SCENARIO, public=[belief]) == []  # said aloud is not a leak
    near = belief.replace("persuadee believes that", "Mike thinks").replace(".", "!")
    assert leaks([{"role": "system", "content": near}], SECRET_SCENARIO, public=[]) == [belief]


def test_hidden_text_the_setting_already_states_is_not_a_leak():
    """Packaged scenario 27 states the persuadee's desire in its own public setting."""
    scenario = load_scenarios(package_scenarios())[27].scenario
    view = persuader_view(DialogueState(key="0", scenario=scenario), PersuasionConfig())
    system = {"role": "system", "content": persuader_spec(view).system_prompt}
    assert leaks([system], scenario, public=[]) == []
    planted = {"role": "user", "content": f"Note: {scenario.generative.belief}"}
    assert leaks([system, planted], scenario, public=[]) == [scenario.generative.belief]


# -- scenario files -----------------------------------------------------------------------------


def _write(tmp_path: Path, records: list, name: str = "s.jsonl") -> Path:
    path = tmp_path / name
    if name.endswith(".json"):
        path.write_text(json.dumps(records))
    else:
        path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def _good() -> dict:
    return {"scenario": RECORDS[1].scenario.model_dump(), "dialog": ["persuader: hi"]}


def _without(field: str) -> dict:
    record = _good()
    del record["scenario"]["preventive"][field]
    return record


@pytest.mark.parametrize("bad, where", [
    (_without("belief"), "record 2: field scenario.preventive.belief: Field required"),
    ({**_good(), "scenario": {**_good()["scenario"], "domain": "Lifestyle"}},
     "record 2: field scenario.domain"),
    ({**_good(), "scenario": {**_good()["scenario"], "goal": 7}}, "record 2: field scenario.goal"),
    ({**_good(), "dialog": []}, "record 2: field dialog"),
    ({"dialog": ["persuader: hi"]}, "record 2: field scenario: Field required"),
])
@pytest.mark.parametrize("name", ["s.jsonl", "s.json"])
def test_bad_scenario_records_are_named(tmp_path, bad, where, name):
    path = _write(tmp_path, [_good(), bad], name)
    with pytest.raises(ConfigError) as info:
        load_scenarios(path)
    assert str(path) in str(info.value) and where in str(info.value)


def test_broken_json_line_and_empty_file(tmp_path):
    path = tmp_path / "s.jsonl"
    path.write_text(json.dumps(_good()) + "\n{oops\n")
    with pytest.raises(ConfigError, match="record 2: not valid JSON"):
        load_scenarios(path)
    path.write_text("\n")
    with pytest.raises(ConfigError, match="no scenario records"):
        load_scenarios(path)


def test_package_scenarios_load():
    assert len(RECORDS) == 60
    assert all(r.dialog for r in RECORDS)


# -- control flow (fake engine) -----------------------------------------------------------------


def test_lock_step_rounds_share_one_batch_and_stop_at_the_limit():
    engine = FakeScriptEngine()
    items = [(str(i), RECORDS[i].scenario) for i in range(5)]
    done = run_batch(engine, items, PersuasionConfig(max_turns=2), concurrency=3)
    assert sorted(d.key for d in done) == [str(i) for i in range(5)]
    assert all(d.outcome == "turn_limit" and d.persuader_turns == 2 for d in done)
    # 3 then 2 dialogues, 2 rounds each, 4 steps a round: one engine batch per step
    assert engine.batches == [3] * 8 + [2] * 8


def test_an_utterance_with_nothing_new_is_sampled_once_more(monkeypatch):
    engine = FakeScriptEngine(parrot=True)  # the persuadee repeats the persuader word for word
    [done] = run_batch(engine, [("0", RECORDS[0].scenario)], PersuasionConfig(max_turns=1))
    assert engine.batches == [1] * 5  # ToM, persuader, persuadee twice, decision
    assert done.turns[1].content == PLACEHOLDER
    assert done.hygiene[1] == ["repeated", "empty", "resampled"]
    monkeypatch.setenv("MANYHEADS_HYGIENE", "0")  # "before" in bench/quality.py
    engine = FakeScriptEngine(parrot=True)
    [raw] = run_batch(engine, [("0", RECORDS[0].scenario)], PersuasionConfig(max_turns=1))
    assert engine.batches == [1] * 4 and raw.turns[1].content == raw.turns[0].content


def test_agreement_ends_early_and_graph_matches_batch():
    engine = FakeScriptEngine(decision="agree")
    [batch] = run_batch(engine, [("0", RECORDS[0].scenario)], PersuasionConfig(max_turns=3))
    direct = run_dialogue(engine, RECORDS[0].scenario, PersuasionConfig(max_turns=3))
    assert batch.outcome == direct.outcome == "agreed"
    assert batch.model_dump() == direct.model_dump()  # the same steps, one way to make a turn


def _room_state(store: Store, session_id: str) -> dict:
    with store.checkpointer() as saver:
        run = {"configurable": {"thread_id": session_id}}
        return ROOM.compile(saver).get_state(run).values


def test_the_room_graph_runs_the_same_steps_as_a_batch(tmp_path):
    engine = FakeScriptEngine(decision="agree")
    options = ChatOptions(config={"max_turns": 3})
    with Store.open(f"sqlite:///{tmp_path / 's.db'}") as store:
        session_id = get_room("persuasion").converse(engine, store, None, "a cooking rota",
                                                     options=options)
        state = _room_state(store, session_id)
        messages = store.load(session_id).messages
        # The scene the scenario agent set, run as a batch keyed by the session (the seed).
        scenario = Scenario.model_validate(state["scenario"])
        [batch] = run_batch(engine, [(session_id, scenario)], PersuasionConfig(max_turns=3))
        assert {k: state[k] for k in DIALOGUE_FIELDS} == fields_of(batch)
        assert state["outcome"] == "agreed" and batch.persuader_turns == 1

        public = [(m.participant, m.content) for m in messages if m.visibility == "public"]
        assert public == [("you", "a cooking rota"), ("Scene", public[1][1]),
                          *((t.speaker, t.content) for t in batch.public_turns),
                          ("Room", "Outcome: agreed")]
        observer = {m.participant for m in messages if m.visibility == "observer"}
        assert observer == {"Hidden state", "Ann (ToM)", "Bo (decision)"}
        assert messages[-1].meta == {"outcome": "agreed", "double_blind": True}
        assert [m.idempotency_key for m in messages] == [
            "user-0", *(f"said-{i}" for i in range(len(messages) - 1))]

        # A second message joins the same dialogue, which goes on for more rounds.
        get_room("persuasion").converse(engine, store, session_id, "Ann, mention the savings.",
                                        options=options)
        later = dialogue_of(_room_state(store, session_id))
        messages = store.load(session_id).messages
    assert later.turns[:len(batch.turns)] == batch.turns
    assert Turn(speaker="you", content="Ann, mention the savings.") in later.turns
    assert later.persuader_turns == 2 and later.outcome == "agreed"
    assert sum(m.role == "user" for m in messages) == 2
    assert [m.participant for m in messages].count("Room") == 2
    assert len({m.idempotency_key for m in messages}) == len(messages)


def test_garbled_structured_output_falls_back():
    engine = FakeScriptEngine(garble=True)
    [state] = run_batch(engine, [("0", RECORDS[0].scenario)], PersuasionConfig(max_turns=2))
    assert state.outcome == "turn_limit" and state.tom_fallbacks == 2
    assert state.decisions == ["continue", "continue"]
    assert all(e.generative_belief == "unknown" for e in state.tom)


def test_scenario_agent_drafts_or_fails_clearly():
    [record] = draft_scenarios(FakeScriptEngine(), "health", 1)
    assert record.scenario.domain == ["health"] and record.scenario.persuadee == "Bo"
    assert record.scenario.generative.content == record.scenario.goal
    with pytest.raises(ConfigError, match="wrote 0 valid scenarios of 2"):
        draft_scenarios(FakeScriptEngine(garble=True), "health", 2)


# -- real model ---------------------------------------------------------------------------------


@pytest.mark.slow
def test_no_hidden_text_reaches_the_persuader(local_engine):
    recorder = RecordingEngine(local_engine)
    config = PersuasionConfig(max_turns=2, max_tokens=8, tom_max_tokens=16)
    items = [(str(i), RECORDS[i].scenario) for i in range(8)]
    done = run_batch(recorder, items, config, concurrency=4)
    assert len(done) == 8 and max(recorder.batches) == 4
    checked = 0
    for state in done:
        system = persuader_spec(persuader_view(state, config)).system_prompt
        public = public_texts(state.turns, state.tom)
        for conversation in recorder.conversations:
            if conversation[0]["content"] == system:
                assert leaks(conversation, state.scenario, public) == [], state.key
                checked += 1
    resampled = sum("resampled" in flags for d in done
                    for turn, flags in zip(d.public_turns, d.hygiene, strict=True)
                    if turn.speaker == d.scenario.persuader)
    # ToM + turn every round, + a turn sampled again (nothing usable in 8 tokens)
    assert checked == sum(2 * d.persuader_turns for d in done) + resampled


def _items(url: str, name: str) -> list[tuple[int, str]]:
    from sqlalchemy import select

    from manyheads.storage.models import Dataset, DatasetItem

    with Store.open(url) as store, store.reading() as db:
        rows = db.execute(select(DatasetItem.id, DatasetItem.payload).join(Dataset)
                          .where(Dataset.name == name)).all()
    return [(row.id, row.payload["key"]) for row in rows]


@pytest.mark.slow
def test_killed_batch_resumes_without_loss_or_duplicates(tmp_path):
    url = f"sqlite:///{tmp_path / 'store.db'}"
    env = {**os.environ, "MANYHEADS_DATABASE_URL": url, "HF_HUB_OFFLINE": "1"}
    out = tmp_path / "out"
    command = [sys.executable, "-m", "manyheads.cli", "generate", "persuasion",
               "--scenarios", str(package_scenarios()), "--out", str(out), "--n", "3",
               "--concurrency", "2", "--engine", "local", "--max-turns", "1",
               "--max-tokens", "8", "--tom-max-tokens", "16", "--name", "resume-test"]
    job = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 600
    try:
        while time.monotonic() < deadline and job.poll() is None:
            if Path(tmp_path / "store.db").exists() and _items(url, "resume-test"):
                break
            time.sleep(0.5)
        assert job.poll() is None, "the job ended before it could be killed"
        job.send_signal(signal.SIGKILL)
        job.wait(30)
    finally:
        if job.poll() is None:
            job.kill()
    before = _items(url, "resume-test")
    assert 1 <= len(before) < 3  # the second wave was still running
    rerun = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True,
                           timeout=600)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    after = _items(url, "resume-test")
    assert sorted(key for _, key in after) == ["000000", "000001", "000002"]
    assert set(before) <= set(after)  # the rows stored before the kill are the same rows
    lines = (out / "persuasion.jsonl").read_text().splitlines()
    assert len(lines) == 3 and all(json.loads(line)["dialog"] for line in lines)
    assert "Double-blind: yes" in (out / "README.md").read_text()
