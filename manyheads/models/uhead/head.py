"""The uncertainty head: a small causal transformer over token features, one logit per step.

Causal so that a step's score only depends on tokens up to its end: the same head can judge a
step in flight, before the rest of the solution exists. Inputs are standardised with statistics
stored in the checkpoint (hidden states of small LMs have a few huge dimensions).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from pydantic import BaseModel, Field
from safetensors.torch import load_file, save_file
from torch import nn

from manyheads.models.uhead.errors import UHeadError
from manyheads.models.uhead.features import FeatureConfig


class UHeadConfig(BaseModel):
    """Architecture, the features it reads, and its calibrated decision threshold."""

    features: FeatureConfig = Field(default_factory=FeatureConfig)
    input_dim: int
    d_model: int = 128
    layers: int = 2
    heads: int = 4
    ff_dim: int = 256
    dropout: float = 0.1
    max_tokens: int = 1024
    threshold: float = Field(0.5, ge=0.0, le=1.0, description="P(incorrect) above which a step "
                             "is flagged; calibrated on validation data")
    backbone: str = ""


class UHead(nn.Module):
    def __init__(self, config: UHeadConfig) -> None:
        super().__init__()
        self.config = config
        self.register_buffer("mean", torch.zeros(config.input_dim))
        self.register_buffer("std", torch.ones(config.input_dim))
        self.proj = nn.Sequential(nn.Dropout(config.dropout),
                                  nn.Linear(config.input_dim, config.d_model))
        self.pos = nn.Embedding(config.max_tokens, config.d_model)
        layer = nn.TransformerEncoderLayer(config.d_model, config.heads, config.ff_dim,
                                           config.dropout, batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, config.layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(config.d_model)
        self.out = nn.Linear(2 * config.d_model, 1)

    def forward(self, x: torch.Tensor, token_mask: torch.Tensor, step_mask: torch.Tensor
                ) -> torch.Tensor:
        """Logits [B, S] of "step is incorrect".

        x: [B, T, D] token features; token_mask: [B, T] 1 = real token;
        step_mask: [B, S, T] 1 where token t belongs to step s.
        """
        length = x.shape[1]
        if length > self.config.max_tokens:
            raise UHeadError(f"{length} response tokens; the head takes {self.config.max_tokens}")
        h = self.proj((x - self.mean) / self.std)
        h = h + self.pos(torch.arange(length, device=x.device))
        causal = torch.triu(torch.ones(length, length, dtype=torch.bool, device=x.device), 1)
        h = self.encoder(h, mask=causal, src_key_padding_mask=~token_mask.bool())
        h = self.norm(h)
        m = step_mask.float()
        mean = (m @ h) / m.sum(-1, keepdim=True).clamp(min=1)  # [B, S, d]
        last = _last_index(m)  # [B, S]
        last_h = h.gather(1, last[..., None].expand(-1, -1, h.shape[-1]))  # [B, S, d]
        return self.out(torch.cat([mean, last_h], dim=-1)).squeeze(-1)

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def save(self, directory: str | Path) -> None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().contiguous() for k, v in self.state_dict().items()}
        save_file(state, str(directory / "model.safetensors"))
        (directory / "config.json").write_text(self.config.model_dump_json(indent=2) + "\n")

    @classmethod
    def load(cls, directory: str | Path) -> UHead:
        directory = Path(directory)
        try:
            config = UHeadConfig.model_validate(json.loads((directory / "config.json").read_text()))
            state = load_file(str(directory / "model.safetensors"))
        except (OSError, ValueError) as exc:
            raise UHeadError(f"cannot load a UHead from {directory}: {exc}") from None
        head = cls(config)
        head.load_state_dict(state)
        head.eval()
        return head


def _last_index(step_mask: torch.Tensor) -> torch.Tensor:
    """Index [B, S] of the last token of each step (0 for an empty step)."""
    positions = torch.arange(step_mask.shape[-1], device=step_mask.device).float()
    return (step_mask * positions).amax(-1).long()
