"""LLM-judge step labels from any ``Engine`` through structured output.

Meant for a stronger model behind ``OpenAIEngine``; the checker covers problems with exact
answers, the judge covers everything else. Steps the judge does not mention stay unlabelled.
"""

from __future__ import annotations

from pydantic import BaseModel, Field, create_model

from manyheads.models.types import SamplingParams
from manyheads.models.uhead.prompts import render


class StepVerdict(BaseModel):
    step: int = Field(ge=1, le=64, description="the step number, starting at 1")
    correct: bool


def verdicts_model(count: int) -> type[BaseModel]:
    """The response model for ``count`` steps: the list is bounded so a constrained decoder
    cannot loop, and the number of verdicts is the number of steps."""
    return create_model("Verdicts", steps=(list[StepVerdict],
                                           Field(min_length=count, max_length=count)))


def judge_conversation(problem: str, steps: list[str]) -> list[dict[str, str]]:
    return [{"role": "system", "content": render("judge_system")},
            {"role": "user", "content": render("judge_user", problem=problem, steps=steps)}]


def judge_labels(engine, problem: str, steps: list[str], max_tokens: int = 256
                 ) -> list[int | None]:
    """1 for a step the judge calls incorrect, 0 for correct, None when it gave no verdict."""
    verdicts = engine.structured(judge_conversation(problem, steps), verdicts_model(len(steps)),
                                 SamplingParams(max_tokens=max_tokens))
    labels: list[int | None] = [None] * len(steps)
    for verdict in verdicts.steps:
        if 1 <= verdict.step <= len(steps) and labels[verdict.step - 1] is None:
            labels[verdict.step - 1] = 0 if verdict.correct else 1
    return labels
