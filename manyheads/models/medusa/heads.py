"""The Medusa heads: K small residual blocks over the base model's last hidden state.

Head ``i`` (0-based) reads the final (post-norm) hidden state at position t, where the base
lm_head predicts token t+1, and predicts token t+i+2. Each head is ``x + SiLU(W x)`` stacked
``num_layers`` times, then an output projection. By default the projection is the base model's
own lm_head (shared, not stored), which keeps a checkpoint at K*H*H floats and makes a head with
W = 0 start out as a copy of the base prediction: a sensible initialisation.

``sequential`` heads (Hydra, Ankner et al., 2024) also read the token just before their target:
head i adds ``U_i e(token t+i+1)`` to the hidden state, where ``e`` is the base model's input
embedding, so head 0 knows the base's own next token and head i the draft of head i-1. Medusa
heads must guess that token implicitly. ``U_i`` starts at zero: an untrained Hydra head is a
Medusa head.
"""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path

import torch
from pydantic import BaseModel, ConfigDict, Field
from safetensors.torch import load_file, save_file
from torch import nn
from torch.nn import functional as F

from manyheads.errors import ConfigError
from manyheads.models.local.prepack import int8_projection

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "heads.safetensors"
TREE_FILE = "choose_tree.json"  # the candidate tree measured for these heads (optional)
WEIGHTS_ROOT = Path(__file__).parent / "weights"
# Both kinds ship for the embedded model: Hydra heads decode by default (higher acceptance, see
# bench/results/medusa.json); plain Medusa heads are the ones vLLM can serve.
EMBEDDED_HEADS = {True: "smollm2-135m-instruct-hydra", False: "smollm2-135m-instruct"}


class MedusaConfig(BaseModel):
    """What a heads checkpoint is: shape, sharing, and what it was trained on."""

    model_config = ConfigDict(extra="ignore")

    num_heads: int = Field(4, ge=1, le=16)
    num_layers: int = Field(1, ge=1, le=4, description="residual blocks per head")
    hidden_size: int = Field(576, ge=1)
    vocab_size: int = Field(49152, ge=1)
    shared_lm_head: bool = Field(True, description="reuse the base lm_head as the projection")
    sequential: bool = Field(False, description="Hydra-style: head i also reads the embedding "
                                                "of the token before its target")
    bias: bool = False
    draft_vocab: int = Field(0, ge=0, description="tokens the heads may draft: the most frequent "
                                                  "answer tokens in training (0 = every token)")
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
    """K heads; ``forward`` gives logits [K, ..., V] for hidden states [..., H].

    Sequential heads also take ``prev`` [K, ..., H]: the input embedding of the token before
    each head's target (see ``previous_tokens``).
    """

    def __init__(self, config: MedusaConfig) -> None:
        super().__init__()
        self.config = config
        self.blocks = nn.ModuleList(
            nn.Sequential(*[ResBlock(config.hidden_size, config.bias)
                            for _ in range(config.num_layers)])
            for _ in range(config.num_heads))
        self.token_proj = None
        if config.sequential:
            self.token_proj = nn.ModuleList(nn.Linear(config.hidden_size, config.hidden_size,
                                                      bias=False)
                                            for _ in range(config.num_heads))
            for proj in self.token_proj:
                nn.init.zeros_(proj.weight)
        if config.draft_vocab:  # token ids [N], filled by training (``draft_vocabulary``)
            self.register_buffer("draft_tokens", torch.zeros(config.draft_vocab, dtype=torch.long))
        self.lm_heads = None
        if not config.shared_lm_head:
            self.lm_heads = nn.ModuleList(nn.Linear(config.hidden_size, config.vocab_size,
                                                    bias=False)
                                          for _ in range(config.num_heads))

    def head_features(self, i: int, hidden: torch.Tensor,
                      prev: torch.Tensor | None = None) -> torch.Tensor:
        """Head i's features [..., H] from hidden [..., H] (and prev [..., H] if sequential)."""
        if self.token_proj is not None:
            if prev is None:
                raise ConfigError("sequential (Hydra) heads need the previous token's embedding")
            hidden = hidden + self.token_proj[i](prev)
        return self.blocks[i](hidden)

    def project(self, i: int, feats: torch.Tensor,
                lm_head_weight: torch.Tensor | None = None) -> torch.Tensor:
        """Head i's logits [..., V]; lm_head_weight [V, H] is needed when it is shared."""
        if self.lm_heads is not None:
            return self.lm_heads[i](feats)
        if lm_head_weight is None:
            raise ConfigError("these Medusa heads share the base lm_head: pass its weight")
        return F.linear(feats, lm_head_weight)

    def guesses(self, i: int, feats: torch.Tensor, lm_head: nn.Module, k: int) -> torch.Tensor:
        """Head i's top-``k`` draft token ids [..., k] from its features [..., H] at decode time.

        Shared heads project through the copy ``prepare_drafts`` made (else the base ``lm_head``
        module, prepacked where the engine packed it) and may stack several heads' ``feats``:
        one matmul for all. Drafts need only their top tokens; verification computes exact
        logits, so this projection never changes output."""
        logits, vocab = self._draft_logits(i, feats, lm_head)
        top = logits.topk(k, dim=-1).indices  # [..., k]
        return top if vocab is None else vocab[top]

    def scored_guesses(self, i: int, feats: torch.Tensor, lm_head: nn.Module,
                       k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """As ``guesses``, with each guess's probability [..., k]: a softmax over what the head
        can draft (its draft vocabulary where it has one)."""
        logits, vocab = self._draft_logits(i, feats, lm_head)
        top = torch.softmax(logits.float(), dim=-1).topk(k, dim=-1)
        return (top.indices if vocab is None else vocab[top.indices]), top.values

    def _draft_logits(self, i: int, feats: torch.Tensor,
                      lm_head: nn.Module) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Head i's draft logits [..., V'] and the token id of each column (None: V' = V)."""
        if self.lm_heads is not None:
            return self.lm_heads[i](feats), None
        draft = self.__dict__.get("draft_projection")
        if draft is None:
            return lm_head(feats), None
        return draft(feats), (self.draft_tokens if self.config.draft_vocab else None)

    def only_drafted(self, logits: torch.Tensor) -> torch.Tensor:
        """logits [..., V] with every token outside the draft vocabulary at -inf (evaluation
        scores what decoding can draft)."""
        if not self.config.draft_vocab:
            return logits
        keep = torch.zeros(logits.shape[-1], dtype=torch.bool, device=logits.device)
        keep[self.draft_tokens.to(logits.device)] = True
        return logits.masked_fill(~keep, float("-inf"))

    def prepare_drafts(self, lm_head_weight: torch.Tensor) -> None:
        """Build the projection shared heads draft through: the lm_head rows of the draft
        vocabulary only (``draft_vocab``), and on a CPU with fp32 weights an int8 copy of those
        (``prepack.py``). On this 2-core CPU one row of the full 576x49152 lm_head takes 5.5-7 ms
        prepacked fp32 and 1.4 ms int8; 8192 rows int8 take 0.2 ms, and Hydra drafting projects
        once per tree depth. Kept out of the module tree, so it is never saved or trained."""
        if self.lm_heads is not None:
            return
        weight = lm_head_weight.detach()
        if self.config.draft_vocab:
            weight = weight[self.draft_tokens.to(weight.device)].contiguous()
        draft = None
        if weight.device.type == "cpu" and weight.dtype == torch.float32:
            draft = int8_projection(weight)
        if draft is None and self.config.draft_vocab:
            draft = partial(F.linear, weight=weight)
        self.__dict__["draft_projection"] = draft

    def project_first(self, feats: torch.Tensor,
                      lm_head_weight: torch.Tensor | None = None) -> torch.Tensor:
        """Logits [D, ..., V] of the first D heads from their features [D, ..., H]; a shared
        projection runs as ONE matmul, which reads the [V, H] weight once."""
        if self.lm_heads is None and lm_head_weight is not None:
            return F.linear(feats, lm_head_weight)
        return torch.stack([self.project(i, f, lm_head_weight) for i, f in enumerate(feats)])

    def forward(self, hidden: torch.Tensor, lm_head_weight: torch.Tensor | None = None,
                prev: torch.Tensor | None = None) -> torch.Tensor:
        """hidden: [..., H]; prev: [K, ..., H] for sequential heads -> logits [K, ..., V]."""
        feats = torch.stack([self.head_features(i, hidden, None if prev is None else prev[i])
                             for i in range(self.config.num_heads)])
        return self.project_first(feats, lm_head_weight)

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


def previous_tokens(tokens: list[int], num_heads: int) -> torch.Tensor:
    """[L, K]: the token before head i's target at row j, ``tokens[j+i]`` (-100 past the end).

    Row j is the hidden state that predicts ``tokens[j]`` through the base lm_head, so head 0
    reads the base's own token and head i the target of head i-1 (teacher forcing).
    """
    n = len(tokens)
    out = torch.full((n, num_heads), -100, dtype=torch.long)
    t = torch.tensor(tokens, dtype=torch.long)
    for i in range(num_heads):
        out[:max(0, n - i), i] = t[i:]
    return out


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


def default_heads_dir(sequential: bool = True) -> Path:
    """Where the heads for the embedded model ship: Hydra (default) or plain Medusa."""
    return WEIGHTS_ROOT / EMBEDDED_HEADS[sequential]
