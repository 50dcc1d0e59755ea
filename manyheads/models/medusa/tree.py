"""Candidate trees as pure functions: structure, attention mask, positions, acceptance.

A tree is a list of *paths*: ``(0,)`` is the top-1 guess of head 0 under the root, ``(0, 1)`` is
the top-2 guess of head 1 under that, and so on (the tuple format Medusa uses). Node 0 is the
root: the token the base model itself chose this step. Every other node is one path; nodes are
ordered by depth then path (a tree drawn by ``from_parents`` keeps its own order), so a parent
always comes before its children.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from manyheads.errors import ConfigError

Path_ = tuple[int, ...]


@dataclass(frozen=True)
class Tree:
    """A candidate tree of N nodes (node 0 = root)."""

    paths: tuple[Path_, ...]  # [N-1] one path per non-root node, in node order
    parents: tuple[int, ...]  # [N] parent node of each node (-1 for the root)
    depths: tuple[int, ...]  # [N] 0 for the root; depth d reads head d-1
    ranks: tuple[int, ...]  # [N] top-k rank of the node's token within its head (root: 0)

    @property
    def size(self) -> int:
        return len(self.parents)

    @property
    def max_depth(self) -> int:
        return max(self.depths)

    def topk_per_head(self) -> list[int]:
        """How many candidates each head must offer: [max_depth]."""
        need = [0] * self.max_depth
        for d, r in zip(self.depths[1:], self.ranks[1:], strict=True):
            need[d - 1] = max(need[d - 1], r + 1)
        return need

    def children(self) -> list[list[int]]:
        kids: list[list[int]] = [[] for _ in self.parents]
        for node, parent in enumerate(self.parents):
            if parent >= 0:
                kids[parent].append(node)
        for k in kids:
            k.sort(key=lambda n: self.ranks[n])
        return kids


def build_tree(paths: list[Path_] | list[list[int]]) -> Tree:
    """Validate and order a list of paths; every prefix of a path must be a path too."""
    unique = sorted({tuple(int(x) for x in p) for p in paths}, key=lambda p: (len(p), p))
    if any(len(p) == 0 or min(p) < 0 for p in unique):
        raise ConfigError("tree paths must be non-empty tuples of ranks >= 0")
    index = {p: i + 1 for i, p in enumerate(unique)}
    parents, depths, ranks = [-1], [0], [0]
    for p in unique:
        if len(p) > 1 and p[:-1] not in index:
            raise ConfigError(f"tree path {p} has no parent path {p[:-1]}")
        parents.append(index[p[:-1]] if len(p) > 1 else 0)
        depths.append(len(p))
        ranks.append(p[-1])
    return Tree(paths=tuple(unique), parents=tuple(parents), depths=tuple(depths),
                ranks=tuple(ranks))


def prune(tree: Tree, max_depth: int) -> Tree:
    """The same tree without nodes deeper than ``max_depth`` (for rows near max_tokens)."""
    return build_tree([p for p in tree.paths if len(p) <= max_depth]) if max_depth > 0 \
        else build_tree([])


def chain(depth: int) -> list[Path_]:
    """The top-1 chain of ``depth`` guesses: (0,), (0, 0), ..."""
    return [(0,) * d for d in range(1, depth + 1)]


def from_parents(parents: list[int], scores: list[float]) -> Tree:
    """The tree of nodes given by their parents [N] (-1 for node 0, the root; a parent before
    its children); siblings are ranked by ``scores`` [N], highest first."""
    depths, ranks, paths = [0], [0], [()]
    siblings: dict[int, list[int]] = {}
    for node in range(1, len(parents)):
        siblings.setdefault(parents[node], []).append(node)
    rank = {}
    for kids in siblings.values():
        for r, node in enumerate(sorted(kids, key=lambda n: -scores[n])):
            rank[node] = r
    for node in range(1, len(parents)):
        parent = parents[node]
        depths.append(depths[parent] + 1)
        ranks.append(rank[node])
        paths.append((*paths[parent], rank[node]))
    return Tree(paths=tuple(paths[1:]), parents=tuple(parents), depths=tuple(depths),
                ranks=tuple(ranks))


def graft_chain(parents: list[int], tokens: list[int], scores: list[float],
                drafts: list[tuple[int, float]]) -> list[int]:
    """Hang a chain of ``drafts`` [(token, score)] under the root of a drawn tree, in place:
    where a node already guesses the chain's token at that place the two are one node with the
    better score, elsewhere the chain branches off. The chain's node indices, root excluded.
    Each draft's score must not exceed the one before it (``worth_verifying`` needs parents
    scored at least as high as their children)."""
    node, path = 0, []
    for token, score in drafts:
        child = next((c for c in range(1, len(parents))
                      if parents[c] == node and tokens[c] == token), None)
        if child is None:
            parents.append(node)
            tokens.append(token)
            scores.append(score)
            child = len(parents) - 1
        else:
            scores[child] = max(scores[child], score)
        path.append(child)
        node = child
    return path


def worth_verifying(scores: list[float], cost: Callable[[int], float], most: int,
                    calibration: float) -> list[int]:
    """Which drafted nodes to verify: ``scores`` [N] estimate each node's chance of being
    accepted (node 0, the root, is 1.0; a child never scores above its parent). The best-scored
    nodes, at most ``most``, as many as maximise expected tokens (1 + ``calibration`` * their
    scores) per pass cost (``cost(n)`` for n tokens, relative to one). Sorted node indices; the
    root is always kept and so is every kept node's parent."""
    best = sorted(range(len(scores)), key=scores.__getitem__, reverse=True)[:most]
    expected, value, size = 1.0, 1.0, 1
    for n, node in enumerate(best[1:], start=2):
        expected += calibration * scores[node]
        if expected / cost(n) > value:
            value, size = expected / cost(n), n
    return sorted(best[:size])


def ancestor_mask(tree: Tree) -> torch.Tensor:
    """[N, N] bool: entry (q, k) is True when node k is q itself or an ancestor of q."""
    n = tree.size
    mask = torch.eye(n, dtype=torch.bool)
    for node in range(1, n):  # parents come first, so their rows are already complete
        mask[node] |= mask[tree.parents[node]]
    return mask


def tree_positions(tree: Tree, start: torch.Tensor) -> torch.Tensor:
    """Position ids [B, N]: ``start`` [B] is the position of the root token."""
    return start[:, None] + torch.tensor(tree.depths, dtype=torch.long)[None, :]


def tree_attention_mask(prefix_mask: torch.Tensor, tree: Tree,
                        dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Additive 4-D mask [B, 1, N, S+N] for feeding the tree after a cached prefix.

    prefix_mask: [B, S] (1 = real token, 0 = padding). Tree node q sees every real prefix token
    and its own ancestors (itself included); everything else gets the dtype's minimum.
    """
    b, _ = prefix_mask.shape
    n = tree.size
    allowed = torch.cat([prefix_mask.bool()[:, None, :].expand(b, n, -1),
                         ancestor_mask(tree)[None].expand(b, n, n)], dim=-1)  # [B, N, S+N]
    out = torch.zeros(allowed.shape, dtype=dtype)
    out.masked_fill_(~allowed, torch.finfo(dtype).min)
    return out[:, None]


def candidate_tokens(tree: Tree, root: int, topk: torch.Tensor) -> torch.Tensor:
    """Tokens [N] of the tree: topk [K, k] holds each head's best token ids, best first."""
    out = torch.empty(tree.size, dtype=torch.long)
    out[0] = root
    if tree.size > 1:
        d = torch.tensor(tree.depths[1:]) - 1
        r = torch.tensor(tree.ranks[1:])
        out[1:] = topk[d, r]
    return out


def path_to(tree: Tree, node: int) -> list[int]:
    """Nodes from the root to ``node`` inclusive."""
    path = [node]
    while tree.parents[path[-1]] >= 0:
        path.append(tree.parents[path[-1]])
    return path[::-1]


def deepest(tree: Tree, accepted: list[bool]) -> int:
    """The deepest accepted node whose ancestors are all accepted (first in node order on ties)."""
    ok = [False] * tree.size
    ok[0] = True
    best = 0
    for node in range(1, tree.size):
        ok[node] = accepted[node] and ok[tree.parents[node]]
        if ok[node] and tree.depths[node] > tree.depths[best]:
            best = node
    return best


def greedy_accept(tree: Tree, tokens: torch.Tensor, argmax: torch.Tensor) -> list[int]:
    """Lossless greedy verification: tokens [N], argmax [N] = the base's choice after each node.

    A node is kept when its token is exactly what the base model picks after its parent.
    Returns the accepted nodes from the root.
    """
    parents = torch.tensor(tree.parents[1:], dtype=torch.long)
    match = [True] + (tokens[1:] == argmax[parents]).tolist()
    return path_to(tree, deepest(tree, match))


def typical_accept(tree: Tree, tokens: torch.Tensor, probs: torch.Tensor,
                   epsilon: float = 0.09, alpha: float = 0.3) -> list[int]:
    """Typical acceptance: probs [N, V] = sampling distribution after each node.

    A node is kept when the base gives its token more probability than
    ``min(epsilon, alpha * exp(-entropy))`` after its parent: confident contexts demand a likely
    token, flat ones accept anything plausible. Not an exact sampler; fast and usually fluent.
    """
    entropy = -(probs * torch.log(probs.clamp_min(1e-12))).sum(-1)  # [N]
    threshold = torch.minimum(torch.full_like(entropy, epsilon), alpha * torch.exp(-entropy))
    parents = torch.tensor(tree.parents[1:], dtype=torch.long)
    p_tok = probs[parents, tokens[1:]]
    accepted = [True] + (p_tok > threshold[parents]).tolist()
    return path_to(tree, deepest(tree, accepted))


def rejection_accept(tree: Tree, tokens: torch.Tensor, probs: torch.Tensor,
                     generator: torch.Generator | None = None) -> tuple[list[int], int | None]:
    """Exact speculative sampling over the tree with deterministic (top-k) drafts.

    probs: [N, V]. From the root, try the children in rank order: child token x is accepted with
    probability p(x) under the current residual p; a rejected x gets p(x) = 0 and p is
    renormalised. If every child is rejected, the next token is drawn from the residual and
    returned as ``extra`` (it has no KV yet). Each emitted token is then distributed exactly as
    the base model would sample it.
    """
    kids = tree.children()
    node, path = 0, [0]
    while kids[node]:
        residual = probs[node].clone()
        for child in kids[node]:
            x = int(tokens[child])
            u = float(torch.rand((), generator=generator))
            if u < float(residual[x]):
                node = child
                break
            residual[x] = 0.0
            total = float(residual.sum())
            if total <= 0.0 or math.isnan(total):  # numerically all mass was on rejected drafts
                residual = probs[node].clone()
                residual[x] = 0.0
                total = float(residual.sum())
            residual = residual / total
        else:
            extra = int(torch.multinomial(residual, 1, generator=generator))
            return path, extra
        path.append(node)
    return path, None
