"""Tree decoding as a ``LocalEngine`` step function.

One step: the base model's own next token is the root; the heads guess the following tokens
from the last hidden state, Medusa heads into the fixed tree `choose-tree` picked, Hydra heads
into a tree drawn afresh from their own confidence (``_drawn_tree``); the candidate tree is fed
in ONE forward pass with a tree attention mask; the longest verified path is accepted; the KV
cache keeps the prefix plus exactly the accepted tree positions, moved down to follow it (the
kept keys/values were computed at the right positions, attending to exactly their ancestors,
so they equal a sequential feed).

Batch size 1 only: rows of a padded batch would accept different numbers of tokens and leave
ragged caches. Larger batches, grammar-constrained rows, rows with repetition penalties and
batches with observers (they expect one pass per token) fall back to ``vanilla_step``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import torch

from manyheads.errors import ConfigError
from manyheads.models.local.costs import pass_cost
from manyheads.models.local.decode import (
    Batch,
    Row,
    choose_token,
    logits_to_probs,
    record_logprob,
    vanilla_step,
)
from manyheads.models.medusa.heads import TREE_FILE, MedusaHeads, default_heads_dir, load_heads
from manyheads.models.medusa.tree import (
    Tree,
    build_tree,
    candidate_tokens,
    from_parents,
    graft_chain,
    greedy_accept,
    prune,
    rejection_accept,
    tree_attention_mask,
    tree_positions,
    typical_accept,
    worth_verifying,
)

# For heads without a chosen tree: three guesses of the first head. Heads carry their own tree in
# ``choose_tree.json`` once `manyheads medusa choose-tree` has measured them on a machine.
DEFAULT_TREE: list[tuple[int, ...]] = [(0,), (1,), (2,)]

# Hydra heads draw their tree per step instead (``MedusaStep._drawn_tree``, after EAGLE-2's
# confidence-shaped trees). Chosen in interleaved runs against the fixed 9-node tree (20 generic
# and 12 room requests, 48 tokens, best of 2): width 5, calibration 0.9 gave 1.48x generic and
# 1.64x rooms against 1.37x and 1.48x in the same run; calibration 0.8-1.0 and width 4-8 were
# within the run-to-run spread of each other, calibration 0.6 or at most 12 nodes did less. The
# calibration discounts the heads' probabilities for drafting time the pass cost leaves out.
DRAW_WIDTH = 5  # nodes expanded per depth
DRAW_FLOOR = 0.04  # no expanding a node less likely than this: it would not be kept anyway
DRAW_MAX_NODES = 16  # the largest pass ``PASS_COST`` measured
DRAW_CALIBRATION = 0.9

Acceptance = Literal["typical", "rejection"]


class MedusaStep:
    """Callable ``StepFn``: Medusa tree decoding with lossless greedy verification.

    ``sampling`` picks the rule for sampled rows: "typical" (threshold ``epsilon``/``alpha``,
    fast, not exact) or "rejection" (exact speculative sampling). ``drawn`` (default: for
    sequential heads) draws each step's tree from the heads' confidence instead of ``tree``.
    """

    def __init__(self, heads: MedusaHeads, tree: list[tuple[int, ...]] | Tree | None = None, *,
                 sampling: Acceptance = "typical", epsilon: float = 0.09,
                 alpha: float = 0.3, drawn: bool | None = None) -> None:
        self.heads = heads
        self.tree = tree if isinstance(tree, Tree) else build_tree(tree or DEFAULT_TREE)
        if self.tree.max_depth > heads.config.num_heads:
            raise ConfigError(f"the tree is {self.tree.max_depth} deep but there are only "
                              f"{heads.config.num_heads} heads")
        if sampling not in ("typical", "rejection"):
            raise ConfigError(f"unknown Medusa sampling rule {sampling!r}",
                              hint="use 'typical' or 'rejection'")
        self.drawn = heads.config.sequential if drawn is None else drawn
        if self.drawn and not heads.config.sequential:
            raise ConfigError("only sequential (Hydra) heads draw their tree per step",
                              hint="Medusa heads verify the fixed tree `choose-tree` picked")
        self.sampling = sampling
        self.epsilon, self.alpha = epsilon, alpha
        self._pruned: dict[int, Tree] = {}
        self.steps = 0  # statistics: tree steps taken, tokens they produced, drafts verified
        self.tokens = 0
        self.drafted = 0
        self.grafted = 0  # of the last step's grafted drafts, how many its tree verified

    # -- helpers -------------------------------------------------------------------------------
    def tree_for(self, room: int) -> Tree:
        """The tree cut to ``room`` levels below the root (no point guessing past max_tokens)."""
        if room >= self.tree.max_depth:
            return self.tree
        if room not in self._pruned:
            self._pruned[room] = prune(self.tree, room)
        return self._pruned[room]

    def _candidates(self, batch: Batch, tree: Tree, root: int) -> torch.Tensor:
        """The tree's tokens [N]: the root, then the heads' guesses under it."""
        if tree.size == 1:
            return torch.tensor([root])
        lm_head = batch.model.get_output_embeddings()
        hidden = batch.last_hidden[0].to(lm_head.weight.dtype)  # [H]
        heads = self.heads
        if heads.config.sequential:
            return self._sequential_candidates(batch, tree, root, hidden, lm_head)
        need = tree.topk_per_head()  # only run the heads the tree uses
        feats = torch.stack([heads.head_features(i, hidden) for i in range(len(need))])  # [D, H]
        top = (heads.guesses(0, feats, lm_head, max(need)) if heads.lm_heads is None else  # shared
               torch.stack([heads.guesses(i, f, lm_head, max(need))
                            for i, f in enumerate(feats)]))  # [D, k]
        return candidate_tokens(tree, root, top)

    def _sequential_candidates(self, batch: Batch, tree: Tree, root: int,
                               hidden: torch.Tensor, lm_head: torch.nn.Module) -> torch.Tensor:
        """Hydra: a node's children are head d's guesses after reading the node's own token
        (d = the node's depth), so each depth waits for the tokens of the one above."""
        embed = batch.model.get_input_embeddings().weight  # [V, H]
        kids = tree.children()
        tokens = torch.empty(tree.size, dtype=torch.long)
        tokens[0] = root
        for depth in range(tree.max_depth):
            parents = [n for n in range(tree.size) if tree.depths[n] == depth and kids[n]]
            feats = self.heads.head_features(depth, hidden.expand(len(parents), -1),
                                             embed[tokens[parents]])  # [P, H]
            k = 1 + max(tree.ranks[c] for n in parents for c in kids[n])
            top = self.heads.guesses(depth, feats, lm_head, k)  # [P, k]
            for row, node in enumerate(parents):
                for child in kids[node]:
                    tokens[child] = top[row, tree.ranks[child]]
        return tokens

    def _drawn_tree(self, batch: Batch, root: int, room: int,
                    drafts: Sequence[tuple[int, float]]) -> tuple[Tree, torch.Tensor]:
        """Hydra: this step's tree and its tokens [N], drawn from the heads' own confidence.

        A node's score is the product of the heads' probabilities along its path, an estimate
        of its chance to be accepted. Each depth expands the ``DRAW_WIDTH`` best-scored nodes
        of the one above (none below ``DRAW_FLOOR``). ``drafts`` from another source (the
        n-gram chain, scored by its acceptance rate) are grafted in as one more branch.
        ``worth_verifying`` keeps as many of the best as pay for the longer pass. A confident
        step grows a deep tree, an unsure one a small and cheap pass."""
        lm_head = batch.model.get_output_embeddings()
        hidden = batch.last_hidden[0].to(lm_head.weight.dtype)  # [H]
        embed = batch.model.get_input_embeddings().weight  # [V, H]
        parents, tokens, scores = [-1], [root], [1.0]
        frontier = [0]
        for depth in range(min(self.heads.config.num_heads, room)):
            feats = self.heads.head_features(depth, hidden.expand(len(frontier), -1),
                                             embed[[tokens[n] for n in frontier]])  # [F, H]
            ids, probs = self.heads.scored_guesses(depth, feats, lm_head, DRAW_WIDTH)  # [F, W]
            born = []
            for row, parent in enumerate(frontier):
                for token, p in zip(ids[row].tolist(), probs[row].tolist(), strict=True):
                    parents.append(parent)
                    tokens.append(token)
                    scores.append(scores[parent] * p)
                    born.append(len(parents) - 1)
            frontier = [n for n in sorted(born, key=scores.__getitem__, reverse=True)[:DRAW_WIDTH]
                        if scores[n] >= DRAW_FLOOR]
            if not frontier:
                break
        grafted = graft_chain(parents, tokens, scores, list(drafts[:room]))
        keep = worth_verifying(scores, pass_cost, DRAW_MAX_NODES, DRAW_CALIBRATION)
        self.grafted = sum(1 for n in grafted if n in keep)
        index = {old: new for new, old in enumerate(keep)}
        tree = from_parents([index[parents[n]] if n else -1 for n in keep],
                            [scores[n] for n in keep])
        return tree, torch.tensor([tokens[n] for n in keep], dtype=torch.long)

    # -- the step ------------------------------------------------------------------------------
    def __call__(self, batch: Batch) -> list[list[int]]:
        if len(batch.rows) != 1 or batch.observers or not self.fits(batch.rows[0]) \
                or batch.last_hidden is None:
            return vanilla_step(batch)
        row = batch.rows[0]
        root_logits = batch.next_logits[0]
        root = choose_token(row, root_logits)  # or the residual draw of the last step
        record_logprob(row, root_logits, root)
        room = row.params.max_tokens - len(row.tokens) - 1
        if root in batch.eos_ids or room <= 0:
            return [[root]]  # the row ends with this token: nothing else to compute
        return [self.grow(batch, row, root, room)]

    @staticmethod
    def fits(row: Row) -> bool:
        """Tree verification reads unconstrained, unpenalised logits."""
        return row.grammar is None and not row.params.penalized

    def grow(self, batch: Batch, row: Row, root: int, room: int,
             drafts: Sequence[tuple[int, float]] = ()) -> list[int]:
        """The heads' tree under ``root`` (cut to ``room`` levels), verified in ONE pass; the
        accepted tokens, root first. Cache, mask, logits and hidden state move past them.
        A drawn tree takes in ``drafts`` [(token, chance of being kept)] after the root too."""
        if self.drawn:
            tree, tokens = self._drawn_tree(batch, root, room, drafts)
        else:
            tree = self.tree_for(room)
            tokens = self._candidates(batch, tree, root)
            self.grafted = 0
        self.drafted += tree.size - 1
        outputs = self._verify(batch, tree, tokens)
        logits = outputs.logits[0].float()  # [N, V]
        extra = None
        if row.params.greedy:
            path = greedy_accept(tree, tokens, logits.argmax(-1))
        else:
            probs = torch.stack([logits_to_probs(x, row.params.temperature, row.params.top_p)
                                 for x in logits])  # [N, V]
            if self.sampling == "typical":
                path = typical_accept(tree, tokens, probs, self.epsilon, self.alpha)
            else:
                path, extra = rejection_accept(tree, tokens, probs, row.generator)
        self._keep(batch, path, outputs)
        accepted = [int(t) for t in tokens[path]]
        for parent, token in zip(path[:-1], accepted[1:], strict=True):
            record_logprob(row, logits[parent], token)
        row.pending = extra  # drawn from the residual after the last kept node: next root
        self.steps += 1
        self.tokens += len(accepted)
        return accepted

    def _verify(self, batch: Batch, tree: Tree, tokens: torch.Tensor) -> Any:
        """One forward pass over the tree tokens [N] after the cached prefix."""
        start = batch.attention_mask.sum(-1)  # [B] position of the root = real tokens so far
        dtype = batch.model.get_output_embeddings().weight.dtype
        return batch.model(
            input_ids=tokens[None],
            attention_mask=tree_attention_mask(batch.attention_mask, tree, dtype),
            position_ids=tree_positions(tree, start),
            past_key_values=batch.cache,
            use_cache=True,
            output_hidden_states=True,
        )

    def _keep(self, batch: Batch, path: list[int], outputs: Any) -> None:
        """Cache and mask keep the prefix plus the accepted tree nodes; logits move to the end."""
        prefix = batch.attention_mask.shape[1]
        keep_path(batch.cache, prefix, path)
        ones = torch.ones((1, len(path)), dtype=batch.attention_mask.dtype)
        batch.attention_mask = torch.cat([batch.attention_mask, ones], dim=1)
        batch.next_logits = outputs.logits[:, path[-1], :].float()
        batch.last_hidden = outputs.hidden_states[-1][:, path[-1], :]

    @property
    def mean_accepted(self) -> float:
        """Tokens per tree step (the base token included)."""
        return self.tokens / self.steps if self.steps else 0.0


def keep_path(cache: Any, prefix: int, path: list[int]) -> None:
    """Keep the ``prefix`` positions plus tree nodes ``path`` (node indices after the prefix) of
    every layer of a DynamicCache: the accepted nodes' keys/values move down to follow the prefix
    (only the nodes not already in their slot: none when the path is nodes 0, 1, 2, ..., which
    is most steps; the copy cost about 1 ms a step here), then the rest is cropped."""
    moves = [(slot, node) for slot, node in enumerate(path) if node != slot]
    if moves:
        dst = prefix + torch.tensor([slot for slot, _ in moves])
        src = prefix + torch.tensor([node for _, node in moves])
        for layer in cache.layers:  # keys/values: [B, heads, S, d]
            layer.keys[:, :, dst] = layer.keys[:, :, src]
            layer.values[:, :, dst] = layer.values[:, :, src]
    end = prefix + len(path)
    extra = cache.get_seq_length() - end
    if extra > 0:  # crop counts from the end (a positive length is deprecated in transformers)
        cache.crop(-extra)


def chosen_tree(heads_dir: str | Path | None) -> list[tuple[int, ...]]:
    """The tree `choose-tree` picked for these heads, or ``DEFAULT_TREE`` if none was."""
    path = Path(heads_dir or default_heads_dir()) / TREE_FILE
    if not path.is_file():
        return DEFAULT_TREE
    try:
        return [tuple(p) for p in json.loads(path.read_text())["tree"]]
    except (ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"bad tree file {path}: {exc}",
                          hint="rerun `manyheads medusa choose-tree`") from None


def enable_medusa(engine: Any, heads_dir: str | Path | None = None,
                  tree: list[tuple[int, ...]] | None = None, **kwargs: Any) -> MedusaStep:
    """Make a ``LocalEngine`` decode with Medusa heads (default: the shipped ones).

    Returns the step (it keeps acceptance statistics); ``engine.step = vanilla_step`` undoes it.
    """
    heads = heads_for(engine, heads_dir)
    step = MedusaStep(heads, tree or chosen_tree(heads_dir), **kwargs)
    engine.step = step
    return step


def heads_for(engine: Any, heads_dir: str | Path | None = None) -> MedusaHeads:
    """Heads (default: the shipped ones) checked against the engine's model and cast to it."""
    heads = load_heads(heads_dir)
    hidden = int(engine.model.config.hidden_size)
    vocab = int(engine.model.get_output_embeddings().weight.shape[0])
    if heads.config.hidden_size != hidden or heads.config.vocab_size != vocab:
        raise ConfigError(
            f"Medusa heads are for hidden {heads.config.hidden_size} / vocab "
            f"{heads.config.vocab_size}, the model has {hidden} / {vocab}",
            hint="train heads for this model with `manyheads medusa train`")
    heads = heads.to(engine.model.get_output_embeddings().weight.dtype)
    heads.prepare_drafts(engine.model.get_output_embeddings().weight)
    return heads
