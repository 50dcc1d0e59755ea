"""The multiplex synthesis carries one whole, attributed sentence per member, never a cut-off
paste: the sentence checks on literal strings, the extractive fallback (MiniLM), and the draft
rounds with their bounded retries (a scripted engine: only the control flow is faked)."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from manyheads.models import SamplingParams
from manyheads.models.engine import Engine
from manyheads.models.types import Completion
from manyheads.orchestration.rooms.multiplex.synthesis import (
    TRIES,
    Draft,
    KeyPoint,
    Synthesis,
    key_point,
    same_script,
    synthesize_panel,
)

VALUES = {"Stoic Teacher": "virtue, self-control, calm acceptance of what we cannot change",
          "Ubuntu Elder": "community, shared humanity, caring for neighbours"}
ANSWERS = [
    {"name": "Stoic Teacher", "tradition": "Stoicism",
     "text": "Hello there friend. Accept calmly what you cannot change and keep your "
             "self-control. This involv"},
    {"name": "Ubuntu Elder", "tradition": "Ubuntu",
     "text": "We live through our neighbours and care for the community together. (S.B"},
]


def test_each_member_gives_its_closest_whole_sentence():
    assert {a["name"]: key_point(a["text"], VALUES[a["name"]]) for a in ANSWERS} == {
        "Stoic Teacher": "Accept calmly what you cannot change and keep your self-control.",
        "Ubuntu Elder": "We live through our neighbours and care for the community together."}


def test_an_answer_with_no_whole_sentence_has_no_key_point():
    assert key_point("This involv", VALUES["Stoic Teacher"]) is None
    assert key_point("Yes. (S.B", VALUES["Stoic Teacher"]) is None


@pytest.mark.parametrize("text", [
    "Keep calm and accept what you cannot change.",
    '  "A person is a person through other people!"  ',
])
def test_a_drafted_key_point_is_one_whole_sentence(text):
    assert Draft.model_validate_json(json.dumps({"sentence": text})).sentence == text.strip(' "')


@pytest.mark.parametrize(("text", "why"), [
    ("Accept calmly what you cannot change and keep your self-contr", "ends its sentence"),
    ("Honour the elders. Share with neighbours.", "one sentence"),
    ("Be calm.", "words, got 2"),
    ("We share and we share and we share and we share and we share.", "repeat itself"),
    ("...this panel adds a new view of the question.", "starts a sentence"),
    ("I will provide {} a view on caring for parents.", "brackets"),
])
def test_a_cut_short_double_or_looping_key_point_is_rejected(text, why):
    with pytest.raises(ValidationError, match=why):
        Draft.model_validate({"sentence": text})


def test_a_sentence_in_another_script_than_the_question_is_not_a_key_point():
    assert not same_script("\u0648\u0634\u0627\u0639\u0631 \u0627\u0644\u0635\u0631\u0627\u0637",
                           "How should families care for ageing parents?")
    assert same_script("Families share the care of their elders.", "How should families care?")
    arabic_then_english = ("\u0648\u0634\u0627\u0639\u0631 \u0627\u0644\u0635\u0631\u0627\u0637 "
                           "\u0648\u0627\u0644\u0635\u0627\u0628\u064a \u0627\u0644\u0622\u0646. "
                           "Care for your neighbours as family.")
    assert key_point(arabic_then_english, VALUES["Ubuntu Elder"], "How should we live?") == \
        "Care for your neighbours as family."


def test_the_synthesis_is_the_overview_then_one_attributed_line_per_member():
    woven = Synthesis(overview="Both traditions ask us to care for others.", points=[
        KeyPoint(member="Stoic Teacher", sentence="Keep calm.", source="extract"),
        KeyPoint(member="Ubuntu Elder", sentence="Share with the village.", source="model")],
        rounds=2)
    assert woven.text() == ("Both traditions ask us to care for others.\n\n"
                            "- Stoic Teacher: Keep calm.\n- Ubuntu Elder: Share with the village.")
    assert woven.meta() == {"drafted": 1, "extracted": 1, "overview": True, "rounds": 2}
    assert Synthesis().text() == ""


class ScriptedSynthesizer(Engine):
    """Answers each draft request from a script keyed by what the prompt asks for; records the
    batches. Only the draft rounds' control flow is faked: parsing and checks are the real ones."""

    def __init__(self, script: dict[str, list[str]]) -> None:
        self.script = script
        self.batches: list[list[str]] = []

    def _key(self, request) -> str:
        user = request.prompt[-1]["content"]
        return next((name for name in VALUES if f"The {name} (" in user), "overview")

    def _run(self, requests):
        keys = [self._key(r) for r in requests]
        self.batches.append(keys)
        round_ = len(self.batches) - 1
        return [Completion(text=self.script[k][min(round_, len(self.script[k]) - 1)],
                           finish_reason="stop") for k in keys]

    async def _stream(self, request):
        yield ""


def drafted(sentence: str) -> str:
    return json.dumps({"sentence": sentence})


def test_failed_drafts_are_retried_then_extracted():
    engine = ScriptedSynthesizer({
        # cut JSON, then a valid point in the retry
        "Stoic Teacher": ['{"sentence": "Accept what', drafted(
            "Accept calmly what you cannot change, and keep your self-control.")],
        # loops in every round: the fallback takes the answer's own sentence
        "Ubuntu Elder": [drafted("We care and we care and we care and we care and we care.")],
        "overview": [drafted("Both answers ask us to live calmly and to care for our "
                             "neighbours.")]})
    woven = synthesize_panel(engine, "How should we live?", ANSWERS, VALUES,
                             SamplingParams(temperature=0.7, seed=3))
    assert engine.batches == [["Stoic Teacher", "Ubuntu Elder", "overview"],
                              ["Stoic Teacher", "Ubuntu Elder"]]  # only the failed ones again
    assert len(engine.batches) == TRIES
    assert [(p.member, p.source) for p in woven.points] == [("Stoic Teacher", "model"),
                                                            ("Ubuntu Elder", "extract")]
    assert woven.text() == (
        "Both answers ask us to live calmly and to care for our neighbours.\n\n"
        "- Stoic Teacher: Accept calmly what you cannot change, and keep your self-control.\n"
        "- Ubuntu Elder: We live through our neighbours and care for the community together.")


def test_an_off_answer_or_echoing_point_is_extracted_instead_and_a_bad_overview_left_out():
    engine = ScriptedSynthesizer({
        "Stoic Teacher": [drafted("Photosynthesis turns sunlight into sugar inside green "
                                  "leaves.")],
        "Ubuntu Elder": [drafted("How should we live together as good people?")],
        "overview": ["not json at all"]})
    woven = synthesize_panel(engine, "How should we live together as good people?", ANSWERS,
                             VALUES, SamplingParams())
    assert [p.source for p in woven.points] == ["extract", "extract"]
    assert woven.overview is None  # a failed overview is left out
