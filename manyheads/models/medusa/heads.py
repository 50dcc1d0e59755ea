"""The Medusa heads: K small residual blocks over the base model's last hidden state.

Head ``i`` (0-based) reads the final (post-norm) hidden state at position t, where the base
lm_head predicts token t+1, and predicts token t+i+2. Each head is ``x + SiLU(W x)`` stacked
``num_layers`` times, then an output projection. By default the projection is the base model's
own lm_head (shared, not stored), which keeps a checkpoint at K*H*H floats and makes a head with
W = 0 start out as a copy of the base prediction: a sensible initialisation.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from pydantic import BaseModel, ConfigDict, Field
from safetensors.torch import load_file, save_file
from torch import nn
from torch.nn import functional as F

from manyheads.errors import ConfigError

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "heads.safetensors"
WEIGHTS_ROOT = Path(__file__).parent / "weights"
EMBEDDED_HEADS = "smollm2-135m-instruct"


class MedusaConfig(BaseModel):
    """What a heads checkpoint is: shape, sharing, and what it was trained on."""

    model_config = ConfigDict(extra="ignore")

    num_heads: int = Field(4, ge=1, le=16)
    num_layers: int = Field(1, ge=1, le=4, description="residual blocks per head")
    hidden_size: int = Field(576, ge=1)
    vocab_size: int = Field(49152, ge=1)
    shared_lm_head: bool = Field(True, description="reuse the base lm_head as the projection")
    bias: bool = False
    base_model: str = ""
    training: dict = Field(default_factory=dict, description="provenance: steps, data, loss")


class ResBlock(nn.Module):
    """``x + SiLU(W x)``; W starts at zero so the block starts as the identity."""

    def __init__(self, hidden: int, bias: bool) -> None:
        super().__init__()
        self.linear = nn.Linear(hidden, hidden, bias=bias)
        nn.init.zeros_(self.linear.weight)
        if bias:
            nn.init.zeros_(self.linear.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: [..., H]
        return x + F.silu(self.linear(x))


class MedusaHeads(nn.Module):
    """K heads; ``forward`` gives logits [K, ..., V] for hidden states [..., H]."""

    def __init__(self, config: MedusaConfig) -> None:
        super().__init__()
        self.config = config
        self.blocks = nn.ModuleList(
            nn.Sequential(*[ResBlock(config.hidden_size, config.bias)
                            for _ in range(config.num_layers)])
            for _ in range(config.num_heads))
        self.lm_heads = None
        if not config.shared_lm_head:
            self.lm_heads = nn.ModuleList(nn.Linear(config.hidden_size, config.vocab_size,
                                                    bias=False)
                                          for _ in range(config.num_heads))

    def features(self, hidden: torch.Tensor) -> torch.Tensor:
        """hidden: [..., H] -> per-head features [K, ..., H] (before the projection)."""
        return torch.stack([block(hidden) for block in self.blocks])

    def forward(self, hidden: torch.Tensor,
                lm_head_weight: torch.Tensor | None = None) -> torch.Tensor:
        """hidden: [..., H]; lm_head_weight: [V, H] (needed when shared) -> logits [K, ..., V]."""
        feats = self.features(hidden)
        if self.lm_heads is None:
            if lm_head_weight is None:
                raise ConfigError("these Medusa heads share the base lm_head: pass its weight")
            return F.linear(feats, lm_head_weight)
        return torch.stack([head(f) for head, f in zip(self.lm_heads, feats, strict=True)])

    def init_lm_heads_from(self, lm_head_weight: torch.Tensor) -> None:
        """Own projections start as copies of the base lm_head (so untrained heads = base)."""
        if self.lm_heads is not None:
            with torch.no_grad():
                for head in self.lm_heads:
                    head.weight.copy_(lm_head_weight)

    # -- checkpoints ---------------------------------------------------------------------------
    def save(self, directory: str | Path) -> Path:
        """Write config.json + heads.safetensors; written to temp names then renamed."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        tensors = {k: v.detach().contiguous().cpu() for k, v in self.state_dict().items()}
        tmp = directory / (WEIGHTS_FILE + ".tmp")
        save_file(tensors, str(tmp))
        tmp.replace(directory / WEIGHTS_FILE)
        tmp_cfg = directory / (CONFIG_FILE + ".tmp")
        tmp_cfg.write_text(json.dumps(self.config.model_dump(), indent=2) + "\n")
        tmp_cfg.replace(directory / CONFIG_FILE)
        return directory


def load_heads(directory: str | Path | None = None) -> MedusaHeads:
    """Load a heads checkpoint (default: the heads shipped for the embedded model)."""
    directory = Path(directory) if directory is not None else default_heads_dir()
    cfg_path, w_path = directory / CONFIG_FILE, directory / WEIGHTS_FILE
    if not cfg_path.is_file() or not w_path.is_file():
        raise ConfigError(f"no Medusa heads in {directory}",
                          hint=f"expected {CONFIG_FILE} and {WEIGHTS_FILE}; "
                               "train some with `manyheads medusa train`")
    try:
        config = MedusaConfig.model_validate_json(cfg_path.read_text())
    except ValueError as exc:
        raise ConfigError(f"bad Medusa config {cfg_path}: {exc}") from None
    heads = MedusaHeads(config)
    state = load_file(str(w_path))
    missing, unexpected = heads.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ConfigError(f"Medusa weights in {w_path} do not match its config",
                          hint=f"missing {missing[:3]}, unexpected {unexpected[:3]}")
    heads.eval()
    return heads


def default_heads_dir() -> Path:
    """Where the heads for the embedded model ship inside the package."""
    return WEIGHTS_ROOT / EMBEDDED_HEADS
