"""What the persuader guesses of the persuadee's hidden mind, and what is worth guarding.

Shared by the room's steps and its metrics, so neither has to import the other.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from manyheads.orchestration.rooms.persuasion.scenarios import MentalAction, Scenario

UNKNOWN = "unknown"
Target = Literal["preventive_belief", "preventive_desire", "generative_belief",
                 "generative_desire"]
Method = Literal["refute", "divert", "remove_concern", "show_desire_met"]
TOM_FIELDS: tuple[Target, ...] = ("preventive_belief", "preventive_desire", "generative_belief",
                                  "generative_desire")


class ToMEstimate(BaseModel):
    """The persuader's guess of the hidden state, and where it will push; "unknown" allowed."""

    preventive_belief: str = Field(max_length=60)
    preventive_desire: str = Field(max_length=60)
    generative_belief: str = Field(max_length=60)
    generative_desire: str = Field(max_length=60)
    target: Target
    method: Method

    @property
    def focus(self) -> str:
        """The guessed text of the target, or "" when the persuader does not know it."""
        text = getattr(self, self.target).strip()
        return "" if text.lower().strip(".") in (UNKNOWN, "", "none") else text



FALLBACK_TOM = ToMEstimate(preventive_belief=UNKNOWN, preventive_desire=UNKNOWN,
                           generative_belief=UNKNOWN, generative_desire=UNKNOWN,
                           target="generative_belief", method="remove_concern")


def hidden_texts(scenario: Scenario) -> list[str]:
    """The hidden beliefs and desires worth guarding ("none" placeholders are not secrets)."""
    actions: tuple[MentalAction, ...] = (scenario.preventive, scenario.generative)
    texts = [t for a in actions for t in (a.belief, a.desire)]
    return [t for t in texts if t.strip().rstrip(".").lower() not in ("none", UNKNOWN, "")]
