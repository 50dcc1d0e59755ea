"""An agent is a spec (who it is, what it may see) plus a handle on the shared engine.

Visibility is enforced here by construction: ``Agent.view`` builds the only conversation the agent
is ever shown, from the turns its rules allow, so no prompt wording can leak a private turn.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Literal

from pydantic import BaseModel, Field

from manyheads.models.engine import Engine
from manyheads.models.types import ChatMessage, Completion, SamplingParams

Visibility = Literal["public", "private", "observer"]


class Turn(BaseModel):
    """One utterance in a room. ``private`` turns are seen by the speaker and ``visible_to``."""

    speaker: str
    content: str
    visibility: Visibility = "public"
    visible_to: str | None = None


class Example(BaseModel):
    """A shown exchange: an instruction like the room's and an answer in character. A small model
    copies the form of what it has just seen more readily than it follows a description."""

    ask: str = Field(min_length=1)
    answer: str = Field(min_length=1)


class AgentSpec(BaseModel):
    name: str = Field(min_length=1, max_length=64)
    role: str = ""
    system_prompt: str = Field(min_length=1)
    sees_private_of: list[str] = Field(default_factory=list,
                                       description="speakers whose private turns it may read")
    sees_observer: bool = False
    sampling: SamplingParams = Field(default_factory=lambda: SamplingParams(max_tokens=96))
    examples: list[Example] = Field(default_factory=list,
                                    description="few-shot exchanges shown after the system prompt")

    def shown(self) -> list[str]:
        """The example answers it was shown: a reply that copies one is a repeat, not speech."""
        return [example.answer for example in self.examples]

    def can_see(self, turn: Turn) -> bool:
        if turn.speaker == self.name:
            return True
        if turn.visibility == "public":
            return True
        if turn.visibility == "private":
            return turn.visible_to == self.name or turn.speaker in self.sees_private_of
        return self.sees_observer


class Agent:
    def __init__(self, spec: AgentSpec, engine: Engine) -> None:
        self.spec = spec
        self.engine = engine

    @property
    def name(self) -> str:
        return self.spec.name

    def view(self, turns: list[Turn], instruction: str | None = None) -> list[ChatMessage]:
        """The conversation this agent is shown: its examples, then its own turns as assistant
        and the others' as user."""
        messages: list[ChatMessage] = [{"role": "system", "content": self.spec.system_prompt}]
        for example in self.spec.examples:
            messages.append({"role": "user", "content": example.ask})
            messages.append({"role": "assistant", "content": example.answer})
        for turn in turns:
            if not self.spec.can_see(turn):
                continue
            if turn.speaker == self.name:
                messages.append({"role": "assistant", "content": turn.content})
            else:
                messages.append({"role": "user", "content": f"{turn.speaker}: {turn.content}"})
        if instruction:
            messages.append({"role": "user", "content": instruction})
        return messages

    def respond(self, turns: list[Turn], instruction: str | None = None,
                params: SamplingParams | None = None) -> Completion:
        return self.engine.chat([self.view(turns, instruction)], params or self.spec.sampling)[0]

    def speak(self, turns: list[Turn], instruction: str | None,
              on_delta: Callable[[str], None]) -> str:
        """Free text streamed to ``on_delta`` as it is decoded (a live UI); returns all of it."""

        async def collect() -> str:
            parts = []
            async for delta in self.engine.stream(self.view(turns, instruction),
                                                  self.spec.sampling):
                parts.append(delta)
                on_delta(delta)
            return "".join(parts)

        return asyncio.run(collect())

    def decide(self, turns: list[Turn], response_model: type[BaseModel], instruction: str,
               params: SamplingParams | None = None) -> BaseModel:
        """A validated structured answer (JSON-schema constrained), or ``StructuredOutputError``."""
        return self.engine.structured(self.view(turns, instruction), response_model,
                                      params or self.spec.sampling)
