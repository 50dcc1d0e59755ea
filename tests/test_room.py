"""``room.utter``'s control flow (the hygiene step, one resample) on a scripted engine."""

from __future__ import annotations

from manyheads.agents import Agent, AgentSpec, Turn
from manyheads.agents.hygiene import PLACEHOLDER
from manyheads.models.engine import Engine
from manyheads.models.types import Completion
from manyheads.orchestration.room import RoomContext, speech_params, utter


class Scripted(Engine):
    """Answers from a list, one per request; keeps the sampling params it was sent."""

    name = "scripted"

    def __init__(self, *texts: str) -> None:
        self.texts, self.params = list(texts), []

    def _run(self, requests):
        self.params += [r.params for r in requests]
        return [Completion(text=self.texts.pop(0), finish_reason="stop") for _ in requests]

    async def _stream(self, request):
        yield ""


def _utter(engine: Engine) -> dict:
    agent = Agent(AgentSpec(name="Basil", system_prompt="You are Basil.",
                            sampling=speech_params(max_tokens=32)), engine)
    turns = [Turn(speaker="Ada", content="Herbs grow well on a balcony.")]
    return utter(RoomContext(engine=engine, config=None), agent, turns, "Reply to Ada.")


def test_a_repeat_is_sampled_once_more_then_kept_clean():
    engine = Scripted("Herbs grow well on a balcony.", "Basil: Mint grows fast. Try it.")
    said = _utter(engine)
    assert said["content"] == "Mint grows fast. Try it."
    assert said["meta"] == {"hygiene": ["stripped_prefix", "resampled"]}
    assert engine.params[0].penalized and engine.params[1].seed == 1  # another seed


def test_with_hygiene_off_the_raw_reply_stands(monkeypatch):
    monkeypatch.setenv("MANYHEADS_HYGIENE", "0")
    engine = Scripted("Herbs grow well on a balcony.")
    assert _utter(engine)["content"] == "Herbs grow well on a balcony."  # no resample


def test_nothing_twice_ends_in_the_placeholder():
    said = _utter(Scripted("Reply to Ada.", "   "))
    assert said["content"] == "Reply to Ada."
    assert said["meta"]["hygiene"] == ["echoed", "resampled"]
    said = _utter(Scripted("", "..."))
    assert said["content"] == PLACEHOLDER and said["meta"]["hygiene"] == ["empty", "resampled"]


def test_no_whole_sentence_is_sampled_once_more():
    said = _utter(Scripted("Sure thing", "Sure thing, mint it is."))
    assert said["content"] == "Sure thing, mint it is." and said["meta"]["hygiene"] == ["resampled"]
