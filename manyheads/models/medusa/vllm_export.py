"""Write our heads in the checkpoint layout vLLM's Medusa drafter loads.

vLLM wants ``config.json`` with ``"architectures": ["MedusaModel"]``, ``"model_type": "medusa"``,
``num_heads``, ``num_hidden_layers`` (blocks per head), ``hidden_size``, ``vocab_size`` (plus
``medusa_fc_bias``) and weights ``blocks.{h}.layers.{l}.weight`` / ``lm_heads.{h}.weight``. Its
blocks compute ``x + SiLU(W x)`` like ours. A shared projection is written out as a copy of the
base lm_head (SmolLM2 ties it to the token embedding), so the export stands alone.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file

from manyheads.errors import ConfigError
from manyheads.models.medusa.heads import default_heads_dir, load_heads


def vllm_tensors(heads_dir: str | Path,
                 lm_head_weight: torch.Tensor | None) -> dict[str, torch.Tensor]:
    """Name -> tensor in vLLM's layout; ``lm_head_weight`` [V, H] is needed for shared heads."""
    heads = load_heads(heads_dir)
    if heads.config.sequential:
        raise ConfigError("vLLM's Medusa drafter has no sequential (Hydra) heads",
                          hint="export Medusa heads (trained without --hydra)")
    out: dict[str, torch.Tensor] = {}
    for h, block in enumerate(heads.blocks):
        for layer_index, res in enumerate(block):
            out[f"blocks.{h}.layers.{layer_index}.weight"] = res.linear.weight.detach()
            if res.linear.bias is not None:
                out[f"blocks.{h}.layers.{layer_index}.bias"] = res.linear.bias.detach()
        if heads.lm_heads is not None:
            out[f"lm_heads.{h}.weight"] = heads.lm_heads[h].weight.detach()
        elif lm_head_weight is None:
            raise ConfigError("these heads share the base lm_head: pass the base model "
                              "(or its lm_head weight) to export them")
        else:
            out[f"lm_heads.{h}.weight"] = lm_head_weight.detach()
    return {k: v.float().contiguous().clone() for k, v in out.items()}


def vllm_config(heads_dir: str | Path) -> dict:
    cfg = load_heads(heads_dir).config
    return {"architectures": ["MedusaModel"], "model_type": "medusa",
            "num_heads": cfg.num_heads, "num_hidden_layers": cfg.num_layers,
            "hidden_size": cfg.hidden_size, "vocab_size": cfg.vocab_size,
            "medusa_fc_bias": cfg.bias, "truncated_vocab_size": cfg.vocab_size,
            "torch_dtype": "float32"}


def export_vllm(heads_dir: str | Path | None, out_dir: str | Path,
                base_model: str | Path | None = None) -> Path:
    """Export heads (default: the shipped Medusa heads) to ``out_dir`` for
    ``speculative_config`` "medusa".

    ``base_model``: where to read the lm_head for shared heads (default: the embedded model).
    """
    heads_dir = heads_dir or default_heads_dir(sequential=False)
    cfg = load_heads(heads_dir).config
    lm_head = None
    if cfg.shared_lm_head:
        lm_head = base_lm_head(base_model)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    save_file(vllm_tensors(heads_dir, lm_head), str(out / "model.safetensors"),
              metadata={"format": "pt"})
    (out / "config.json").write_text(json.dumps(vllm_config(heads_dir), indent=2) + "\n")
    return out


def base_lm_head(base_model: str | Path | None) -> torch.Tensor:
    """The base model's output projection [V, H] (the tied embedding for SmolLM2)."""
    from safetensors import safe_open

    from manyheads.models.embedded import resolve_model

    path = resolve_model(base_model)
    for name in ("lm_head.weight", "model.embed_tokens.weight"):
        for file in sorted(path.glob("*.safetensors")):
            with safe_open(str(file), "pt") as f:
                if name in f.keys():
                    return f.get_tensor(name).float()
    raise ConfigError(f"no lm_head or token embedding found in {path}")
