"""Self-supervised data: the backbone solves generated problems in the step format and the
checker labels every step.

Features come either in flight (``solve``: ``LocalEngine`` decodes while a ``FeatureObserver``
records) or by prefill (``solve_by_prefill``: any engine, e.g. vLLM, writes the solutions and one
forward pass of the local backbone over each scores it). Samples are saved in shards so a long
generation can be stopped and still be used.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from manyheads.models.engine import encode_prompt
from manyheads.models.types import ChatMessage, SamplingParams
from manyheads.models.uhead.errors import UHeadError
from manyheads.models.uhead.features import (
    FeatureConfig,
    FeatureObserver,
    prefill_features,
    prompt_cache,
)
from manyheads.models.uhead.prompts import solver_conversation
from manyheads.models.uhead.sample import Sample
from manyheads.models.uhead.steps import answer_number, decode_offsets, split_steps, token_spans
from manyheads.models.uhead.training.checker import is_correct, label_steps
from manyheads.models.uhead.training.problems import Problem

STOP = ("\n\n",)


def build_sample(problem: Problem, tokenizer, ids: list[int], feats: torch.Tensor) -> Sample:
    text, offsets = decode_offsets(tokenizer, ids)
    steps = split_steps(text)
    checks = label_steps(problem, [s.text for s in steps])
    return Sample(problem.id, problem.kind, text, ids, feats.to(torch.float16),
                  token_spans(offsets, steps), [c.label for c in checks],
                  is_correct(problem, text), answer_number(text))


def solver_requests(problems: list[Problem], samples: int, temperature: float, seed: int,
                    max_tokens: int) -> tuple[list[list[ChatMessage]], list[SamplingParams]]:
    """Conversations and params of ``samples`` solutions per problem (samples vary by seed)."""
    conversations, params = [], []
    for p_index, problem in enumerate(problems):
        for s in range(samples):
            conversations.append(solver_conversation(problem.text))
            params.append(SamplingParams(temperature=temperature, top_p=0.95, stop=STOP,
                                         max_tokens=max_tokens,
                                         seed=seed * 7919 + p_index * 101 + s))
    return conversations, params


def solve(engine, observer: FeatureObserver, problems: list[Problem], samples: int,
          temperature: float, seed: int, max_tokens: int = 96) -> list[list[Sample]]:
    """``samples`` solutions per problem, all in one batched chat call, scored in flight."""
    if observer not in engine.observers:
        raise UHeadError("the observer must be in engine.observers")
    completions = engine.chat(*solver_requests(problems, samples, temperature, seed, max_tokens))
    out: list[list[Sample]] = [[] for _ in problems]
    for row, completion in enumerate(completions):
        ids, feats = observer.take(row, completion.usage.completion_tokens)
        problem = problems[row // samples]
        out[row // samples].append(build_sample(problem, engine.tokenizer, ids, feats))
    return out


PromptCache = tuple[list[int], tuple[Any, torch.Tensor]]  # prompt ids, ``prompt_cache`` of them


def solver_prompt(engine, problem: Problem) -> PromptCache:
    """The solver prompt's token ids for ``problem`` (exactly as ``LocalEngine`` feeds them)
    and their KV cache, to score any number of responses to it by prefill."""
    prompt_ids = encode_prompt(engine.tokenizer, solver_conversation(problem.text),
                               engine.context_len)
    return prompt_ids, prompt_cache(engine.model, prompt_ids)


def prefill_sample(engine, problem: Problem, prompt: PromptCache, text: str,
                   config: FeatureConfig) -> Sample | None:
    """``text`` (a response to ``prompt``) scored by one prefill pass; None if it has no tokens."""
    ids = engine.tokenizer(text, add_special_tokens=False)["input_ids"]
    if not ids:
        return None
    prompt_ids, cached = prompt
    feats = prefill_features(engine.model, prompt_ids, ids, config, cached)
    return build_sample(problem, engine.tokenizer, ids, feats)


def solve_by_prefill(text_engine, local_engine, problems: list[Problem], samples: int,
                     temperature: float, seed: int, max_tokens: int = 96,
                     config: FeatureConfig | None = None) -> list[list[Sample]]:
    """Like ``solve``, but ``text_engine`` (any ``Engine``) writes the solutions in one batched
    call and ``local_engine``'s backbone scores each by prefill. Empty completions are skipped.

    The ids are the re-tokenized text, not necessarily the ids that were sampled, and a stop
    string is not part of the text: features match ``solve``'s up to those differences."""
    config = config or FeatureConfig()
    completions = text_engine.chat(*solver_requests(problems, samples, temperature, seed,
                                                    max_tokens))
    out: list[list[Sample]] = []
    for p_index, problem in enumerate(problems):
        prompt = solver_prompt(local_engine, problem)
        rows = completions[p_index * samples:(p_index + 1) * samples]
        scored = (prefill_sample(local_engine, problem, prompt, c.text, config) for c in rows)
        out.append([s for s in scored if s is not None])
    return out


Solver = Callable[[list[Problem], int], list[list[Sample]]]  # (problems, seed) -> per problem


def generate_shards(solver: Solver, problems: list[Problem], directory: Path, per_batch: int,
                    seed: int, on_batch: Callable[[int], None] | None = None) -> None:
    """Solve ``problems`` ``per_batch`` at a time, one shard file per batch (kept if present).

    ``solver(batch, seed)`` is ``solve`` or ``solve_by_prefill`` with its other arguments bound,
    e.g. ``lambda batch, s: solve(engine, observer, batch, samples, temperature, s, max_tokens)``.
    """
    directory.mkdir(parents=True, exist_ok=True)
    for start in range(0, len(problems), per_batch):
        shard = directory / f"shard_{seed}_{start:05d}.pt"
        if not shard.exists():
            batch = solver(problems[start:start + per_batch], seed + start)
            torch.save([s.__dict__ for group in batch for s in group], shard)
        if on_batch:
            on_batch(min(per_batch, len(problems) - start))


def load_samples(directory: Path) -> list[Sample]:
    shards = sorted(Path(directory).glob("shard_*.pt"))
    if not shards:
        raise UHeadError(f"no data shards in {directory}", hint="run `manyheads uhead train`")
    return [Sample(**d) for shard in shards for d in torch.load(shard, weights_only=False)]
