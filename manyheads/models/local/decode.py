"""Our decode loop: left-padded batches, a KV cache, greedy or sampled tokens, one step at a time.

A ladder of small functions (gpt-fast style): ``left_pad`` -> ``prefill`` -> ``decode_one`` ->
``logits_to_probs`` -> ``sample_rows`` -> ``decode_stream``. ``decode_stream`` is a generator that
yields after every step, so batch generation and token streaming are the same code. Two hook points:
``Observer`` reads hidden states (always computed: draft heads need the last one) and
attentions of every forward pass (uncertainty heads), and
``StepFn`` replaces the one-token step with one that may accept several tokens (draft heads).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
from transformers import DynamicCache

from manyheads.models.local.penalties import apply_penalties
from manyheads.models.types import SamplingParams


class Observer(Protocol):
    """Sees every forward pass of the base model while a batch is generated."""

    wants_attentions: bool

    def on_forward(self, input_ids: torch.Tensor, outputs: Any, rows: list[int]) -> None:
        """``input_ids``: [B, T] fed this pass; ``rows``: request index of each batch row."""


class Grammar(Protocol):
    """A per-request token constraint (an xgrammar matcher in practice)."""

    def mask(self, logits: torch.Tensor) -> None: ...  # logits: [V], masked in place
    def accept(self, token: int) -> bool: ...
    def rollback(self, tokens: int) -> None: ...
    def forced(self) -> str: ...  # the text the grammar allows next and nothing else
    def done(self) -> bool: ...


@dataclass
class Row:
    """State of one request in the batch."""

    prompt_len: int
    params: SamplingParams
    grammar: Grammar | None = None
    generator: torch.Generator | None = None  # Medusa's rejection sampling draws from it
    seed: int = 0  # sampled rows: token t is ``draw(probs, seed, t)``
    tokens: list[int] = field(default_factory=list)
    logprobs: list[tuple[int, float, dict[int, float]]] = field(default_factory=list)
    finish_reason: str | None = None
    prompt: list[int] = field(default_factory=list)  # prompt ids, for the repetition penalty
    pending: int | None = None  # next token, already drawn by a speculative step's residual


@dataclass
class Batch:
    """Everything the step function needs; mutated in place step by step."""

    model: Any
    rows: list[Row]
    cache: DynamicCache
    attention_mask: torch.Tensor  # [B, S] 1 = real token, grows by the tokens accepted
    next_logits: torch.Tensor  # [B, V] logits for the next token of each row
    last_hidden: torch.Tensor | None  # [B, H] final hidden state at the last position
    observers: list[Observer]
    eos_ids: frozenset[int]
    pad_id: int


StepFn = Callable[[Batch], list[list[int]]]  # returns the tokens accepted per row this step


def left_pad(prompts: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Returns input_ids [B, T] and attention_mask [B, T], padded on the left."""
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for i, prompt in enumerate(prompts):
        ids[i, width - len(prompt):] = torch.tensor(prompt, dtype=torch.long)
        mask[i, width - len(prompt):] = 1
    return ids, mask


def positions(attention_mask: torch.Tensor, new: int) -> torch.Tensor:
    """Position ids [B, new] of the last ``new`` slots, counting only real tokens."""
    pos = attention_mask.cumsum(-1) - 1  # [B, S]
    return pos[:, -new:].clamp(min=0)


def forward(batch: Batch, input_ids: torch.Tensor, logits_to_keep: int = 0) -> Any:
    """One pass of the base model over ``input_ids`` [B, T]; the cache grows by T. Logits for
    the last ``logits_to_keep`` positions (0: all)."""
    wants_attn = any(o.wants_attentions for o in batch.observers)
    outputs = batch.model(
        input_ids=input_ids,
        attention_mask=batch.attention_mask,
        position_ids=positions(batch.attention_mask, input_ids.shape[1]),
        past_key_values=batch.cache,
        use_cache=True,
        output_hidden_states=True,
        output_attentions=wants_attn,
        logits_to_keep=logits_to_keep,
    )
    for observer in batch.observers:
        observer.on_forward(input_ids, outputs, list(range(len(batch.rows))))
    return outputs


def prefill(batch: Batch, input_ids: torch.Tensor) -> None:
    """Run the prompts [B, T]; leaves the next-token logits [B, V] in the batch (only the last
    position's: an lm_head over every prompt row cost ~0.3 s per 256 tokens here)."""
    outputs = forward(batch, input_ids, logits_to_keep=1)
    batch.next_logits = outputs.logits[:, -1, :].float()
    batch.last_hidden = outputs.hidden_states[-1][:, -1, :]


def decode_one(batch: Batch, tokens: torch.Tensor) -> None:
    """Feed one token per row, ``tokens``: [B]; updates the logits for the next step."""
    ones = torch.ones((len(batch.rows), 1), dtype=batch.attention_mask.dtype)
    batch.attention_mask = torch.cat([batch.attention_mask, ones], dim=1)
    outputs = forward(batch, tokens[:, None])
    batch.next_logits = outputs.logits[:, -1, :].float()
    batch.last_hidden = outputs.hidden_states[-1][:, -1, :]


def logits_to_probs(logits: torch.Tensor, temperature: float, top_p: float) -> torch.Tensor:
    """Sampling distribution [V] from logits [V] with temperature and nucleus (top-p) cut."""
    probs = torch.softmax(logits / max(temperature, 1e-5), dim=-1)
    if top_p < 1.0:
        sorted_probs, order = torch.sort(probs, descending=True)
        keep = sorted_probs.cumsum(-1) - sorted_probs < top_p  # always keeps the top token
        sorted_probs = sorted_probs * keep
        probs = torch.zeros_like(probs).scatter_(0, order, sorted_probs)
        probs = probs / probs.sum()
    return probs


def constrain(row: Row, logits: torch.Tensor) -> torch.Tensor:
    """Logits [V] of one row penalised, then masked by its grammar (a new tensor when changed).
    The one place where repetition control and constraints touch the decode loop."""
    raw = logits
    logits = apply_penalties(logits, row.prompt, row.tokens, row.params)
    if row.grammar is not None:
        logits = logits.clone() if logits is raw else logits
        row.grammar.mask(logits)
        if not torch.isfinite(logits).any():  # the n-gram ban left the grammar no token
            logits = apply_penalties(raw, row.prompt, row.tokens,
                                     row.params.model_copy(update={"no_repeat_ngram_size": 0}))
            logits = logits.clone() if logits is raw else logits
            row.grammar.mask(logits)
    return logits


def draw(probs: torch.Tensor, seed: int, position: int) -> int:
    """Sample from ``probs`` [V] with a uniform number fixed by (seed, position).

    The token at a position depends on nothing but the row's seed and its context, not on how
    many random numbers were used before: a seeded row gives the same text alone or in a batch,
    and a drafted token can be checked by exact match, as in greedy decoding.
    """
    gen = torch.Generator().manual_seed((seed * 1_000_003 + position) % (2**63 - 1))
    u = float(torch.rand((), generator=gen, dtype=torch.float64))
    cdf = probs.double().cumsum(0)  # [V]
    token = int(torch.searchsorted(cdf, torch.tensor([u * float(cdf[-1])], dtype=torch.float64),
                                   right=True))
    return min(token, probs.shape[0] - 1)


def choose_token(row: Row, logits: torch.Tensor) -> int:
    """Pick the next token of one row from its logits [V]: a token already drawn, the argmax,
    or a sample, after ``constrain``."""
    if row.pending is not None:
        token, row.pending = row.pending, None
        return token
    logits = constrain(row, logits)
    if row.params.greedy:
        return int(torch.argmax(logits))
    probs = logits_to_probs(logits, row.params.temperature, row.params.top_p)
    return draw(probs, row.seed, len(row.tokens))


def record_logprob(row: Row, logits: torch.Tensor, token: int) -> None:
    """Keep the model's own log-probability of ``token`` (before any constraint) and its top-k."""
    if row.params.logprobs is None:
        return
    logp = torch.log_softmax(logits, dim=-1)
    top = torch.topk(logp, row.params.logprobs) if row.params.logprobs else None
    alternatives = {int(i): float(v) for v, i in zip(*top, strict=True)} if top else {}
    row.logprobs.append((token, float(logp[token]), alternatives))


def vanilla_step(batch: Batch) -> list[list[int]]:
    """The plain autoregressive step: one token per unfinished row, then one forward pass."""
    chosen: list[int] = []
    for row, logits in zip(batch.rows, batch.next_logits, strict=True):
        if row.finish_reason is not None:
            chosen.append(batch.pad_id)
            continue
        token = choose_token(row, logits)
        record_logprob(row, logits, token)
        chosen.append(token)
    accepted = [[t] if r.finish_reason is None else [] for t, r in zip(chosen, batch.rows,
                                                                        strict=True)]
    decode_one(batch, torch.tensor(chosen, dtype=torch.long))
    return accepted


def accept(batch: Batch, index: int, tokens: list[int]) -> list[int]:
    """Append ``tokens`` to a row up to EOS, grammar end or max_tokens; returns what was kept."""
    row = batch.rows[index]
    kept: list[int] = []
    for token in tokens:
        if token in batch.eos_ids:
            row.finish_reason = "stop"
            break
        if row.grammar is not None:
            row.grammar.accept(token)
        row.tokens.append(token)
        kept.append(token)
        if row.grammar is not None and row.grammar.done():
            row.finish_reason = "stop"
            break
        if len(row.tokens) >= row.params.max_tokens:
            row.finish_reason = "length"
            break
    return kept


@torch.inference_mode()
def decode_stream(model: Any, prompts: list[list[int]], rows: list[Row], *, eos_ids: set[int],
                  pad_id: int, observers: list[Observer] = (), step: StepFn = vanilla_step,
                  ) -> Iterator[list[list[int]]]:
    """Yield, after every step, the new tokens of each row, until every row has finished.

    The caller may also set ``row.finish_reason`` between steps (a stop string was seen).
    """
    input_ids, mask = left_pad(prompts, pad_id)
    batch = Batch(model=model, rows=rows, cache=DynamicCache(), attention_mask=mask,
                  next_logits=torch.empty(0), last_hidden=None, observers=list(observers),
                  eos_ids=frozenset(eos_ids), pad_id=pad_id)
    prefill(batch, input_ids)
    while any(r.finish_reason is None for r in rows):
        live = [r.finish_reason is None for r in rows]
        proposed = step(batch)
        yield [accept(batch, i, toks) if alive else [] for i, (alive, toks)
               in enumerate(zip(live, proposed, strict=True))]
