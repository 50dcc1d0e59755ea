"""Medusa-1 training: frozen backbone, cached features, self-distilled targets.

The backbone never runs during training: its hidden states were stored while it answered the
prompts (``data.py``), so one epoch is K small matmuls plus the (frozen) vocabulary projection
per position. Loss: ``sum_i decay**(i+1) * CE(head_i)``; later heads are harder and matter less
(they are only used when every earlier guess was right).

``distill`` swaps each hard target for the base model's whole distribution at that position
(Hydra++'s teacher objective, Ankner et al., 2024): the base's prediction from the cached state
of the target's own position, free to compute here. Its argmax is the hard target, and the rest
says which near-misses the base would also accept, more signal per position when data is what
limits the heads.

``vocab="data"`` (default) restricts the training softmax to the tokens that occur in the
self-distilled answers: the targets are the model's own greedy tokens, which use a small part
of the 49k vocabulary, and the full projection is most of the cost (about 10x on a 2-core CPU).
The heads keep the full shared lm_head at inference, and ``evaluate`` always scores over the full
vocabulary, so the shortcut shows up honestly in the measured accuracy. ``vocab="full"`` trains
with the exact softmax.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from pathlib import Path

import torch
from pydantic import BaseModel, Field
from torch.nn import functional as F

from manyheads.errors import ConfigError
from manyheads.models.medusa.heads import MedusaConfig, MedusaHeads, load_heads
from manyheads.models.medusa.training.data import (
    features,
    iter_batches,
    load_sequences,
    teacher_rows,
)

STATE_FILE = "train_state.pt"


class TrainConfig(BaseModel):
    num_heads: int = Field(4, ge=1, le=16)
    num_layers: int = Field(1, ge=1, le=4)
    epochs: float = Field(2.0, gt=0)
    batch_size: int = Field(128, ge=1)
    lr: float = Field(1e-3, gt=0)
    warmup_steps: int = Field(30, ge=0)
    decay: float = Field(0.8, gt=0, le=1)
    checkpoint_every: int = Field(100, ge=1)
    max_minutes: float | None = Field(None, gt=0, description="stop early (and save) after this")
    seed: int = 0
    vocab: str = Field("data", pattern="^(data|full)$")
    sequential: bool = Field(False, description="Hydra-style heads (see heads.py)")
    draft_vocab: int = Field(8192, ge=0, description="the heads draft only the N most frequent "
                                                     "answer tokens (0 = every token)")
    distill: bool = Field(False, description="train on the base's distribution at each target "
                                             "position instead of its greedy token")


def head_loss(logits: torch.Tensor, targets: torch.Tensor, decay: float) -> torch.Tensor:
    """logits: [K, B, V]; targets: [B, K] (-100 = none) -> weighted sum of per-head CE."""
    total = logits.new_zeros(())
    for i in range(logits.shape[0]):
        if (targets[:, i] != -100).any():
            total = total + decay ** (i + 1) * F.cross_entropy(logits[i], targets[:, i],
                                                               ignore_index=-100)
    return total


def distill_loss(logits: torch.Tensor, teacher: torch.Tensor, valid: torch.Tensor,
                 decay: float) -> torch.Tensor:
    """logits, teacher: [K, B, V] head and base logits; valid: [B, K] -> weighted sum over heads
    of the cross-entropy from the base's distribution to each head's."""
    total = logits.new_zeros(())
    for i in range(logits.shape[0]):
        rows = valid[:, i]
        if rows.any():
            soft = F.softmax(teacher[i][rows], dim=-1)
            ce = -(soft * F.log_softmax(logits[i][rows], dim=-1)).sum(-1).mean()
            total = total + decay ** (i + 1) * ce
    return total


def lr_at(step: int, total: int, peak: float, warmup: int) -> float:
    """Linear warm-up, then cosine down to 10% of the peak."""
    if step < warmup:
        return peak * (step + 1) / warmup
    frac = (step - warmup) / max(1, total - warmup)
    return peak * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, frac))))


def embed_previous(prev: torch.Tensor, embed_weight: torch.Tensor) -> torch.Tensor:
    """prev [B, K] token ids -> their input embeddings [K, B, H] (rows past the end: token 0)."""
    return embed_weight[prev.clamp_min(0)].permute(1, 0, 2)


def train(work_dir: str | Path, out_dir: str | Path, lm_head_weight: torch.Tensor,
          config: TrainConfig, *, embed_weight: torch.Tensor | None = None,
          base_model: str = "", resume: bool = False,
          progress: Callable[[int, int, float], None] | None = None) -> MedusaHeads:
    """Train heads on the cached features in ``work_dir``; checkpoints go to ``work_dir/ckpt``.

    lm_head_weight: [V, H], the frozen shared projection; embed_weight: [V, H], the base input
    embedding (sequential heads only). ``progress(step, total, loss)``.
    """
    work = Path(work_dir)
    if config.sequential and embed_weight is None:
        raise ConfigError("sequential (Hydra) heads need the base model's input embedding")
    sequences = load_sequences(work, "train")
    hidden, targets, prev = features(sequences, config.num_heads)
    if config.distill:  # every cached state [M, H] and where each target's lies [N, K]
        states = torch.cat([s.hidden for s in sequences])
        teacher = teacher_rows(sequences, config.num_heads)
    del sequences
    n, h = hidden.shape
    v = lm_head_weight.shape[0]
    drafted = draft_vocabulary(targets, config.draft_vocab) if config.draft_vocab else None
    heads_cfg = MedusaConfig(num_heads=config.num_heads, num_layers=config.num_layers,
                             hidden_size=h, vocab_size=v, base_model=base_model,
                             sequential=config.sequential,
                             draft_vocab=0 if drafted is None else drafted.numel())
    heads = MedusaHeads(heads_cfg)
    if drafted is not None:
        heads.draft_tokens.copy_(drafted)
    optim = torch.optim.AdamW(heads.parameters(), lr=config.lr, weight_decay=0.0)
    steps_per_epoch = math.ceil(n / config.batch_size)
    total = max(1, int(config.epochs * steps_per_epoch))
    step, losses = 0, []
    ckpt = work / "ckpt"
    if resume and (ckpt / STATE_FILE).is_file():
        state = torch.load(ckpt / STATE_FILE, weights_only=False)
        if state["config"] != config.model_dump(exclude={"max_minutes"}):
            raise ConfigError("the checkpoint was trained with other settings",
                              hint="resume with the same options or start without --resume")
        heads.load_state_dict(load_heads(ckpt).state_dict())
        optim.load_state_dict(state["optim"])
        step, losses = state["step"], state["losses"]
    weight = lm_head_weight.detach().float()
    embed = embed_weight.detach().float() if embed_weight is not None else None
    if config.vocab == "data":
        weight, targets = restrict_vocab(weight, targets)
    started = time.perf_counter()
    heads.train()
    while step < total:
        epoch = step // steps_per_epoch
        gen = torch.Generator().manual_seed(config.seed + epoch)  # same order on resume
        batches = list(iter_batches(n, config.batch_size, gen))
        for index in batches[step % steps_per_epoch:]:
            for group in optim.param_groups:
                group["lr"] = lr_at(step, total, config.lr, config.warmup_steps)
            inputs = embed_previous(prev[index], embed) if config.sequential else None
            logits = heads(hidden[index], weight, inputs)  # [K, B, V]
            if config.distill:
                rows = teacher[index]  # [B, K]
                with torch.no_grad():
                    base = F.linear(states[rows.clamp_min(0)].float(), weight)  # [B, K, V]
                loss = distill_loss(logits, base.transpose(0, 1), rows >= 0, config.decay)
            else:
                loss = head_loss(logits, targets[index], config.decay)
            optim.zero_grad(set_to_none=True)
            loss.backward()
            optim.step()
            step += 1
            losses.append(loss.item())
            if progress:
                progress(step, total, losses[-1])
            out_of_time = (config.max_minutes is not None
                           and time.perf_counter() - started > 60 * config.max_minutes)
            if step % config.checkpoint_every == 0 or step == total or out_of_time:
                _checkpoint(heads, optim, step, losses, config, ckpt)
            if step >= total or out_of_time:
                break
        if out_of_time:
            break
    heads.eval()
    heads.config = heads.config.model_copy(update={"training": {
        "steps": step, "planned_steps": total, "positions": n, "epochs": config.epochs,
        "vocab": config.vocab, "lr": config.lr, "batch_size": config.batch_size,
        "sequential": config.sequential, "distill": config.distill,
        "final_loss": sum(losses[-50:]) / max(1, len(losses[-50:])),
        "data": "self-distilled greedy answers to manyheads/models/medusa/prompts.jsonl"}})
    heads.save(out_dir)
    return heads


def draft_vocabulary(targets: torch.Tensor, size: int) -> torch.Tensor:
    """The ``size`` most frequent target tokens [<= size], most frequent first.

    The heads draft only these: a 576x8192 int8 projection costs a sixth of the full 49k one on
    this CPU, and the model's own answers rarely use anything else (the share of held-out
    targets they cover is in the heads' training record)."""
    counts = torch.bincount(targets[targets != -100])
    return counts.argsort(descending=True, stable=True)[:min(size, int((counts > 0).sum()))]


def restrict_vocab(weight: torch.Tensor, targets: torch.Tensor,
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """weight [V, H], targets [N, K] -> the rows of the tokens that occur, targets re-indexed."""
    used = torch.unique(targets[targets != -100])
    lookup = torch.full((weight.shape[0],), -100, dtype=torch.long)
    lookup[used] = torch.arange(used.numel())
    remapped = torch.where(targets == -100, targets, lookup[targets.clamp_min(0)])
    return weight[used].contiguous(), remapped


def _checkpoint(heads: MedusaHeads, optim: torch.optim.Optimizer, step: int, losses: list[float],
                config: TrainConfig, ckpt: Path) -> None:
    heads.save(ckpt)
    tmp = ckpt / (STATE_FILE + ".tmp")
    torch.save({"optim": optim.state_dict(), "step": step, "losses": losses,
                "config": config.model_dump(exclude={"max_minutes"})}, tmp)
    tmp.replace(ckpt / STATE_FILE)


@torch.no_grad()
def evaluate(heads: MedusaHeads, work_dir: str | Path, lm_head_weight: torch.Tensor,
             split: str = "eval", chunk: int = 512,
             embed_weight: torch.Tensor | None = None) -> list[dict[str, float]]:
    """Per-head top-1 / top-5 accuracy on the model's own answers to held-out prompts, over the
    tokens the heads may draft (a target outside the draft vocabulary is a miss).

    Sequential heads read the true previous tokens, so head i's accuracy is its acceptance
    rate given that every earlier guess was right.
    """
    k = heads.config.num_heads
    hidden, targets, prev = features(load_sequences(work_dir, split), k)
    if heads.config.sequential and embed_weight is None:
        raise ConfigError("sequential (Hydra) heads need the base model's input embedding")
    hits1, hits5, counts = torch.zeros(k), torch.zeros(k), torch.zeros(k)
    for start in range(0, hidden.shape[0], chunk):
        inputs = (embed_previous(prev[start:start + chunk], embed_weight.float())
                  if heads.config.sequential else None)
        logits = heads.only_drafted(
            heads(hidden[start:start + chunk], lm_head_weight.float(), inputs))  # [K, c, V]
        y = targets[start:start + chunk]  # [c, K]
        top5 = logits.topk(5, dim=-1).indices  # [K, c, 5]
        for i in range(k):
            valid = y[:, i] != -100
            hit = top5[i][valid] == y[valid, i][:, None]
            hits1[i] += hit[:, 0].sum()
            hits5[i] += hit.any(-1).sum()
            counts[i] += valid.sum()
    return [{"head": i, "top1": float(hits1[i] / counts[i]), "top5": float(hits5[i] / counts[i]),
             "positions": int(counts[i])} for i in range(k)]
