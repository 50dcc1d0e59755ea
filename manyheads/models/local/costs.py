"""What a forward pass costs here, relative to one token: the price every drafter weighs its
drafts against."""

from __future__ import annotations

# Cost of one forward pass over n new tokens relative to one token: the embedded model as the
# engine runs it (prepacked weights, ``prepack.py``; grouped K/V heads, ``gqa_attention.py``)
# after a 256-token prefix, 2 threads on the 2-core CPU, median of 15
# (``bench/results/verify_cost.json``).
# A longer chain is only worth it when the tokens it is expected to add pay for this.
PASS_COST: dict[int, float] = {1: 1.0, 2: 1.06, 3: 1.10, 4: 1.18, 5: 1.21, 6: 1.29, 8: 1.34,
                               12: 1.46, 16: 1.70}


def pass_cost(n: int) -> float:
    """``PASS_COST`` interpolated linearly for n tokens."""
    known = sorted(PASS_COST)
    if n >= known[-1]:
        return PASS_COST[known[-1]] * n / known[-1]
    lo = max(k for k in known if k <= n)
    hi = min(k for k in known if k >= n)
    if lo == hi:
        return PASS_COST[lo]
    return PASS_COST[lo] + (PASS_COST[hi] - PASS_COST[lo]) * (n - lo) / (hi - lo)
