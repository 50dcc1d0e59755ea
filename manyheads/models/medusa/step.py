"""Tree decoding as a ``LocalEngine`` step function.

One step: the base model's own next token is the root; the heads guess the following tokens
from the last hidden state; the candidate tree is fed in ONE forward pass with a tree attention
mask; the longest verified path is accepted; the KV cache keeps the prefix plus exactly the
accepted tree positions, moved down to follow it (the kept keys/values were computed at the
right positions, attending to exactly their ancestors, so they equal a sequential feed).

Batch size 1 only: rows of a padded batch would accept different numbers of tokens and leave
ragged caches. Larger batches, grammar-constrained rows, rows with repetition penalties and
batches with observers (they expect one pass per token) fall back to ``vanilla_step``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

import torch

from manyheads.errors import ConfigError
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
    greedy_accept,
    prune,
    rejection_accept,
    tree_attention_mask,
    tree_positions,
    typical_accept,
)

# For heads without a chosen tree: three guesses of the first head. Heads carry their own tree in
# ``choose_tree.json`` once `manyheads medusa choose-tree` has measured them on a machine.
DEFAULT_TREE: list[tuple[int, ...]] = [(0,), (1,), (2,)]

Acceptance = Literal["typical", "rejection"]


class MedusaStep:
    """Callable ``StepFn``: Medusa tree decoding with lossless greedy verification.

    ``sampling`` picks the rule for sampled rows: "typical" (threshold ``epsilon``/``alpha``,
    fast, not exact) or "rejection" (exact speculative sampling).
    """

    def __init__(self, heads: MedusaHeads, tree: list[tuple[int, ...]] | Tree | None = None, *,
                 sampling: Acceptance = "typical", epsilon: float = 0.09,
                 alpha: float = 0.3) -> None:
        self.heads = heads
        self.tree = tree if isinstance(tree, Tree) else build_tree(tree or DEFAULT_TREE)
        if self.tree.max_depth > heads.config.num_heads:
            raise ConfigError(f"the tree is {self.tree.max_depth} deep but there are only "
                              f"{heads.config.num_heads} heads")
        if sampling not in ("typical", "rejection"):
            raise ConfigError(f"unknown Medusa sampling rule {sampling!r}",
                              hint="use 'typical' or 'rejection'")
        self.sampling = sampling
        self.epsilon, self.alpha = epsilon, alpha
        self._pruned: dict[int, Tree] = {}
        self.steps = 0  # statistics: tree steps taken and tokens they produced
        self.tokens = 0

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

    def grow(self, batch: Batch, row: Row, root: int, room: int) -> list[int]:
        """The heads' tree under ``root`` (cut to ``room`` levels), verified in ONE pass; the
        accepted tokens, root first. Cache, mask, logits and hidden state move past them."""
        tree = self.tree_for(room)
        tokens = self._candidates(batch, tree, root)
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
