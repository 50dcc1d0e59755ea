"""Draft-and-verify decoding with drafts that cost no forward pass.

Multi-agent text repeats itself: names, phrases of the last turn, the persona card, the JSON keys
a schema forces. Two draft sources read that for free:

* ``grammar``: the text a row's JSON grammar allows next and nothing else (jump-forward:
  ``{"name": "``, closing quotes, enum tails), tokenized;
* ``ngram``: prompt lookup, the tokens that followed the latest earlier occurrence of the last
  few tokens, searched in the prompt (the session's transcript) and the output so far.

Where neither has anything, trained draft heads (Medusa or Hydra, optional, as a ``MedusaStep``)
guess from the last hidden state: a greedy row without grammar or penalties gets their candidate
tree, verified with tree attention; a sampled or penalised row a top-1 chain, checked like the
drafts above. Hydra heads, which draw their tree per step, take the n-gram draft into it as one
more branch scored by its acceptance rate, so the pass verifies whichever drafts pay for it
(three same-run A/Bs against verifying the n-gram draft alone where there is one: rooms 1.6-2%
and generic 0.6-1% faster, 2.46 tokens a pass on rooms against 2.32).

A row under a grammar gets no head drafts: where the schema leaves the text free,
the heads' guesses were kept too rarely to pay for the longer pass (bench: draft 1.96x against
draft-hydra 1.83x on structured requests).

One step: the row's own next token (the root), then the drafts after it, all fed in ONE forward
pass; each draft is kept while it is exactly the token the row would have chosen there: the
constrained argmax, or for a sampled row its draw at that position (``decode.draw`` fixes the
random number by seed and position). Output is token-identical to ``vanilla_step``, greedy or
sampled. The cache is cropped to what was kept. No draft: a plain one-token step, so a row
without repetition pays only the lookup.

Batches of more than one row and batches with observers take ``vanilla_step``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING

import torch

from manyheads.models.local.costs import pass_cost
from manyheads.models.local.decode import (
    Batch,
    Row,
    choose_token,
    decode_one,
    forward,
    record_logprob,
    vanilla_step,
)

if TYPE_CHECKING:
    from manyheads.models.medusa.step import MedusaStep

Encode = Callable[[str], list[int]]


MAX_N, MIN_N = 4, 2  # n-gram orders tried, longest first

def ngram_draft(context: Sequence[int], k: int, *, window: int = 4096) -> tuple[list[int], int]:
    """Up to ``k`` tokens that followed the latest earlier match of the context's last n tokens
    (n from ``MAX_N`` down to ``MIN_N``) in its last ``window`` tokens, and that n (0: none)."""
    ctx = list(context[-window:])
    size = len(ctx)
    for n in range(min(MAX_N, size - 1), MIN_N - 1, -1):
        tail = ctx[-n:]
        first = tail[0]
        for start in range(size - n - 1, -1, -1):  # latest match first; must not be the tail
            if ctx[start] == first and ctx[start:start + n] == tail:
                follow = ctx[start + n:start + n + k]
                if follow:
                    return follow, n
    return [], 0


class AcceptanceRate:
    """How often an n-gram draft token is kept, per match order; decays toward ``prior`` so an
    order that stopped drafting is tried again later."""

    def __init__(self, prior: float = 0.5, memory: float = 0.95) -> None:
        self.prior, self.memory = prior, memory
        self.hits = dict.fromkeys(range(MIN_N, MAX_N + 1), prior)
        self.tries = dict.fromkeys(range(MIN_N, MAX_N + 1), 1.0)

    def rate(self, n: int) -> float:
        return self.hits[n] / self.tries[n]

    def update(self, n: int, proposed: int, kept: int) -> None:
        """``kept`` of ``proposed`` drafts survived: that many hits, and one miss if cut."""
        self.hits[n] = self.memory * self.hits[n] + (1 - self.memory) * self.prior + kept
        self.tries[n] = self.memory * self.tries[n] + (1 - self.memory) + kept \
            + (kept < proposed)


def worth_drafting(rate: float, most: int, fixed: int) -> int:
    """How many of ``most`` n-gram drafts maximise expected tokens per unit of pass cost, on
    top of ``fixed`` drafts that are nearly sure (grammar text); 0 = none is worth its cost."""
    def value(k: int) -> float:
        expected = 1 + fixed + sum(rate ** i for i in range(1, k + 1))
        return expected / pass_cost(1 + fixed + k)
    return max(range(most + 1), key=value)


class DraftStep:
    """Callable ``StepFn``: grammar jump-forward and n-gram drafts, verified in one pass.

    ``encode`` turns forced grammar text into token ids (the engine's tokenizer);
    ``ngram_tokens`` bounds an n-gram draft (each extra verified token costs a little: see
    ``bench/verify_cost.py``), ``forced_tokens`` a grammar draft (the text is certain, but its
    tokenization differs from the model's own about half the time: the rest is cut there; where
    the structure repeats, the n-gram draft after it carries the model's own spelling);
    ``medusa`` the heads where the other two have nothing: their tree for greedy rows it fits,
    else a chain of ``head_tokens`` (rows without grammar only).
    """

    def __init__(self, encode: Encode, *, ngram_tokens: int = 8, forced_tokens: int = 16,
                 ngram: bool = True, grammar: bool = True, medusa: MedusaStep | None = None,
                 head_tokens: int = 2) -> None:
        self.encode = encode
        self.ngram_tokens = ngram_tokens if ngram else 0
        self.forced_tokens = forced_tokens if grammar else 0
        self.medusa = medusa
        self.head_tokens = 0 if medusa is None else \
            min(head_tokens, medusa.heads.config.num_heads)
        self.rates = AcceptanceRate()
        self.steps = 0  # statistics, as ``MedusaStep`` keeps them: speculative steps taken,
        self.tokens = 0  # the tokens they emitted (roots included),
        self.proposed = {"grammar": 0, "ngram": 0, "heads": 0}  # and each source's drafts
        self.kept = {"grammar": 0, "ngram": 0, "heads": 0}

    def __call__(self, batch: Batch) -> list[list[int]]:
        if len(batch.rows) != 1 or batch.observers:
            return vanilla_step(batch)
        row = batch.rows[0]
        root_logits = batch.next_logits[0]
        root = choose_token(row, root_logits)  # or the residual draw of the last step
        record_logprob(row, root_logits, root)
        room = row.params.max_tokens - len(row.tokens) - 1
        ends = root in batch.eos_ids or room <= 0  # the row stops at the root: draft nothing
        if not ends and self._tree_fits(batch, row) and self.medusa.drawn:
            return [self._grow(batch, row, root, room)]  # the n-gram draft goes in the tree
        drafts, sources, order = ([], [], 0) if ends else self._draft(batch, row, root, room)
        if not drafts and not ends and self._tree_fits(batch, row):
            return [self._grow(batch, row, root, room)]
        if not drafts:
            decode_one(batch, torch.tensor([root]))
            return [[root]]
        kept = self._verify(batch, row, [root, *drafts])
        for source in sources[:len(kept) - 1]:
            self.kept[source] += 1
        fixed = sources.count("grammar")
        if order and len(kept) - 1 >= fixed:  # the n-gram drafts were reached and checked
            self.rates.update(order, len(drafts) - fixed, len(kept) - 1 - fixed)
        self.steps += 1
        self.tokens += len(kept)
        return [kept]

    @property
    def mean_accepted(self) -> float:
        """Tokens per speculative step (the root included)."""
        return self.tokens / self.steps if self.steps else 0.0

    # -- drafts --------------------------------------------------------------------------------
    def _draft(self, batch: Batch, row: Row, root: int,
               room: int) -> tuple[list[int], list[str], int]:
        """Draft tokens after ``root``, the source of each, and the n-gram order used."""
        drafts: list[int] = []
        grammar = row.grammar
        if grammar is not None and self.forced_tokens:
            if grammar.accept(root):
                text = "" if grammar.done() else grammar.forced()
                grammar.rollback(1)
                drafts = self.encode(text)[:min(self.forced_tokens, room)] if text else []
        sources = ["grammar"] * len(drafts)
        want, order = min(self.ngram_tokens, room - len(drafts)), 0
        if want > 0:
            more, order = ngram_draft([*row.prompt, *row.tokens, root, *drafts], want)
            more = more[:worth_drafting(self.rates.rate(order), len(more), len(drafts))] \
                if order else []
            order = order if more else 0
            drafts += more
            sources += ["ngram"] * len(more)
        if not drafts and self.head_tokens and batch.last_hidden is not None \
                and row.grammar is None and not self._tree_fits(batch, row):
            drafts = self._head_chain(batch, root, min(self.head_tokens, room))
            sources = ["heads"] * len(drafts)
        for source in sources:
            self.proposed[source] += 1
        return drafts, sources, order

    def _tree_fits(self, batch: Batch, row: Row) -> bool:
        """The heads' tree verifies greedy rows without grammar or penalties (exact argmax)."""
        return self.medusa is not None and batch.last_hidden is not None \
            and row.params.greedy and self.medusa.fits(row)

    @torch.no_grad()
    def _grow(self, batch: Batch, row: Row, root: int, room: int) -> list[int]:
        """The heads' tree under ``root``, verified by the ``MedusaStep`` in one pass; a tree
        drawn per step carries the n-gram draft too, each token scored by the chance that it
        and those before it are kept. A node both guessed counts as the n-gram's."""
        chain, order = [], 0
        if self.medusa.drawn and self.ngram_tokens:
            chain, order = ngram_draft([*row.prompt, *row.tokens, root],
                                       min(self.ngram_tokens, room))
        rate = self.rates.rate(order) if order else 0.0
        drafted = self.medusa.drafted
        kept = self.medusa.grow(batch, row, root, room,
                                [(t, rate ** i) for i, t in enumerate(chain, start=1)])
        tried = self.medusa.grafted
        same = 0  # the verified n-gram drafts on the accepted path
        while same < min(tried, len(kept) - 1) and kept[same + 1] == chain[same]:
            same += 1
        if tried:
            self.rates.update(order, tried, same)
        self.proposed["ngram"] += tried
        self.kept["ngram"] += same
        self.proposed["heads"] += self.medusa.drafted - drafted - tried
        self.kept["heads"] += len(kept) - 1 - same
        self.steps += 1
        self.tokens += len(kept)
        return kept

    @torch.no_grad()
    def _head_chain(self, batch: Batch, root: int, k: int) -> list[int]:
        """The heads' top-1 guesses for the k tokens after ``root``. Medusa heads read the last
        hidden state only; Hydra heads also read the token before, so depth d waits for d-1."""
        heads = self.medusa.heads
        lm_head = batch.model.get_output_embeddings()
        hidden = batch.last_hidden[0].to(lm_head.weight.dtype)  # [H]
        if not heads.config.sequential:
            return [int(heads.guesses(i, heads.head_features(i, hidden), lm_head, 1)[0])
                    for i in range(k)]
        embed = batch.model.get_input_embeddings().weight  # [V, H]
        chain, previous = [], root
        for depth in range(k):
            feats = heads.head_features(depth, hidden, embed[previous])  # [H]
            previous = int(heads.guesses(depth, feats, lm_head, 1)[0])
            chain.append(previous)
        return chain

    # -- verification --------------------------------------------------------------------------
    def _verify(self, batch: Batch, row: Row, chain: list[int]) -> list[int]:
        """Feed ``chain`` = [root, drafts...] in one pass; keep the root and the drafts the row
        would have produced itself; crop cache and mask to the kept tokens."""
        prefix = batch.attention_mask.shape[1]
        ones = torch.ones((1, len(chain)), dtype=batch.attention_mask.dtype)
        batch.attention_mask = torch.cat([batch.attention_mask, ones], dim=1)
        outputs = forward(batch, torch.tensor([chain]))  # logits: [1, K+1, V]
        logits = outputs.logits[0].float()  # [K+1, V]
        kept = [chain[0]]
        grammar = row.grammar
        advanced = 0  # tokens the grammar accepted here; rewound, as ``accept`` replays them
        for i, draft in enumerate(chain[1:]):
            if grammar is not None:
                if not grammar.accept(kept[-1]):
                    break
                advanced += 1
                if grammar.done():
                    break
            view = replace(row, tokens=[*row.tokens, *kept])  # the context at position i
            if choose_token(view, logits[i]) != draft:
                break
            record_logprob(row, logits[i], draft)
            kept.append(draft)
            if draft in batch.eos_ids:
                break
        if grammar is not None:
            grammar.rollback(advanced)
        n = len(kept)
        if n < len(chain):
            batch.cache.crop(n - len(chain))  # drop the rejected drafts' keys and values
        batch.attention_mask = batch.attention_mask[:, :prefix + n]
        batch.next_logits = outputs.logits[:, n - 1, :].float()  # [1, V]
        batch.last_hidden = outputs.hidden_states[-1][:, n - 1, :]  # [1, H]
        return kept
