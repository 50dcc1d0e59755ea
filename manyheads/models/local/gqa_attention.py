"""SDPA attention that keeps grouped key/value heads grouped when a mask is given.

The embedded model shares each of its 3 key/value heads among 3 query heads. transformers' SDPA
path copies every layer's cached keys and values 3 times (``repeat_kv``) whenever an attention
mask is passed, because CUDA's masked grouped-query attention falls back to a slow kernel. One
token per step passes no mask and skips the copy; every pass of several tokens (tree and chain
verification, padded batches, prefill) passes one and pays it. On this CPU torch's own SDPA takes
``enable_gqa=True`` together with a mask, bit-identical to the copied keys. The attention of one
layer for a 6-token verification after 256 cached tokens took 86 us against 137 us with the copy
(in isolation); whole passes, interleaved in one process, were 7% (4 tokens) and 2% (the 6-node
tree) faster, one token unchanged.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

NAME = "manyheads_sdpa_gqa"


def gqa_sdpa_forward(module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor,
                     value: torch.Tensor, attention_mask: torch.Tensor | None,
                     dropout: float = 0.0, scaling: float | None = None,
                     **kwargs: Any) -> tuple[torch.Tensor, None]:
    """query [B, Hq, T, d], key/value [B, Hkv, S, d], mask [B, 1, T, S] -> output [B, T, Hq, d].
    Without a mask (one new token, or causal prefill) transformers' own path is already grouped."""
    if attention_mask is None or query.device.type != "cpu":
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout,
                                      scaling=scaling, **kwargs)
    out = F.scaled_dot_product_attention(query, key, value, attn_mask=attention_mask,
                                         dropout_p=dropout, scale=scaling,
                                         enable_gqa=query.shape[1] != key.shape[1])
    return out.transpose(1, 2).contiguous(), None


AttentionInterface.register(NAME, gqa_sdpa_forward)
AttentionMaskInterface.register(NAME, sdpa_mask)  # the same masks as "sdpa"
