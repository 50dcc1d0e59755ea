"""One scored solution: what training writes and what ``StepVerifier.rate`` reads."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class Sample:
    """One generated solution with its token features and step labels (1 = incorrect)."""

    problem_id: str
    kind: str
    text: str
    token_ids: list[int]
    features: torch.Tensor  # [R, D] float16
    spans: list[tuple[int, int]]  # token range of each step
    labels: list[int | None]
    correct: bool
    answer: float | None

