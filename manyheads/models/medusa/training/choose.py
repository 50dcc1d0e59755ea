"""Pick a candidate tree from measured head accuracy and measured forward cost on this machine.

On greedy self-distilled data a tree node (path of ranks r_1..r_d) would be accepted at position
j exactly when, for every level l, the true token j+l is head l-1's rank r_l guess. We count
that per node over held-out positions (no independence assumption), grow the tree greedily by
highest acceptance probability (a node's probability never exceeds its parent's, so the tree
stays valid), and since at most one node per depth can match, the expected tokens per step of a
tree is ``1 + sum(p(node))``. Dividing by the measured cost of a verification pass with N tokens
(relative to a one-token pass) gives the predicted speed-up; the best N wins.

The heads' own drafting is charged too, per tree depth (``draft_cost``): Hydra heads draft one
depth at a time, each waiting for the tokens of the one above, so a deeper tree costs more
before the pass even starts. Measured here at 0.55-0.59 ms a depth for the 2-block Hydra
heads, about 1% of a pass: it has not changed their tree, but it would for heavier heads.
"""

from __future__ import annotations

import statistics
import time
from typing import Any

import torch
from transformers import DynamicCache

from manyheads.models.medusa.heads import MedusaHeads, previous_tokens
from manyheads.models.medusa.training.data import Sequence, head_targets
from manyheads.models.medusa.tree import build_tree, tree_attention_mask, tree_positions


@torch.no_grad()
def truth_ranks(heads: MedusaHeads, sequences: list[Sequence], lm_head_weight: torch.Tensor,
                depth: int = 10, embed_weight: torch.Tensor | None = None) -> torch.Tensor:
    """ranks [P, K]: rank of the true future token in each head's top-``depth`` (-1 if absent).

    Sequential heads read the true previous tokens: a path only counts when every level above
    it matched, so that is exactly what they see in decoding.
    """
    k = heads.config.num_heads
    out = []
    for seq in sequences:
        y = head_targets(seq.tokens, k)  # [L, K]
        prev = None
        if heads.config.sequential:
            prev = embed_weight.float()[previous_tokens(seq.tokens, k).clamp_min(0)]
            prev = prev.permute(1, 0, 2)  # [K, L, H]
        logits = heads.only_drafted(heads(seq.hidden.float(), lm_head_weight.float(), prev))
        top = logits.topk(depth, -1).indices  # [K, L, depth]
        hit = top.permute(1, 0, 2) == y[:, :, None]  # [L, K, depth]
        rank = torch.where(hit.any(-1), hit.float().argmax(-1), torch.full_like(y, -1))
        out.append(torch.where(y == -100, torch.full_like(y, -2), rank))  # -2: no target
    ranks = torch.cat(out)
    return ranks[(ranks[:, 0] != -2)]


def path_prob(ranks: torch.Tensor, path: tuple[int, ...]) -> float:
    """Share of positions where every level of ``path`` guesses the true token."""
    ok = torch.ones(ranks.shape[0], dtype=torch.bool)
    for level, r in enumerate(path):
        ok &= ranks[:, level] == r
    return float(ok.float().mean())


def grow_tree(ranks: torch.Tensor, max_nodes: int, max_rank: int = 10,
              ) -> list[tuple[tuple[int, ...], float]]:
    """Greedy tree: (path, acceptance probability) in the order they were added."""
    k = ranks.shape[1]
    frontier = {(r,): path_prob(ranks, (r,)) for r in range(max_rank)}
    chosen: list[tuple[tuple[int, ...], float]] = []
    while frontier and len(chosen) < max_nodes:
        path = max(frontier, key=lambda p: (frontier[p], -len(p)))
        chosen.append((path, frontier.pop(path)))
        if len(path) < k:
            for r in range(max_rank):
                child = path + (r,)
                frontier[child] = path_prob(ranks, child)
    return chosen


@torch.inference_mode()
def forward_costs(model: Any, sizes: list[int], prefix: int = 256, repeats: int = 9,
                  ) -> dict[int, float]:
    """Seconds of one verification pass feeding N tree tokens after ``prefix`` tokens.

    Sizes are interleaved inside every repeat (background load hits them alike); each is the
    median of ``repeats``; then a running maximum over N, since a pass over more tokens never
    costs less and a lucky small median must not make one tree size look free."""
    vocab = model.get_output_embeddings().weight.shape[0]
    ids = torch.randint(0, vocab, (1, prefix))
    mask = torch.ones((1, prefix), dtype=torch.long)
    times: dict[int, list[float]] = {n: [] for n in sizes}
    for _ in range(repeats):
        for n in sizes:
            tree = build_tree([(0,) * d for d in range(1, n)])  # only N matters for the cost
            cache = DynamicCache()
            model(input_ids=ids, past_key_values=cache, use_cache=True)
            started = time.perf_counter()
            model(input_ids=torch.randint(0, vocab, (1, n)),
                  attention_mask=tree_attention_mask(mask, tree),
                  position_ids=tree_positions(tree, mask.sum(-1)), past_key_values=cache,
                  use_cache=True, output_hidden_states=True)
            times[n].append(time.perf_counter() - started)
    costs, highest = {}, 0.0
    for n in sorted(sizes):
        highest = max(highest, statistics.median(times[n]))
        costs[n] = highest
    return costs


@torch.inference_mode()
def draft_cost(heads: MedusaHeads, model: Any, repeats: int = 25) -> float:
    """Seconds the heads take to draft one tree depth for one parent (head features, then the
    draft projection and its top-k), the median of ``repeats`` over every head. Call it on
    heads ``heads_for`` prepared, so the projection is the one decoding uses."""
    lm_head = model.get_output_embeddings()
    k, h = heads.config.num_heads, heads.config.hidden_size
    hidden = torch.randn(1, h, dtype=lm_head.weight.dtype)
    prev = model.get_input_embeddings().weight[:1] if heads.config.sequential else None
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        for i in range(k):
            heads.guesses(i, heads.head_features(i, hidden, prev), lm_head, 2)
        times.append((time.perf_counter() - started) / k)
    return statistics.median(times)


def choose_tree(ranks: torch.Tensor, costs: dict[int, float], depth_cost: float = 0.0,
                ) -> dict[str, Any]:
    """Best tree for the measured costs: {"tree", "expected_tokens", "predicted_speedup", "table"}.

    costs: seconds per pass for N tree tokens (N includes the root; N=1 is plain decoding);
    depth_cost: seconds of drafting per tree depth (``draft_cost``).
    The best tree has at least one guess: N=1 stays in the table as the baseline, and a
    predicted speed-up below 1 there says drafting does not pay on this machine.
    """
    grown = grow_tree(ranks, max(costs) - 1)
    table = []
    for n in sorted(costs):
        nodes = grown[:n - 1]
        expected = 1.0 + sum(p for _, p in nodes)
        extra = depth_cost * max((len(p) for p, _ in nodes), default=0)
        speedup = expected * costs[min(costs)] / (costs[n] + extra)
        table.append({"nodes": n, "expected_tokens": expected, "cost_s": costs[n] + extra,
                      "predicted_speedup": speedup, "tree": [list(p) for p, _ in nodes]})
    best = max(table[1:] or table, key=lambda row: row["predicted_speedup"])
    return {"tree": best["tree"], "expected_tokens": best["expected_tokens"],
            "predicted_speedup": best["predicted_speedup"], "table": table}
