"""Per-token features from the frozen backbone, in flight (an ``Observer``) or by prefill.

For a response token x_t the features are: the hidden states at x_t's position in chosen layers,
the attention each head (of chosen layers) pays from x_t to the ``attn_window`` tokens before it,
and the distribution that predicted x_t: log p(x_t), its entropy, whether x_t was its argmax,
and its top-k probabilities. Both paths build them with the same pure functions, so scoring text
from any engine by prefill gives (up to float noise) what the observer saw while generating.
"""

from __future__ import annotations

import time
from typing import Any

import torch
from pydantic import BaseModel, ConfigDict, Field

from manyheads.models.uhead.errors import UHeadError

PROB_BASE = 3  # logp, entropy, is_argmax; then top-k probabilities
COL_LOGP, COL_ENTROPY, COL_ARGMAX, COL_TOP1 = 0, 1, 2, 3


class FeatureConfig(BaseModel):
    """Which features to take. ``attn_window = 0`` turns attention off (no eager attention)."""

    model_config = ConfigDict(frozen=True)

    hidden_layers: tuple[int, ...] = (10, 20, 30)  # indices into hidden_states (0 = embeddings)
    attn_layers: tuple[int, ...] | None = None  # None = every layer
    attn_window: int = Field(3, ge=0, le=32)
    top_k: int = Field(5, ge=1, le=50)

    @property
    def wants_attentions(self) -> bool:
        return self.attn_window > 0

    def attn_layer_ids(self, num_layers: int) -> tuple[int, ...]:
        return tuple(range(num_layers)) if self.attn_layers is None else self.attn_layers

    def dim(self, hidden: int, num_layers: int, num_heads: int) -> int:
        attn = len(self.attn_layer_ids(num_layers)) * num_heads * self.attn_window
        return len(self.hidden_layers) * hidden + attn + PROB_BASE + self.top_k

    def dim_for(self, model: Any) -> int:
        c = model.config
        return self.dim(c.hidden_size, c.num_hidden_layers, c.num_attention_heads)


def prob_features(logits: torch.Tensor, tokens: torch.Tensor, top_k: int) -> torch.Tensor:
    """[N, 3 + k] from the logits [N, V] that predicted ``tokens`` [N]."""
    logp = torch.log_softmax(logits.float(), dim=-1)
    chosen = logp.gather(-1, tokens[:, None])  # [N, 1]
    entropy = -(logp.exp() * logp).sum(-1, keepdim=True)
    top = torch.topk(logp, top_k, dim=-1)
    is_argmax = (top.indices[:, :1] == tokens[:, None]).float()
    return torch.cat([chosen, entropy, is_argmax, top.values.exp()], dim=-1)


def combine(hidden: list[torch.Tensor], attn: list[torch.Tensor], probs: torch.Tensor
            ) -> torch.Tensor:
    """[N, D]: hidden [N, H] per layer, attention [N, heads, window] per layer, probs [N, P]."""
    parts = [h.float() for h in hidden] + [a.float().flatten(1) for a in attn] + [probs]
    return torch.cat(parts, dim=-1)


def _attentions(outputs: Any, config: FeatureConfig) -> tuple:
    if not config.wants_attentions:
        return ()
    if getattr(outputs, "attentions", None) is None or outputs.attentions[0] is None:
        raise UHeadError("the backbone returned no attention weights",
                         hint='load it with LocalEngine(attn_implementation="eager") or set '
                              "attn_window=0")
    return outputs.attentions


@torch.inference_mode()
def prompt_cache(model: Any, prompt_ids: list[int]) -> tuple[Any, torch.Tensor]:
    """KV cache of a prompt and its last logits [V], to score several responses to it cheaply."""
    outputs = model(input_ids=torch.tensor([prompt_ids]), use_cache=True)
    return outputs.past_key_values, outputs.logits[0, -1].float()


@torch.inference_mode()
def prefill_features(model: Any, prompt_ids: list[int], response_ids: list[int],
                     config: FeatureConfig, cached: tuple[Any, torch.Tensor] | None = None
                     ) -> torch.Tensor:
    """Features [R, D] of ``response_ids`` following ``prompt_ids``, in one forward pass.

    With ``cached`` (from ``prompt_cache``) only the response is run; the cache is cropped back
    to the prompt afterwards so it can be reused.
    """
    if not prompt_ids or not response_ids:
        raise UHeadError("prefill scoring needs a non-empty prompt and response")
    start, length = len(prompt_ids), len(response_ids)
    if cached is None:
        ids = torch.tensor([prompt_ids + response_ids], dtype=torch.long)
        outputs = model(input_ids=ids, output_hidden_states=True,
                        output_attentions=config.wants_attentions, use_cache=False)
        query = torch.arange(start, start + length)  # rows of the response in this pass
        logits = outputs.logits[0, query - 1]
    else:
        cache, last_logits = cached
        ids = torch.tensor([response_ids], dtype=torch.long)
        outputs = model(input_ids=ids, past_key_values=cache, use_cache=True,
                        position_ids=torch.arange(start, start + length)[None],
                        output_hidden_states=True, output_attentions=config.wants_attentions)
        cache.crop(-length)
        query = torch.arange(length)
        logits = torch.cat([last_logits[None], outputs.logits[0, :length - 1].float()])
    attentions = _attentions(outputs, config)
    probs = prob_features(logits, torch.tensor(response_ids), config.top_k)
    hidden = [outputs.hidden_states[layer][0, query] for layer in config.hidden_layers]
    window = config.attn_window
    attn = []
    if attentions:
        pos = torch.arange(start, start + length)  # absolute positions = key indices
        keys = (pos[:, None] - window + torch.arange(window)).clamp(min=0)  # [R, n]
        for layer in config.attn_layer_ids(len(attentions)):
            a = attentions[layer][0]  # [heads, queries, keys]
            attn.append(a[:, query[:, None], keys].permute(1, 0, 2))  # [R, heads, n]
    return combine(hidden, attn, probs)


class FeatureObserver:
    """Collects response-token features while ``LocalEngine`` generates (an ``Observer``).

    A pass whose cache holds only what it was fed is a prefill: it starts a new generation.
    Every later pass feeds one token per row (the vanilla step); its features are taken from
    that pass plus the logits of the pass before, which predicted it. Call ``take`` after
    ``chat``/``generate`` returns; finished rows keep being fed padding, so cut by token count.
    """

    def __init__(self, config: FeatureConfig) -> None:
        self.config = config
        self.wants_attentions = config.wants_attentions
        self.enabled = True
        self.seconds = 0.0  # wall time spent in on_forward (the in-flight overhead)
        self._steps: list[torch.Tensor] = []  # one [B, D] per decode pass
        self._tokens: list[torch.Tensor] = []  # one [B] per decode pass
        self._last_logits: torch.Tensor | None = None  # [B, V]

    def on_forward(self, input_ids: torch.Tensor, outputs: Any, rows: list[int]) -> None:
        if not self.enabled:
            return
        started = time.perf_counter()
        self._collect(input_ids, outputs)
        self.seconds += time.perf_counter() - started

    def _collect(self, input_ids: torch.Tensor, outputs: Any) -> None:
        fed = input_ids.shape[1]
        cache = getattr(outputs, "past_key_values", None)
        is_prefill = cache is None or cache.get_seq_length() == fed
        if is_prefill:
            self._steps, self._tokens = [], []
        elif self._last_logits is not None:
            if fed != 1:
                raise UHeadError("in-flight features need one token per decode step",
                                 hint="use the vanilla step (no draft heads) while scoring")
            tokens = input_ids[:, 0]
            probs = prob_features(self._last_logits, tokens, self.config.top_k)
            hidden = [outputs.hidden_states[layer][:, -1] for layer in self.config.hidden_layers]
            attn = []
            attentions = _attentions(outputs, self.config)
            if attentions:
                n = self.config.attn_window
                for layer in self.config.attn_layer_ids(len(attentions)):
                    attn.append(attentions[layer][:, :, -1, -1 - n:-1])  # [B, heads, n]
            self._steps.append(combine(hidden, attn, probs))
            self._tokens.append(tokens.clone())
        self._last_logits = outputs.logits[:, -1].float()

    def take(self, row: int, count: int) -> tuple[list[int], torch.Tensor]:
        """Token ids and features [count, D] of the first ``count`` tokens of batch row ``row``."""
        if count > len(self._steps):
            raise UHeadError(f"row {row} has {count} tokens but only {len(self._steps)} were seen")
        if count == 0:
            return [], torch.zeros(0, 0)
        feats = torch.stack([s[row] for s in self._steps[:count]])
        return [int(t[row]) for t in self._tokens[:count]], feats
