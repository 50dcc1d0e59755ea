"""vLLM logits processors of our own (imported by vLLM's engine process by name, see ``FQCN``).

``NoRepeatNGram`` gives vLLM the ``no_repeat_ngram_size`` of ``SamplingParams``: a request asks
for it with ``extra_args={"no_repeat_ngram_size": n}`` (``vllm_xargs`` over HTTP) and gets the
same ban as our decode loop (``banned_ngram_tokens``: output tokens only). Requests without it
are skipped, so loading the processor costs nothing for them. vLLM refuses custom logits
processors together with speculative decoding; engines with draft heads do not load it.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from vllm import SamplingParams
from vllm.v1.sample.logits_processor import AdapterLogitsProcessor

from manyheads.models.local.penalties import banned_ngram_tokens

FQCN = "manyheads.models.vllm_logits:NoRepeatNGram"
KEY = "no_repeat_ngram_size"


def _size(params: SamplingParams) -> int:
    size = (params.extra_args or {}).get(KEY, 0)
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise ValueError(f"{KEY} must be a non-negative integer, got {size!r}")
    return size


class NoRepeatNGram(AdapterLogitsProcessor):
    """Forbid a token that would repeat an n-gram already in the request's output."""

    @classmethod
    def validate_params(cls, params: SamplingParams) -> None:
        _size(params)

    def is_argmax_invariant(self) -> bool:
        return False  # it changes greedy choices too

    def new_req_logits_processor(self, params: SamplingParams
                                 ) -> Callable[[list[int], torch.Tensor], torch.Tensor] | None:
        size = _size(params)
        if not size:
            return None

        def ban(output_ids: list[int], logits: torch.Tensor) -> torch.Tensor:  # logits: [V]
            banned = banned_ngram_tokens(output_ids, size)
            if banned:
                logits[banned] = float("-inf")
            return logits

        return ban
