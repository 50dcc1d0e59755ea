"""oneDNN-prepacked weights for the CPU forward pass.

``bench/verify_cost.py`` measured the embedded model's fp32 forward on this 2-core CPU: with the
default path one token costs about 3.5x its memory-bandwidth floor, and passes of 2-3 tokens cost
more than a pass of 4 (poor small-matrix kernels). Reordering every bias-free ``nn.Linear`` weight
once into oneDNN's blocked layout made a 1-token pass 1.2x and a 2-8 token pass 1.5-1.8x faster,
with greedy tokens unchanged; plain decoding and every drafting decoder share the gain.
The dense ``.weight`` stays (tied embeddings, draft heads read it); inference only.
"""

from __future__ import annotations

import torch
from torch import nn


def available() -> bool:
    return torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn,
                                                            "_linear_pointwise")


def prepack_linears(model: nn.Module) -> int:
    """Route every bias-free ``nn.Linear`` of ``model`` through a prepacked oneDNN weight;
    returns how many were packed (0 where oneDNN is missing)."""
    if not available():
        return 0
    packed = 0
    for module in model.modules():
        if isinstance(module, nn.Linear) and module.bias is None \
                and module.weight.dtype == torch.float32 and module.weight.device.type == "cpu":
            weight = torch.ops.mkldnn._reorder_linear_weight(module.weight.detach(), None)
            module.forward = _packed_forward(weight)
            packed += 1
    return packed


def _packed_forward(weight: torch.Tensor):
    def forward(x: torch.Tensor) -> torch.Tensor:  # x: [..., in] -> [..., out]
        return torch.ops.mkldnn._linear_pointwise(x, weight, None, "none", [], "")
    return forward
