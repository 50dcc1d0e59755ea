"""JSON-schema constrained output: every engine returns a validated object or a typed error."""

from __future__ import annotations

from typing import Annotated, Literal

import pytest
from pydantic import BaseModel, Field

from manyheads.errors import StructuredOutputError
from manyheads.models import SamplingParams

# Every string and list is bounded: a 135M model otherwise can loop inside one until max_tokens.
Short = Annotated[str, Field(max_length=60)]


class City(BaseModel):
    name: str = Field(max_length=40)
    country: str = Field(max_length=40)
    population: int = Field(ge=0, le=50_000_000)
    coastal: bool


class Verdict(BaseModel):
    answer: Literal["yes", "no", "unsure"]
    reason: str = Field(max_length=120)


class Recipe(BaseModel):
    title: str = Field(max_length=50)
    ingredients: list[Short] = Field(min_length=1, max_length=4)
    minutes: int = Field(ge=1, le=240)


class Sum(BaseModel):
    steps: list[Short] = Field(min_length=1, max_length=3)
    result: int = Field(ge=-1000, le=1000)


class Persona(BaseModel):
    name: str = Field(max_length=30)
    expertise: Literal["history", "science", "cooking", "sports", "music"]
    confidence: float = Field(ge=0.0, le=1.0)


CASES = [
    (City, "Describe Paris as a JSON object."),
    (City, "Give me facts about Tokyo."),
    (City, "Tell me about a city in Canada."),
    (City, "What do you know about Nairobi?"),
    (Verdict, "Is the Earth round?"),
    (Verdict, "Can fish fly?"),
    (Verdict, "Will it rain tomorrow in London?"),
    (Verdict, "Is 7 a prime number?"),
    (Recipe, "A quick breakfast recipe, please."),
    (Recipe, "How do I make tomato soup?"),
    (Recipe, "Suggest a simple dessert."),
    (Recipe, "What can I cook with rice and eggs?"),
    (Sum, "What is 12 + 30? Show your steps."),
    (Sum, "Compute 7 times 6."),
    (Sum, "Subtract 9 from 50."),
    (Sum, "Add 100 and 250 step by step."),
    (Persona, "Invent a panel expert on ancient Rome."),
    (Persona, "Create a persona who knows about football."),
    (Persona, "Describe a chef character."),
    (Persona, "Make up a physicist persona."),
]
# Every token decodes to at least one character, and no schema above serialises to more than
# ~350 characters, so this budget always fits a complete object: a failure is the engine's fault.
PARAMS = SamplingParams(max_tokens=400)


def test_twenty_prompts_and_schemas_validate(any_engine):
    by_model: dict[type[BaseModel], list[int]] = {}
    for i, (model, _) in enumerate(CASES):
        by_model.setdefault(model, []).append(i)
    for model, indices in by_model.items():  # one batch per schema
        conversations = [[{"role": "user", "content": CASES[i][1]}] for i in indices]
        for i, completion in zip(indices, any_engine.chat(conversations, PARAMS,
                                                          response_model=model), strict=True):
            assert completion.error is None, f"case {i}: {completion.error}"
            assert isinstance(completion.value(), model)


def test_schema_that_cannot_fit_in_max_tokens_is_a_typed_error(any_engine):
    completion = any_engine.chat([[{"role": "user", "content": CASES[0][1]}]],
                                 SamplingParams(max_tokens=4), response_model=City)[0]
    assert completion.parsed is None
    assert isinstance(completion.error, StructuredOutputError)
    assert "max_tokens=4" in str(completion.error)
    with pytest.raises(StructuredOutputError):
        completion.value()


def test_invalid_json_names_the_problem():
    from manyheads.models.structured import parse

    parsed, error = parse('{"answer": "maybe", "reason": "x"}', Verdict, "stop", 50)
    assert parsed is None and "does not match the schema" in str(error)
    parsed, error = parse("not json", Verdict, "stop", 50)
    assert parsed is None and "not valid JSON" in str(error) and error.raw == "not json"
