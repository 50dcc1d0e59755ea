"""Ranking and calibration metrics, pure Python so no scikit-learn is needed.

Convention: ``labels`` are 1 for the positive class (an incorrect step) and ``scores`` rise with
the belief that a step is incorrect.
"""

from __future__ import annotations

import math
from collections.abc import Sequence


def _sorted_pairs(scores: Sequence[float], labels: Sequence[int]) -> list[tuple[float, int]]:
    if len(scores) != len(labels):
        raise ValueError("scores and labels differ in length")
    return sorted(zip(scores, labels, strict=True), key=lambda p: -p[0])


def pr_curve(scores: Sequence[float], labels: Sequence[int]
             ) -> tuple[list[float], list[float], list[float]]:
    """Precision, recall and threshold at each distinct score, highest threshold first."""
    pairs = _sorted_pairs(scores, labels)
    positives = sum(labels)
    precision, recall, thresholds = [], [], []
    tp = fp = 0
    for i, (score, label) in enumerate(pairs):
        tp += label
        fp += 1 - label
        if i + 1 < len(pairs) and pairs[i + 1][0] == score:
            continue  # ties form one threshold
        precision.append(tp / (tp + fp))
        recall.append(tp / positives if positives else 0.0)
        thresholds.append(score)
    return precision, recall, thresholds


def pr_auc(scores: Sequence[float], labels: Sequence[int]) -> float:
    """Average precision: sum over thresholds of (recall gain) x precision (sklearn's definition).
    NaN without positives."""
    if not sum(labels):
        return math.nan
    precision, recall, _ = pr_curve(scores, labels)
    area, last_recall = 0.0, 0.0
    for p, r in zip(precision, recall, strict=True):
        area += (r - last_recall) * p
        last_recall = r
    return area


def roc_auc(scores: Sequence[float], labels: Sequence[int]) -> float:
    """P(score of a random positive > score of a random negative), ties count one half."""
    pairs = sorted(zip(scores, labels, strict=True), key=lambda p: p[0])
    positives = sum(labels)
    negatives = len(labels) - positives
    if not positives or not negatives:
        return math.nan
    rank_sum, i = 0.0, 0
    while i < len(pairs):  # average ranks over ties (Mann-Whitney U)
        j = i
        while j < len(pairs) and pairs[j][0] == pairs[i][0]:
            j += 1
        mean_rank = (i + 1 + j) / 2
        rank_sum += mean_rank * sum(label for _, label in pairs[i:j])
        i = j
    return (rank_sum - positives * (positives + 1) / 2) / (positives * negatives)


def ece(probs: Sequence[float], labels: Sequence[int], bins: int = 10) -> float:
    """Expected calibration error of probabilities of the positive class, equal-width bins."""
    if not probs:
        return math.nan
    total, error = len(probs), 0.0
    for b in range(bins):
        lo, hi = b / bins, (b + 1) / bins
        members = [(p, y) for p, y in zip(probs, labels, strict=True)
                   if lo <= p < hi or (b == bins - 1 and p == 1.0)]
        if members:
            confidence = sum(p for p, _ in members) / len(members)
            accuracy = sum(y for _, y in members) / len(members)
            error += len(members) / total * abs(confidence - accuracy)
    return error


def best_f1_threshold(probs: Sequence[float], labels: Sequence[int]) -> float:
    """The probability threshold that maximises F1 of the positive class (0.5 if undefined)."""
    precision, recall, thresholds = pr_curve(probs, labels)
    best, chosen = -1.0, 0.5
    for p, r, t in zip(precision, recall, thresholds, strict=True):
        f1 = 2 * p * r / (p + r) if p + r else 0.0
        if f1 > best:
            best, chosen = f1, t
    return chosen
