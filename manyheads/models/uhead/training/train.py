"""Training and evaluation of a UHead on checker-labelled samples, plus the baselines.

Baselines score a step from the same generation's token distribution: the least probable token
(maximum-token-probability), perplexity and mean entropy of the step's tokens, and random.
Every score rises with the belief that the step is *incorrect*.
"""

from __future__ import annotations

import hashlib
import math
import random
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from manyheads.models.uhead.features import COL_ENTROPY, COL_LOGP, FeatureConfig
from manyheads.models.uhead.head import UHead, UHeadConfig
from manyheads.models.uhead.training import metrics
from manyheads.models.uhead.training.data import Sample

BASELINES = ("max_token_prob", "perplexity", "mean_entropy", "random")


def split_by_problem(samples: list[Sample], val_fraction: float = 0.2
                     ) -> tuple[list[Sample], list[Sample]]:
    """Every sample of a problem lands on the same side (a stable hash of the problem id)."""
    def is_val(pid: str) -> bool:
        return int(hashlib.sha1(pid.encode()).hexdigest()[:8], 16) / 2**32 < val_fraction
    return ([s for s in samples if not is_val(s.problem_id)],
            [s for s in samples if is_val(s.problem_id)])


def usable(samples: list[Sample]) -> list[Sample]:
    """Samples with at least one step and at least one label."""
    return [s for s in samples if s.spans and any(label is not None for label in s.labels)
            and len(s.token_ids) > 0]


def collate(samples: list[Sample]) -> tuple[torch.Tensor, ...]:
    """x [B, T, D], token_mask [B, T], step_mask [B, S, T], labels [B, S], label_mask [B, S]."""
    width = max(len(s.token_ids) for s in samples)
    steps = max(max(len(s.spans), 1) for s in samples)
    dim = samples[0].features.shape[1]
    x = torch.zeros(len(samples), width, dim)
    token_mask = torch.zeros(len(samples), width, dtype=torch.bool)
    step_mask = torch.zeros(len(samples), steps, width)
    labels = torch.zeros(len(samples), steps)
    label_mask = torch.zeros(len(samples), steps, dtype=torch.bool)
    for i, s in enumerate(samples):
        n = len(s.token_ids)
        x[i, :n] = s.features.float()
        token_mask[i, :n] = True
        for j, ((lo, hi), label) in enumerate(zip(s.spans, s.labels, strict=True)):
            step_mask[i, j, lo:hi] = 1
            if label is not None and hi > lo:
                labels[i, j] = float(label)
                label_mask[i, j] = True
    return x, token_mask, step_mask, labels, label_mask


def feature_stats(samples: list[Sample]) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-dimension mean and std [D] over every token of ``samples``."""
    feats = torch.cat([s.features.float() for s in samples])
    return feats.mean(0), feats.std(0).clamp(min=1e-3)


@torch.no_grad()
def predict(head: UHead, samples: list[Sample], batch_size: int = 32) -> list[list[float]]:
    """P(incorrect) of every step of every sample."""
    head.eval()
    out: list[list[float]] = []
    for start in range(0, len(samples), batch_size):
        chunk = samples[start:start + batch_size]
        x, token_mask, step_mask, _, _ = collate(chunk)
        probs = torch.sigmoid(head(x, token_mask, step_mask))
        out += [probs[i, :len(s.spans)].tolist() for i, s in enumerate(chunk)]
    return out


def baseline_scores(sample: Sample, rng: random.Random) -> dict[str, list[float]]:
    """Each baseline's score per step of ``sample`` from its token log-probs and entropies."""
    logp = sample.features[:, COL_LOGP].float()
    entropy = sample.features[:, COL_ENTROPY].float()
    scores: dict[str, list[float]] = {name: [] for name in BASELINES}
    for lo, hi in sample.spans:
        hi = max(hi, lo + 1)
        scores["max_token_prob"].append(1.0 - float(logp[lo:hi].exp().min()))
        scores["perplexity"].append(math.exp(float(-logp[lo:hi].mean())))
        scores["mean_entropy"].append(float(entropy[lo:hi].mean()))
        scores["random"].append(rng.random())
    return scores


def labelled(samples: list[Sample], per_sample: list[list[float]]
             ) -> tuple[list[float], list[int]]:
    """Flatten the scores and labels of the steps that have a label."""
    scores, labels = [], []
    for s, values in zip(samples, per_sample, strict=True):
        for value, label in zip(values, s.labels, strict=True):
            if label is not None:
                scores.append(value)
                labels.append(label)
    return scores, labels


def evaluate(head: UHead, samples: list[Sample], seed: int = 0
             ) -> tuple[dict[str, float], dict[str, tuple[list[float], list[int]]]]:
    """Metrics of the head and every baseline on ``samples``; also the raw (scores, labels)."""
    samples = usable(samples)
    rng = random.Random(seed)
    raw = {"uhead": labelled(samples, predict(head, samples))}
    per_baseline = [baseline_scores(s, rng) for s in samples]
    for name in BASELINES:
        raw[name] = labelled(samples, [b[name] for b in per_baseline])
    probs, labels = raw["uhead"]
    result = {"uhead_pr_auc": metrics.pr_auc(probs, labels),
              "uhead_roc_auc": metrics.roc_auc(probs, labels),
              "uhead_ece": metrics.ece(probs, labels),
              "steps": float(len(labels)), "incorrect_rate": sum(labels) / max(len(labels), 1)}
    for name in BASELINES:
        result[f"{name}_pr_auc"] = metrics.pr_auc(*raw[name])
        result[f"{name}_roc_auc"] = metrics.roc_auc(*raw[name])
    result["best_baseline_pr_auc"] = max(result[f"{n}_pr_auc"] for n in BASELINES)
    return result, raw


def train_head(train: list[Sample], val: list[Sample], features: FeatureConfig, *,
               backbone: str = "", epochs: int = 40, lr: float = 1e-3, batch_size: int = 16,
               seed: int = 0, checkpoint: Path | None = None,
               on_epoch: Callable[[int, float, float], None] | None = None) -> UHead:
    """Fit a head; keep the epoch with the best validation PR-AUC; calibrate its threshold."""
    torch.manual_seed(seed)
    train, val = usable(train), usable(val)
    config = UHeadConfig(features=features, input_dim=train[0].features.shape[1],
                         backbone=backbone)
    head = UHead(config)
    head.mean, head.std = feature_stats(train)
    optimizer = torch.optim.AdamW(head.parameters(), lr=lr, weight_decay=0.05)
    loss_fn = nn.BCEWithLogitsLoss()
    rng = random.Random(seed)
    best, best_state = -1.0, None
    for epoch in range(epochs):
        head.train()
        order = list(train)
        rng.shuffle(order)
        total = 0.0
        for start in range(0, len(order), batch_size):
            x, token_mask, step_mask, labels, label_mask = collate(order[start:start + batch_size])
            logits = head(x, token_mask, step_mask)
            loss = loss_fn(logits[label_mask], labels[label_mask])
            optimizer.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(head.parameters(), 1.0)
            optimizer.step()
            total += loss.item() * len(x)
        scores, labels = labelled(val, predict(head, val))
        score = metrics.pr_auc(scores, labels) if val else -total
        if on_epoch:
            on_epoch(epoch, total / len(order), score)
        if score > best:
            best = score
            best_state = {k: v.clone() for k, v in head.state_dict().items()}
            if checkpoint is not None:
                head.save(checkpoint)
    head.load_state_dict(best_state)
    if val:
        scores, labels = labelled(val, predict(head, val))
        head.config.threshold = float(metrics.best_f1_threshold(scores, labels))
    head.eval()
    return head


def save_pr_curves(raw: dict[str, tuple[list[float], list[int]]], path: Path,
                   title: str = "Step verification (incorrect = positive)") -> None:
    """One PR curve per scorer, as a PNG (Agg backend: no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 5))
    for name, (scores, labels) in raw.items():
        if not labels or not sum(labels):
            continue
        precision, recall, _ = metrics.pr_curve(scores, labels)
        ap = metrics.pr_auc(scores, labels)
        ax.step([0.0] + recall, [precision[0]] + precision, where="post",
                label=f"{name} (AP {ap:.3f})")
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_title(title)
    ax.set_ylim(0, 1.02)
    ax.legend(loc="lower left", fontsize=8)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
