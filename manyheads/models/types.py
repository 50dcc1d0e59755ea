"""Request and result types shared by every engine.

Agents speak only these types, so which engine serves them (local, vLLM, remote) never leaks.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from manyheads.errors import StructuredOutputError

ChatMessage = dict[str, str]  # {"role": "system"|"user"|"assistant", "content": str}


class SamplingParams(BaseModel):
    """How to sample one request. ``temperature == 0`` means greedy."""

    model_config = ConfigDict(frozen=True)

    temperature: float = Field(0.0, ge=0.0, le=5.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    max_tokens: int = Field(256, ge=1)
    stop: tuple[str, ...] = ()
    seed: int | None = None
    logprobs: int | None = Field(None, ge=0, le=20, description="top alternatives per token")
    # Repetition control (``models/local/penalties.py`` states the math of each).
    repetition_penalty: float = Field(
        1.0, gt=0.0, le=10.0,
        description="HF/vLLM: divide positive (multiply negative) logits of every token already "
                    "in the prompt or the output; 1.0 = off, >1 discourages repeats")
    frequency_penalty: float = Field(
        0.0, ge=-2.0, le=2.0,
        description="OpenAI: subtract this times the token's count in the output so far")
    presence_penalty: float = Field(
        0.0, ge=-2.0, le=2.0,
        description="OpenAI: subtract this once from every token already in the output")
    no_repeat_ngram_size: int = Field(
        0, ge=0, le=64,
        description="forbid any n-gram of this size from appearing twice in the output; 0 = off")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0

    @property
    def penalized(self) -> bool:
        """True when any repetition control changes the logits."""
        return (self.repetition_penalty != 1.0 or self.frequency_penalty != 0.0
                or self.presence_penalty != 0.0 or self.no_repeat_ngram_size > 0)


class TokenLogprob(BaseModel):
    token: str
    logprob: float
    top: dict[str, float] = Field(default_factory=dict)


class Usage(BaseModel):
    prompt_tokens: int = 0
    completion_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


class Completion(BaseModel):
    """One finished request. With ``response_model`` either ``parsed`` or ``error`` is set."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    text: str
    finish_reason: Literal["stop", "length"]
    usage: Usage = Field(default_factory=Usage)
    elapsed_s: float = 0.0
    logprobs: list[TokenLogprob] | None = None
    # The ids the model chose, EOS left out (after a stop string: up to the token that completed
    # it); None where the engine does not say (OpenAI). Not always the tokenizer's split of
    # ``text``: 13% of the embedded model's chat answers and all its JSON ones differ.
    token_ids: list[int] | None = None
    parsed: BaseModel | None = None
    error: StructuredOutputError | None = None

    @property
    def tokens_per_s(self) -> float:
        return self.usage.completion_tokens / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def value(self) -> BaseModel:
        """The validated structured object, or the typed error that explains why there is none."""
        if self.error is not None:
            raise self.error
        if self.parsed is None:
            raise StructuredOutputError("this completion was not requested with a response_model")
        return self.parsed
