"""Repetition control for our decode loop: one pure function over one row's logits.

The same four knobs as vLLM and the OpenAI API, with their semantics:

- ``repetition_penalty`` p (HF/vLLM, multiplicative): for every token already in the prompt or
  the output, a positive logit l becomes l / p and a negative one l * p, so p > 1 makes every
  seen token less likely whatever its sign.
- ``frequency_penalty`` f and ``presence_penalty`` r (OpenAI, additive, output tokens only):
  l[t] -= f * count(t in output) + r * [t in output].
- ``no_repeat_ngram_size`` n: a token that would complete an n-gram already present in the
  output is forbidden (its logit becomes -inf), as in HF's ``no_repeat_ngram_size`` but over the
  output only, so a reply may still quote the conversation it answers.

They are applied in that order (vLLM's order for the first three). Shapes: logits [V].
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from manyheads.models.types import SamplingParams


def banned_ngram_tokens(output: Sequence[int], n: int) -> list[int]:
    """Tokens that would repeat an n-gram of ``output`` if sampled next.

    The last n-1 tokens are the prefix of the n-gram being formed; every earlier place where the
    same n-1 tokens occur bans the token that followed there.
    """
    if n <= 0 or len(output) < n:
        return []
    if n == 1:
        return sorted(set(output))
    prefix = list(output[len(output) - n + 1:])
    return sorted({output[i + n - 1] for i in range(len(output) - n + 1)
                   if list(output[i:i + n - 1]) == prefix})


def apply_penalties(logits: torch.Tensor, prompt: Sequence[int], output: Sequence[int],
                    params: SamplingParams) -> torch.Tensor:
    """Penalised copy of ``logits`` [V] given the row's ``prompt`` and ``output`` token ids.

    Returns ``logits`` itself when no penalty is set, so the unpenalised path costs nothing.
    """
    if not params.penalized:
        return logits
    logits = logits.clone()
    vocab = logits.shape[-1]
    if params.repetition_penalty != 1.0:
        seen = torch.tensor(sorted({t for t in (*prompt, *output) if 0 <= t < vocab}),
                            dtype=torch.long)  # [K]
        if seen.numel():
            values = logits[seen]
            logits[seen] = torch.where(values > 0, values / params.repetition_penalty,
                                       values * params.repetition_penalty)
    if output and (params.frequency_penalty or params.presence_penalty):
        ids = torch.tensor([t for t in output if 0 <= t < vocab], dtype=torch.long)
        counts = torch.bincount(ids, minlength=vocab).to(logits.dtype)  # [V]
        logits -= params.frequency_penalty * counts
        logits -= params.presence_penalty * (counts > 0).to(logits.dtype)
    if params.no_repeat_ngram_size:
        banned = banned_ngram_tokens(output, params.no_repeat_ngram_size)
        if banned:
            logits[torch.tensor(banned, dtype=torch.long)] = float("-inf")
    return logits
