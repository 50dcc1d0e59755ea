"""The multiplex panel room and its PDS: the math by hand, the MiniLM and LLM classifiers, the
graph on the embedded model (batched panel, a final answer in every mode), panel files, the chat
contract against a real SQLite store, and the resumable evaluation."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from manyheads.errors import ConfigError
from manyheads.models.engine import Engine
from manyheads.models.types import Completion
from manyheads.orchestration.conversation import ChatOptions
from manyheads.orchestration.registry import get_room
from manyheads.orchestration.room import Said
from manyheads.orchestration.rooms.multiplex import ROOM
from manyheads.orchestration.rooms.multiplex import eval as multiplex_eval
from manyheads.orchestration.rooms.multiplex.graph import (
    MODES,
    SYNTHESIZER,
    MultiplexConfig,
    ask,
    default_panel,
    load_panel,
)
from manyheads.orchestration.rooms.multiplex.pds import (
    classify_embedding,
    distribution,
    entropy_pct,
    score,
    split_sentences,
)
from manyheads.orchestration.rooms.multiplex.synthesis import TRIES
from manyheads.storage import Store

TINY = {"max_tokens": 24, "member_tokens": 16}


class CountingEngine(Engine):
    """The real engine underneath; records how many requests each batch carried."""

    def __init__(self, inner: Engine) -> None:
        self.inner = inner
        self.batches: list[int] = []

    def _run(self, requests):
        self.batches.append(len(requests))
        return self.inner.run(requests)

    async def _stream(self, request):
        async for delta in self.inner.stream(request.prompt, request.params):
            yield delta


class FakeLoopingSynthesizerEngine(Engine):
    """Members (free text) answer; the synthesizer (JSON drafts) loops in every round, as a tiny
    model sometimes does. Only for the fallback's control flow."""

    def _run(self, requests):
        loop = '{"sentence": "' + "a wise and wise answer " * 6 + '."}'
        return [Completion(text=loop if r.schema else "We honour our elders.",
                           finish_reason="stop") for r in requests]

    async def _stream(self, request):
        yield ""


class FirstSilentEngine(Engine):
    """Member 0 says nothing in its first answer and a whole sentence when asked again; the
    synthesizer's drafts are cut (not JSON). Only for the re-ask's control flow."""

    def __init__(self) -> None:
        self.batches: list[int] = []

    def _run(self, requests):
        self.batches.append(len(requests))
        first = len(self.batches) == 1
        return [Completion(text='{"sentence": "We' if r.schema else
                           "" if first and i == 0 else "We honour our elders always.",
                           finish_reason="stop") for i, r in enumerate(requests)]

    async def _stream(self, request):
        yield ""


class RecordingListener:
    """Keeps what the room reports, to compare with the store afterwards."""

    def __init__(self) -> None:
        self.statuses: list[str] = []
        self.messages: list = []

    def status(self, text: str) -> None:
        self.statuses.append(text)

    def message(self, message) -> None:
        self.messages.append(message)

    def delta(self, speaker: str, text: str) -> None:
        pass


# -- PDS math -----------------------------------------------------------------------------------
def test_entropy_is_100_for_uniform_and_0_for_one_hot_or_empty():
    assert entropy_pct([1 / 7] * 7) == 100.0
    assert entropy_pct([0.25, 0.25, 0.25, 0.25]) == 100.0
    assert entropy_pct([1.0, 0.0, 0.0, 0.0]) == 0.0
    assert entropy_pct([0.0, 0.0, 0.0]) == 0.0  # nothing labelled: no perspective drawn on
    assert entropy_pct([1.0]) == 0.0  # a panel of one cannot be spread
    assert entropy_pct([0.5, 0.5, 0.0, 0.0]) == 50.0  # two of four: log 2 / log 4


def test_distribution_leaves_out_unlabelled_sentences():
    names = ["A", "B", "C"]
    assert distribution(["A", None, "A", "B"], names) == {"A": 2 / 3, "B": 1 / 3, "C": 0.0}
    assert distribution([None, None], names) == {"A": 0.0, "B": 0.0, "C": 0.0}


def test_sentences_are_split_on_punctuation_and_lines_without_fragments():
    text = "Honour your parents. Seek harmony!\n- Care for the land and rivers\nYes."
    assert split_sentences(text) == ["Honour your parents.", "Care for the land and rivers"]


# -- classifiers ----------------------------------------------------------------------------------
TRADITION_SENTENCES = {
    "Confucian Scholar": "Children should honour their parents and elders, and keep harmony in "
                         "the family through proper ritual.",
    "Islamic Scholar": "Giving charity to the poor is a duty before God, who asks us to act with "
                       "justice and mercy.",
    "Ubuntu Elder": "A person becomes a person through other people, so the village shares what "
                    "it has.",
    "Indigenous Knowledge Keeper": "We must care for the land and the rivers as our relatives, "
                                   "thinking of the seventh generation.",
    "Buddhist Teacher": "All things are impermanent, and by letting go of craving through "
                        "meditation we reduce suffering.",
    "Vedantic Teacher": "Each person should follow their dharma, since every action brings its "
                        "karma.",
    "Enlightenment Rationalist": "Individuals have the right to decide for themselves, and policy "
                                 "should follow scientific evidence.",
}


def test_minilm_classifier_finds_the_tradition_each_sentence_was_written_for():
    perspectives = default_panel().perspectives()
    sentences = [*TRADITION_SENTENCES.values(), "Photosynthesis turns light into sugar in leaves."]
    labels = classify_embedding(sentences, perspectives)
    assert labels == [*TRADITION_SENTENCES, None]
    result = score(" ".join(TRADITION_SENTENCES.values()), perspectives)
    assert result.entropy == 100.0 and result.labelled == 7
    assert set(result.sentiment_by_perspective) == set(TRADITION_SENTENCES)


def test_llm_judge_on_the_embedded_model_gives_a_valid_distribution(local_engine):
    perspectives = default_panel().perspectives()
    text = " ".join(list(TRADITION_SENTENCES.values())[:3])
    result = score(text, perspectives, classifier="llm", engine=local_engine)
    assert list(result.shares) == list(perspectives)
    assert sum(result.shares.values()) == pytest.approx(1.0 if result.labelled else 0.0, abs=1e-3)
    assert 0.0 <= result.entropy <= 100.0
    assert result.sentences == 3


# -- panel files ----------------------------------------------------------------------------------
def panel_rows(count: int = 3) -> list[dict[str, str]]:
    return [{"name": f"Member {i}", "tradition": f"tradition {i}", "values": "care",
             "voice": "plain"} for i in range(count)]


def test_default_panel_has_at_least_six_distinct_traditions():
    members = default_panel().members
    assert len(members) >= 6
    assert len({m.tradition for m in members}) == len(members)


def test_panel_loads_from_json_list_and_yaml_mapping(tmp_path: Path):
    as_json = tmp_path / "panel.json"
    as_json.write_text(json.dumps(panel_rows()))
    as_yaml = tmp_path / "panel.yaml"
    as_yaml.write_text(json.dumps({"members": panel_rows(2)}))  # JSON is valid YAML
    assert [m.name for m in load_panel(as_json).members] == ["Member 0", "Member 1", "Member 2"]
    assert len(load_panel(as_yaml).members) == 2


@pytest.mark.parametrize(("members", "expected"), [
    ([*panel_rows(2), {"name": "X", "values": "v", "voice": "v"}],
     "members.2.tradition: field required"),
    (panel_rows(1), "members: list should have at least 2 items"),
    ([*panel_rows(2), panel_rows(1)[0]], "two members are named 'Member 0'"),
    ([{**panel_rows(1)[0], "name": ""}, *panel_rows(2)[1:]], "members.0.name: string should"),
    ([*panel_rows(2), {**panel_rows(1)[0], "name": "Z", "colour": "red"}], "members.2.colour"),
])
def test_bad_panel_file_names_the_file_and_the_field(tmp_path: Path, members, expected):
    path = tmp_path / "bad.yaml"
    path.write_text(json.dumps({"members": members}))
    with pytest.raises(ConfigError, match="bad.yaml") as error:
        load_panel(path)
    assert expected in str(error.value)


def test_unreadable_or_malformed_panel_file_is_a_config_error(tmp_path: Path):
    with pytest.raises(ConfigError, match="cannot read"):
        load_panel(tmp_path / "missing.yaml")
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    with pytest.raises(ConfigError, match="broken.json: not valid json"):
        load_panel(broken)


# -- the graph ------------------------------------------------------------------------------------
def test_panel_members_answer_and_revise_in_one_batch_each(local_engine):
    engine = CountingEngine(local_engine)
    size = len(default_panel().members)
    events = []
    result = ask(engine, "Why do people tell stories?",
                 MultiplexConfig(mode="panel", revise=True, **TINY), on_event=events.append)
    again = [sum(e["meta"].get("asked_again", False) for e in events if e["meta"]["stage"] == s)
             for s in ("answer", "revise")]
    assert engine.batches[0] == size  # all answers in one batch, then the ones asked again
    revise_at = engine.batches.index(size, 1)  # all revisions in one batch
    assert revise_at in (1, 2) and (revise_at == 2 or again[0] == 0)
    assert len(engine.batches) <= revise_at + 2 + TRIES  # + revise retry + draft rounds
    assert all(b <= size + 1 for b in engine.batches)  # points + overview at most
    assert [e["meta"]["stage"] for e in events] == (["answer"] * size + ["revise"] * size
                                                    + ["final"])
    traditions = [m.tradition for m in default_panel().members]
    assert [e["meta"]["tradition"] for e in events[:size]] == traditions
    assert all(Said.model_validate(e).model_dump() == e for e in events)
    assert events == result.transcript
    assert result.speaker == SYNTHESIZER and result.final.strip() and result.sources
    assert "pds" not in events[-1]["meta"]  # ask() leaves the PDS to the caller


@pytest.mark.parametrize("mode", MODES)
def test_every_mode_ends_with_a_final_answer(local_engine, mode):
    result = ask(local_engine, "What makes something beautiful?",
                 MultiplexConfig(mode=mode, **TINY))
    assert result.final.strip() and result.synthesis.strip()
    assert result.transcript[-1]["meta"]["stage"] == "final"
    assert result.transcript[-1]["content"] == result.final
    assert result.transcript[-1]["speaker"] == result.speaker


def test_a_looping_synthesis_falls_back_to_one_whole_key_point_per_member(tmp_path: Path):
    path = tmp_path / "panel.json"
    path.write_text(json.dumps(panel_rows(2)))
    result = ask(FakeLoopingSynthesizerEngine(), "Why?",
                 MultiplexConfig(mode="panel", panel_file=str(path)))
    assert result.final == "- Member 0: We honour our elders.\n- Member 1: We honour our elders."
    assert result.transcript[-1]["meta"]["synthesis"] == {"drafted": 0, "extracted": 2,
                                                          "overview": False, "rounds": 2}
    assert result.sources == ["Member 0", "Member 1"]


def test_a_member_with_nothing_usable_is_asked_once_more(tmp_path: Path):
    path = tmp_path / "panel.json"
    path.write_text(json.dumps(panel_rows(3)))
    engine = FirstSilentEngine()
    result = ask(engine, "Why?", MultiplexConfig(mode="panel", panel_file=str(path)))
    assert engine.batches[:2] == [3, 1]  # everyone, then member 0 alone
    assert result.transcript[0]["meta"]["asked_again"] is True
    assert "asked_again" not in result.transcript[1]["meta"]
    assert result.sources == ["Member 0", "Member 1", "Member 2"]


# -- chat contract --------------------------------------------------------------------------------
def test_converse_stores_the_panel_and_the_synthesis_with_its_pds(local_engine, tmp_path: Path):
    room = get_room("multiplex")
    assert room is ROOM and room.config is MultiplexConfig
    listener = RecordingListener()
    options = ChatOptions(config={"mode": "panel", **TINY})
    members = default_panel().members
    names = [m.name for m in members]
    with Store.open(f"sqlite:///{tmp_path}/s.db") as store:
        session_id = room.converse(local_engine, store, None, "Is it ever right to lie?",
                                   listener=listener, options=options)
        session = store.load(session_id)
        messages = session.messages
    assert session.room == "multiplex" and session.config["mode"] == "panel"
    assert [m.participant for m in messages] == ["you", *names, SYNTHESIZER]
    assert [m.id for m in listener.messages] == [m.id for m in messages]
    assert messages[0].role == "user" and messages[0].content == "Is it ever right to lie?"
    assert [m.idempotency_key for m in messages] == ["user-0", *(f"said-{i}" for i in
                                                                 range(len(names) + 1))]
    assert [m.meta["stage"] for m in messages[1:]] == ["answer"] * len(names) + ["final"]
    assert [m.meta["tradition"] for m in messages[1:-1]] == [m.tradition for m in members]
    final = messages[-1]
    assert list(final.meta["pds"]) == names
    assert 0.0 <= final.meta["pds_entropy"] <= 100.0
    assert "sentiment" in final.meta
    assert final.meta["sources"] and set(final.meta["sources"]) <= set(names)
    assert listener.statuses


# -- evaluation -----------------------------------------------------------------------------------
def test_question_set_covers_the_categories():
    questions = multiplex_eval.load_questions()
    assert len(questions) >= 50
    categories = {q["category"] for q in questions}
    assert categories == {"history", "ethics", "science_society", "family", "economics",
                          "health", "arts"}
    assert {q["category"] for q in multiplex_eval.pick(7)} == categories


def test_eval_resumes_and_writes_json_and_chart(local_engine, tmp_path: Path):
    engine = CountingEngine(local_engine)
    panel = default_panel()
    questions = multiplex_eval.pick(2)
    out = tmp_path / "items.jsonl"
    config = MultiplexConfig(**TINY)
    rows = multiplex_eval.run_eval(engine, questions, out, modes=["baseline", "contextual"],
                                   config=config, panel=panel)
    calls = len(engine.batches)
    again = multiplex_eval.run_eval(engine, questions, out, modes=["baseline", "contextual"],
                                    config=config, panel=panel)
    assert len(engine.batches) == calls == 4 and again == rows  # resumed: no new engine calls
    summary = multiplex_eval.summarize(rows, list(panel.perspectives()))
    data, chart = multiplex_eval.write_results(summary, tmp_path / "results")
    written = json.loads(data.read_text())
    assert set(written["modes"]) == {"baseline", "contextual"}
    assert all(0.0 <= m["pds_entropy"] <= 100.0 for m in written["modes"].values())
    assert chart.read_bytes().startswith(b"\x89PNG")
