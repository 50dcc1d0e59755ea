"""``room.utter``'s control flow (the hygiene step, one resample) on a scripted engine, and the
few-shot examples an agent is shown."""

from __future__ import annotations

import pytest

from manyheads.agents import Agent, AgentSpec, Example, Turn
from manyheads.agents.hygiene import PLACEHOLDER
from manyheads.agents.prompts import Prompts, load_examples
from manyheads.errors import ConfigError
from manyheads.models.engine import Engine
from manyheads.models.types import Completion
from manyheads.orchestration.room import RoomContext, speech_examples, speech_params, utter


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


def test_a_copy_of_the_shown_example_is_a_repeat_and_sampled_once_more():
    engine = Scripted("Who pays is a fair point.", "Mint grows fast. Try it.")
    example = Example(ask="Reply to Ada.", answer="Who pays is a fair point.")
    agent = Agent(AgentSpec(name="Basil", system_prompt="You are Basil.", examples=[example],
                            sampling=speech_params(max_tokens=32)), engine)
    said = utter(RoomContext(engine=engine, config=None), agent,
                 [Turn(speaker="Ada", content="Herbs grow well on a balcony.")], "Reply to Ada.")
    assert said["content"] == "Mint grows fast. Try it."
    assert "resampled" in said["meta"]["hygiene"]


def test_examples_come_between_the_system_prompt_and_the_conversation():
    example = Example(ask="Bob: Hello?", answer="Hello, Bob.")
    agent = Agent(AgentSpec(name="Ada", system_prompt="You are Ada.", examples=[example]),
                  Scripted())
    view = agent.view([Turn(speaker="Basil", content="Hi.")], "Reply to Basil.")
    assert [(m["role"], m["content"]) for m in view] == [
        ("system", "You are Ada."), ("user", "Bob: Hello?"), ("assistant", "Hello, Bob."),
        ("user", "Basil: Hi."), ("user", "Reply to Basil.")]


def test_packaged_examples_render_with_the_rooms_names_and_go_with_hygiene(monkeypatch):
    from manyheads.orchestration.rooms.demo.graph import PROMPTS as DEMO
    from manyheads.orchestration.rooms.persuasion.graph import PROMPTS as PERSUASION

    shown = speech_examples(DEMO, "guest", host="Ada", guest="Basil", topic="Bikes?")
    assert shown and shown[0].ask.startswith("Ada: ") and "Reply to Ada's" in shown[0].ask
    for role in ("persuader", "persuadee"):
        assert speech_examples(PERSUASION, role, persuader="Ann", persuadee="Bo")
    assert speech_examples(DEMO, "nobody", host="Ada", guest="Basil", topic="x") == []
    monkeypatch.setenv("MANYHEADS_HYGIENE", "0")  # the "before" of bench/quality.py
    assert speech_examples(DEMO, "guest", host="Ada", guest="Basil", topic="Bikes?") == []


def test_a_malformed_examples_file_says_where(tmp_path, monkeypatch):
    package = tmp_path / "myroom"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "prompts.yaml").write_text("a: b\n")
    (package / "examples.yaml").write_text("guest:\n  - ask: Hello?\n")  # no answer
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ConfigError, match=r"myroom/examples.yaml:guest: .*answer"):
        Prompts("myroom").examples("guest")
    (package / "examples.yaml").write_text("guest:\n  - ask: '{{ who }}'\n    answer: Hi.\n")
    load_examples.cache_clear()
    with pytest.raises(ConfigError, match=r"myroom/examples.yaml:guest: 'who' is undefined"):
        Prompts("myroom").examples("guest")
