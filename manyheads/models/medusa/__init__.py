"""Medusa-style multi-head decoding for the local engine.

Small extra heads read the base model's last hidden state and guess the tokens two, three, ...
steps ahead; a tree of those guesses is verified in one forward pass of the base model, so one
step can accept several tokens. Greedy verification is lossless (exact argmax match).

Public API: ``MedusaConfig``, ``MedusaHeads``, ``load_heads``, ``default_heads_dir``,
``enable_medusa``, ``MedusaStep``, ``DEFAULT_TREE``, ``export_vllm``.
"""

from __future__ import annotations

from manyheads.models.medusa.heads import (
    MedusaConfig,
    MedusaHeads,
    default_heads_dir,
    load_heads,
)
from manyheads.models.medusa.step import DEFAULT_TREE, MedusaStep, enable_medusa
from manyheads.models.medusa.vllm_export import export_vllm

__all__ = ["DEFAULT_TREE", "MedusaConfig", "MedusaHeads", "MedusaStep", "default_heads_dir",
           "enable_medusa", "export_vllm", "load_heads"]
