"""The Perspectives Distribution Score: which perspectives an answer draws on, and how evenly.

An answer is split into sentences and each sentence gets one label: a perspective's name, or
``None`` when it draws on none of them. Two classifiers give labels:

- ``embedding`` (default): cosine similarity of the offline MiniLM embeddings of the sentence and
  of each perspective's description; the best match wins if it reaches ``MIN_SIMILARITY``;
- ``llm``: a judge on any Engine picks from an enum of the names plus ``"none"``; the schema is
  bounded, and a reply that still fails to parse counts as ``"none"``.

PDS is the share of labelled sentences per perspective (unlabelled sentences are left out, so the
shares sum to 1, or are all 0 when nothing was labelled). PDS entropy is ``H(p) / log(K)`` in
percent, with K the number of perspectives on the panel (not those that happened to be used): an
answer spread evenly over the whole panel scores 100, one drawing on a single perspective 0, and
an answer with no labelled sentence also 0 (it draws on no perspective at all).
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from functools import cache
from statistics import mean
from typing import Literal

from pydantic import BaseModel, create_model

from manyheads.agents.prompts import Prompts
from manyheads.errors import ConfigError
from manyheads.models import Engine, SamplingParams
from manyheads.models.embedder import embedder

PROMPTS = Prompts(__package__)

Classifier = Literal["embedding", "llm"]
NONE = "none"
MIN_SIMILARITY = 0.2  # MiniLM cosine below which a sentence matches no perspective
MIN_WORDS = 3  # shorter fragments ("Yes.", list markers) carry no perspective
MAX_SENTENCES = 40  # per answer: bounds the judge's batch and the embedding work
JUDGE_TOKENS = 24  # {"perspective": "<longest name>"} fits easily

Perspectives = Mapping[str, str]  # name -> description, in panel order


class PdsResult(BaseModel):
    shares: dict[str, float]  # per perspective, sums to 1 (or all 0 when nothing was labelled)
    counts: dict[str, int]  # labelled sentences per perspective, for pooling over answers
    entropy: float  # percent, see the module docstring
    sentences: int
    labelled: int
    sentiment: float  # VADER compound of the whole answer, -1..1
    sentiment_by_perspective: dict[str, float]  # mean compound of the sentences labelled with it


def split_sentences(text: str) -> list[str]:
    """Sentences and lines of ``text``, list markers stripped, fragments dropped, bounded."""
    parts = re.split(r"(?<=[.!?])\s+|\n+", text)
    cleaned = (re.sub(r"^\s*(?:[-*\u2022]|\d+[.)])\s*", "", p).strip() for p in parts)
    return [s for s in cleaned if len(s.split()) >= MIN_WORDS][:MAX_SENTENCES]


def distribution(labels: Sequence[str | None], names: Sequence[str]) -> dict[str, float]:
    """Share of the labelled sentences per name; all zeros when none is labelled."""
    counts = Counter(label for label in labels if label is not None)
    total = sum(counts[name] for name in names)
    return {name: counts[name] / total if total else 0.0 for name in names}


def entropy_pct(shares: Sequence[float], k: int | None = None) -> float:
    """``H(p) / log(K)`` in percent; 0 for an empty distribution or a panel of one."""
    k = len(shares) if k is None else k
    total = sum(shares)
    if k < 2 or total <= 0:
        return 0.0
    h = -sum(p / total * math.log(p / total) for p in shares if p > 0)
    return round(max(0.0, 100 * h / math.log(k)), 2)


def classify_embedding(sentences: Sequence[str], perspectives: Perspectives,
                       min_similarity: float = MIN_SIMILARITY) -> list[str | None]:
    """The closest perspective by MiniLM cosine, or None below ``min_similarity``."""
    if not sentences:
        return []
    names = list(perspectives)
    model = embedder()
    a = model.encode(list(sentences), normalize_embeddings=True, convert_to_numpy=True)
    b = model.encode([perspectives[n] for n in names], normalize_embeddings=True,
                     convert_to_numpy=True)
    scores = a @ b.T  # [sentences, perspectives]
    best = scores.argmax(axis=1)
    return [names[j] if scores[i, j] >= min_similarity else None for i, j in enumerate(best)]


@cache
def judge_model(names: tuple[str, ...]) -> type[BaseModel]:
    """The judge's answer: one of the names or "none", nothing else can be decoded."""
    choice = Literal[(*names, NONE)]  # type: ignore[valid-type]
    return create_model("PerspectiveLabel", perspective=(choice, ...))


def classify_llm(engine: Engine, sentences: Sequence[str], perspectives: Perspectives
                 ) -> list[str | None]:
    """One judge call per sentence, all in one batch; a failed parse counts as "none"."""
    if not sentences:
        return []
    listed = [{"name": n, "description": d} for n, d in perspectives.items()]
    system = PROMPTS.render("judge_system")
    views = [[{"role": "system", "content": system},
              {"role": "user", "content": PROMPTS.render("judge", perspectives=listed,
                                                 sentence=s)}] for s in sentences]
    completions = engine.chat(views, SamplingParams(max_tokens=JUDGE_TOKENS),
                              response_model=judge_model(tuple(perspectives)))
    labels = [c.parsed.perspective if c.parsed is not None else NONE for c in completions]
    return [None if label == NONE else label for label in labels]


@cache
def _vader():
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

    return SentimentIntensityAnalyzer()


def sentiment(text: str) -> float:
    """VADER's compound score, -1 (negative) .. 1 (positive)."""
    return float(_vader().polarity_scores(text)["compound"])


def sentiment_by_label(sentences: Sequence[str], labels: Sequence[str | None],
                       names: Sequence[str]) -> dict[str, float]:
    """Mean sentence sentiment per perspective, for those that labelled any sentence."""
    grouped: dict[str, list[float]] = {}
    for sentence, label in zip(sentences, labels, strict=True):
        if label is not None:
            grouped.setdefault(label, []).append(sentiment(sentence))
    return {n: round(mean(grouped[n]), 4) for n in names if n in grouped}


def score(text: str, perspectives: Perspectives, *, classifier: Classifier = "embedding",
          engine: Engine | None = None) -> PdsResult:
    """PDS, its entropy and sentiment for one answer; ``llm`` needs an ``engine``."""
    sentences = split_sentences(text)
    if classifier == "llm":
        if engine is None:
            raise ConfigError("the llm PDS classifier needs an engine")
        labels = classify_llm(engine, sentences, perspectives)
    else:
        labels = classify_embedding(sentences, perspectives)
    names = list(perspectives)
    shares = distribution(labels, names)
    return PdsResult(shares={n: round(v, 4) for n, v in shares.items()},
                     counts={n: labels.count(n) for n in names},
                     entropy=entropy_pct(list(shares.values()), len(names)),
                     sentences=len(sentences), labelled=sum(x is not None for x in labels),
                     sentiment=round(sentiment(text), 4) if text.strip() else 0.0,
                     sentiment_by_perspective=sentiment_by_label(sentences, labels, names))
