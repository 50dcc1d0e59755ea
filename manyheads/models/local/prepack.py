"""oneDNN-prepacked weights for the CPU forward pass.

``bench/verify_cost.py`` measured the embedded model's fp32 forward on this 2-core CPU: with the
default path one token costs about 3.5x its memory-bandwidth floor, and passes of 2-3 tokens cost
more than a pass of 4 (poor small-matrix kernels). Reordering every bias-free ``nn.Linear`` weight
once into oneDNN's blocked layout made a 1-token pass 1.2x and a 2-8 token pass 1.5-1.8x faster,
with greedy tokens unchanged; plain decoding and every drafting decoder share the gain.
The dense ``.weight`` stays (tied embeddings, draft heads read it); inference only.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

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


def int8_projection(weight: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor] | None:
    """An int8 copy of a [V, H] projection for drafts (fbgemm dynamic quantisation, per-channel
    weight scales), or None where the quantized engine is missing.

    A draft only needs the top few tokens of its logits; verification recomputes exact ones, so
    output never depends on this copy. On this 2-core CPU the 576x49152 lm_head takes 1.2 ms for
    one row in int8 against 5.5-7 ms prepacked fp32 (median of 40), and Hydra drafting projects
    once per depth. On the model's own hidden states (1065 positions) the int8 top-1 was the exact
    top-1 at 88% and among the exact top 5 at 99.7%: it differs where the logits nearly tie, where
    a head's guess is weak anyway. ``torch.ao`` dynamic quantisation is deprecated upstream but
    present in the pinned torch; its warnings are silenced here only.
    """
    if "fbgemm" not in torch.backends.quantized.supported_engines \
            and "x86" not in torch.backends.quantized.supported_engines:
        return None
    linear = nn.Linear(weight.shape[1], weight.shape[0], bias=False)
    with torch.no_grad():
        linear.weight.copy_(weight.detach().float())
    linear.qconfig = torch.ao.quantization.per_channel_dynamic_qconfig
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        quantized = torch.ao.nn.quantized.dynamic.Linear.from_float(linear)

    def project(x: torch.Tensor) -> torch.Tensor:  # x: [..., H] -> [..., V]
        return quantized(x.reshape(-1, x.shape[-1])).reshape(*x.shape[:-1], -1)
    return project
