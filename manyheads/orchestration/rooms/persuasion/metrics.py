"""Persuasion metrics on the offline MiniLM embedder: ToM accuracy, leakage, dataset summary.

ToM accuracy is the cosine similarity between the persuader's guess and the hidden text, field by
field; "unknown" scores 0 and hidden "none" fields are not scored (there is nothing to infer).
A leak is hidden belief/desire text in a persuader prompt that the public dialogue does not
explain: the prompt minus what was said aloud and the persuader's own guesses (which derive from
its earlier, equally checked, prompts) must not contain it, verbatim or by embedding similarity.
"""

from __future__ import annotations

import re
from collections import Counter
from statistics import mean
from typing import Any

from manyheads.agents.hygiene import quality
from manyheads.models.embedder import embedder
from manyheads.models.types import ChatMessage
from manyheads.orchestration.rooms.persuasion.mind import (
    TOM_FIELDS,
    UNKNOWN,
    ToMEstimate,
    hidden_texts,
)
from manyheads.orchestration.rooms.persuasion.scenarios import Scenario

LEAK_THRESHOLD = 0.85  # cosine above which a prompt sentence counts as the hidden text
_PREFIX = re.compile(r"^\s*(the\s+)?persuadee\s+(believes\s+that|believes|wants\s+to|wants)\s+",
                     re.I)


def similarities(left: list[str], right: list[str]):
    """Cosine similarity matrix (numpy) of two lists of texts."""
    model = embedder()
    a = model.encode(left, normalize_embeddings=True, convert_to_numpy=True)
    b = model.encode(right, normalize_embeddings=True, convert_to_numpy=True)
    return a @ b.T


def _core(text: str) -> str:
    """The content of a hidden text without "persuadee believes that" and final punctuation."""
    return re.sub(r"\s+", " ", _PREFIX.sub("", text)).strip().rstrip(".").lower()


def tom_scores(estimate: ToMEstimate, scenario: Scenario) -> dict[str, float | None]:
    """Per field cosine of guess vs hidden truth; None where the truth is "none"."""
    truth = {"preventive_belief": scenario.preventive.belief,
             "preventive_desire": scenario.preventive.desire,
             "generative_belief": scenario.generative.belief,
             "generative_desire": scenario.generative.desire}
    scored = [f for f in TOM_FIELDS if _core(truth[f]) not in ("none", "")]
    guessed = [f for f in scored if _core(getattr(estimate, f)) not in (UNKNOWN, "none", "")]
    scores: dict[str, float | None] = {f: None for f in TOM_FIELDS}
    scores.update({f: 0.0 for f in scored})
    if guessed:
        matrix = similarities([_core(getattr(estimate, f)) for f in guessed],
                              [_core(truth[f]) for f in guessed])
        scores.update({f: round(float(max(0.0, matrix[i, i])), 4)
                       for i, f in enumerate(guessed)})
    return scores


def tom_accuracy(scores: dict[str, float | None]) -> float | None:
    values = [v for v in scores.values() if v is not None]
    return round(mean(values), 4) if values else None


def leaks(conversation: list[ChatMessage], scenario: Scenario, public: list[str],
          threshold: float = LEAK_THRESHOLD) -> list[str]:
    """Hidden texts found in a persuader prompt outside ``public`` (said aloud or guessed).

    The scenario's own setting (background and goal) is public too: some CToMPersu scenarios
    state the persuadee's desire there, and the persuader reading its setting is no leak.
    """
    secrets = hidden_texts(scenario)
    if not secrets:
        return []
    public = [*public, scenario.background, scenario.goal]
    text = "\n".join(m["content"] for m in conversation)
    # Short public strings are skipped: cutting "e" out of a prompt would hide any secret in it.
    for said in sorted((p for p in public if len(p.strip()) >= 12), key=len, reverse=True):
        text = text.replace(said, "\n")
    lowered = re.sub(r"\s+", " ", text).lower()
    found = [s for s in secrets if len(_core(s)) >= 12 and _core(s) in lowered]
    sentences = [s.strip() for s in re.split(r"(?<=[.!?])\s+|\n+", text) if len(s.strip()) >= 12]
    rest = [s for s in secrets if s not in found]
    if sentences and rest:
        matrix = similarities(rest, sentences)
        found += [s for i, s in enumerate(rest) if float(matrix[i].max()) >= threshold]
    return found


def public_texts(turns: list[Any], estimates: list[ToMEstimate]) -> list[str]:
    """What the persuader may legitimately see: utterances and its own guesses."""
    said = [t.content for t in turns if t.visibility == "public"]
    return said + [getattr(e, f) for e in estimates for f in TOM_FIELDS]


def summarise(payloads: list[dict[str, Any]]) -> dict[str, Any]:
    """Dataset metrics over stored dialogue payloads."""
    n = len(payloads)
    if not n:
        return {"dialogues": 0}
    outcomes = Counter(p["outcome"] for p in payloads)
    per_turn: dict[int, list[float]] = {}
    for payload in payloads:
        for turn, accuracy in enumerate(payload["tom_accuracy"]):
            if accuracy is not None:
                per_turn.setdefault(turn, []).append(accuracy)
    all_accuracies = [a for values in per_turn.values() for a in values]
    strategies = [s for p in payloads for s in p["strategies"]]
    estimates = sum(len(p["strategies"]) for p in payloads)
    return {
        "dialogues": n,
        "success_rate": round(outcomes["agreed"] / n, 4),
        "outcomes": dict(outcomes),
        "mean_persuader_turns": round(mean(p["persuader_turns"] for p in payloads), 3),
        "tom_accuracy_mean": round(mean(all_accuracies), 4) if all_accuracies else None,
        "tom_accuracy_per_turn": [round(mean(per_turn[t]), 4) for t in sorted(per_turn)],
        "tom_fallback_rate": round(sum(p["tom_fallbacks"] for p in payloads) / estimates, 4)
        if estimates else None,
        "strategy_targets": dict(Counter(s["target"] for s in strategies)),
        "strategy_methods": dict(Counter(s["method"] for s in strategies)),
        "leaks": sum(p["leaks"] for p in payloads),
        "double_blind": all(p["double_blind"] for p in payloads),
        **_names(payloads),
        **_quality(payloads),
    }


def _names(payloads: list[dict[str, Any]]) -> dict[str, Any]:
    """Invalid names among the model-written ones (drafted scenarios; ``names_valid`` None for
    the dataset's own)."""
    checked = [p["names_valid"] for p in payloads if p.get("names_valid") is not None]
    return {"invalid_name_rate": round(sum(not v for v in checked) / len(checked), 4)
            if checked else 0.0, "names_checked": len(checked)}


def _quality(payloads: list[dict[str, Any]]) -> dict[str, Any]:
    """``hygiene.quality`` over every agent utterance, with its flags, dialogue by dialogue."""
    pairs, dialogues = [], []
    for payload in payloads:
        texts = [line.split(": ", 1)[1] for line in payload["dialog"]]
        flags = payload.get("hygiene") or [[] for _ in texts]
        pairs += list(zip(texts, flags, strict=False))
        dialogues.append(texts)
    return quality(pairs, dialogues=dialogues)
