"""Self-supervised data: the backbone solves generated problems in the step format while a
``FeatureObserver`` records its features; the checker labels every step.

Samples are saved in shards so a long generation can be stopped and still be used.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from manyheads.models.types import SamplingParams
from manyheads.models.uhead.checker import is_correct, label_steps
from manyheads.models.uhead.errors import UHeadError
from manyheads.models.uhead.features import FeatureObserver
from manyheads.models.uhead.problems import Problem
from manyheads.models.uhead.prompts import solver_conversation
from manyheads.models.uhead.steps import answer_number, decode_offsets, split_steps, token_spans

STOP = ("\n\n",)


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


def build_sample(problem: Problem, tokenizer, ids: list[int], feats: torch.Tensor) -> Sample:
    text, offsets = decode_offsets(tokenizer, ids)
    steps = split_steps(text)
    checks = label_steps(problem, [s.text for s in steps])
    return Sample(problem.id, problem.kind, text, ids, feats.to(torch.float16),
                  token_spans(offsets, steps), [c.label for c in checks],
                  is_correct(problem, text), answer_number(text))


def solve(engine, observer: FeatureObserver, problems: list[Problem], samples: int,
          temperature: float, seed: int, max_tokens: int = 96) -> list[list[Sample]]:
    """``samples`` solutions per problem, all in one batched chat call (samples vary by seed)."""
    if observer not in engine.observers:
        raise UHeadError("the observer must be in engine.observers")
    conversations, params = [], []
    for p_index, problem in enumerate(problems):
        for s in range(samples):
            conversations.append(solver_conversation(problem.text))
            params.append(SamplingParams(temperature=temperature, top_p=0.95, stop=STOP,
                                         max_tokens=max_tokens,
                                         seed=seed * 7919 + p_index * 101 + s))
    completions = engine.chat(conversations, params)
    out: list[list[Sample]] = [[] for _ in problems]
    for row, completion in enumerate(completions):
        ids, feats = observer.take(row, completion.usage.completion_tokens)
        problem = problems[row // samples]
        out[row // samples].append(build_sample(problem, engine.tokenizer, ids, feats))
    return out


def generate_shards(engine, observer: FeatureObserver, problems: list[Problem], directory: Path,
                    samples: int, per_batch: int, temperature: float, seed: int,
                    max_tokens: int = 96, on_batch: Callable[[int], None] | None = None) -> None:
    """Solve ``problems`` ``per_batch`` at a time, one shard file per batch (kept if present)."""
    directory.mkdir(parents=True, exist_ok=True)
    for start in range(0, len(problems), per_batch):
        shard = directory / f"shard_{seed}_{start:05d}.pt"
        if not shard.exists():
            batch = solve(engine, observer, problems[start:start + per_batch], samples,
                          temperature, seed + start)
            torch.save([s.__dict__ for group in batch for s in group], shard)
        if on_batch:
            on_batch(min(per_batch, len(problems) - start))


def load_samples(directory: Path) -> list[Sample]:
    shards = sorted(Path(directory).glob("shard_*.pt"))
    if not shards:
        raise UHeadError(f"no data shards in {directory}", hint="run `manyheads uhead train`")
    return [Sample(**d) for shard in shards for d in torch.load(shard, weights_only=False)]
