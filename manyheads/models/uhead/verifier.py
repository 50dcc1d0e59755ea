"""``StepVerifier``: score steps with a trained UHead, and use the scores to guide generation.

Scoring text from any engine goes through prefill on the verifier's own backbone; generation on
that backbone is scored in flight by a ``FeatureObserver`` (no second pass). Guided generation:
best-of-N by the weakest step, and resampling from the first low-scoring step, with a bound on
retries so the cost is known in advance.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import torch

from manyheads.models.types import ChatMessage, SamplingParams
from manyheads.models.uhead.errors import UHeadError
from manyheads.models.uhead.features import FeatureObserver, prefill_features
from manyheads.models.uhead.head import UHead
from manyheads.models.uhead.prompts import solver_conversation
from manyheads.models.uhead.sample import Sample
from manyheads.models.uhead.steps import (
    Step,
    answer_number,
    decode_offsets,
    format_steps,
    split_steps,
    token_spans,
)

DEFAULT_HEAD = "smollm2-135m-instruct"


@dataclass(frozen=True)
class StepScore:
    """One step's verdict: ``p_incorrect`` from the head; ``flagged`` above the threshold."""

    index: int
    text: str
    p_incorrect: float
    flagged: bool


@dataclass
class Candidate:
    text: str
    scores: list[StepScore]

    @property
    def weakest(self) -> float:
        """Highest P(incorrect) over the steps (1.0 when there is no step to trust)."""
        return max((s.p_incorrect for s in self.scores), default=1.0)

    @property
    def answer(self) -> float | None:
        return answer_number(self.text)


@dataclass
class Guided:
    """Result of guided generation: the chosen text and how it was reached."""

    text: str
    scores: list[StepScore]
    candidates: list[Candidate] = field(default_factory=list)
    retries: int = 0


class StepVerifier:
    """Scores the steps of a solution; ``threshold`` defaults to the head's calibrated one."""

    def __init__(self, head: UHead, engine, threshold: float | None = None) -> None:
        self.head = head.eval()
        self.engine = engine
        self.threshold = head.config.threshold if threshold is None else threshold
        self.observer = FeatureObserver(head.config.features)

    @classmethod
    def load(cls, directory: str | Path, engine=None, threshold: float | None = None
             ) -> StepVerifier:
        head = UHead.load(directory)
        if engine is None:
            from manyheads.models.local.engine import LocalEngine

            attn = "eager" if head.config.features.wants_attentions else "sdpa"
            engine = LocalEngine(attn_implementation=attn)
        return cls(head, engine, threshold)

    @classmethod
    def default(cls, engine=None, threshold: float | None = None) -> StepVerifier:
        """The head shipped for the embedded model (no training needed)."""
        path = resources.files("manyheads.models.uhead") / "weights" / DEFAULT_HEAD
        return cls.load(Path(str(path)), engine, threshold)

    # -- scoring -------------------------------------------------------------------------------
    def conversation(self, prompt: str | list[ChatMessage]) -> list[ChatMessage]:
        """A bare question is wrapped in our solver prompt (what the head was trained under)."""
        return solver_conversation(prompt) if isinstance(prompt, str) else list(prompt)

    def _prompt_ids(self, prompt: str | list[ChatMessage]) -> list[int]:
        text = self.engine.tokenizer.apply_chat_template(
            self.conversation(prompt), tokenize=False, add_generation_prompt=True)
        return self.engine.tokenizer(text, add_special_tokens=False)["input_ids"]

    def score(self, prompt: str | list[ChatMessage], steps: list[str] | str) -> list[StepScore]:
        """Score ``steps`` (a list of step texts, or a whole response) answering ``prompt``."""
        response = format_steps(steps) if isinstance(steps, list) else steps
        found = split_steps(response)
        if not found:
            raise UHeadError("no 'Step k:' lines to score", hint="use the step format")
        encoded = self.engine.tokenizer(response, add_special_tokens=False,
                                        return_offsets_mapping=True)
        feats = prefill_features(self.engine.model, self._prompt_ids(prompt),
                                 encoded["input_ids"], self.head.config.features)
        spans = token_spans([tuple(o) for o in encoded["offset_mapping"]], found)
        return self._scores(feats, found, spans)

    @torch.no_grad()
    def _scores(self, feats: torch.Tensor, steps: list[Step], spans: list[tuple[int, int]]
                ) -> list[StepScore]:
        """feats: [R, D] features of the response tokens."""
        if not steps:
            return []
        x = feats.float()[None]
        token_mask = torch.ones(1, len(feats), dtype=torch.bool)
        step_mask = torch.zeros(1, len(steps), len(feats))
        for j, (lo, hi) in enumerate(spans):
            step_mask[0, j, lo:hi] = 1
        probs = torch.sigmoid(self.head(x, token_mask, step_mask))[0].tolist()
        return [StepScore(s.index, s.text, p, p > self.threshold)
                for s, p in zip(steps, probs, strict=True)]

    # -- generation ----------------------------------------------------------------------------
    def sample(self, prompt: str | list[ChatMessage], n: int, temperature: float = 0.7,
               max_tokens: int = 96, seed: int = 0) -> list[Candidate]:
        """``n`` solutions in one batch, each scored in flight (needs a LocalEngine)."""
        if not hasattr(self.engine, "observers"):
            raise UHeadError("in-flight scoring needs a LocalEngine")
        conversation = self.conversation(prompt)
        params = [SamplingParams(temperature=temperature, top_p=0.95, max_tokens=max_tokens,
                                 stop=("\n\n",), seed=seed * 1009 + i) for i in range(n)]
        self.engine.observers.append(self.observer)
        try:
            completions = self.engine.chat([conversation] * n, params)
        finally:
            self.engine.observers.remove(self.observer)
        return [self.candidate(row, c.usage.completion_tokens)
                for row, c in enumerate(completions)]

    def candidate(self, row: int, count: int) -> Candidate:
        """Score batch row ``row`` of the last in-flight generation (its first ``count`` tokens)."""
        ids, feats = self.observer.take(row, count)
        text, offsets = decode_offsets(self.engine.tokenizer, ids)
        steps = split_steps(text)
        return Candidate(text, self._scores(feats, steps, token_spans(offsets, steps)))

    def rate(self, sample: Sample) -> Candidate:
        """Score a sample whose features are already taken (``solve_by_prefill``, ``solve``)."""
        return Candidate(sample.text, self._scores(sample.features, split_steps(sample.text),
                                                   sample.spans))

    def best_of_n(self, prompt: str | list[ChatMessage], n: int = 8, temperature: float = 0.7,
                  max_tokens: int = 96, seed: int = 0) -> Guided:
        """Sample ``n`` solutions; keep the one whose weakest step is strongest."""
        candidates = self.sample(prompt, n, temperature, max_tokens, seed)
        best = pick_best(candidates)
        return Guided(best.text, best.scores, candidates)

    def resample_steps(self, prompt: str | list[ChatMessage], max_retries: int = 3,
                       temperature: float = 0.8, max_tokens: int = 96, seed: int = 0) -> Guided:
        """Greedy draft; while a step is flagged and retries remain, regenerate from that step.

        Each retry costs one generation; the text kept is the best-scoring one seen.
        """
        template = self.engine.tokenizer.apply_chat_template(
            self.conversation(prompt), tokenize=False, add_generation_prompt=True)
        first = self.engine.generate([template], SamplingParams(max_tokens=max_tokens,
                                                                stop=("\n\n",)))[0].text
        current = Candidate(first, self.score(prompt, first) if split_steps(first) else [])
        best, retries = current, 0
        while retries < max_retries:
            bad = next((s for s in current.scores if s.flagged), None)
            if bad is None and current.scores:
                break
            steps = split_steps(current.text)
            prefix = current.text[:steps[bad.index].start] if bad is not None else ""
            params = SamplingParams(temperature=temperature, top_p=0.95, max_tokens=max_tokens,
                                    stop=("\n\n",), seed=seed * 1009 + retries)
            tail = self.engine.generate([template + prefix], params)[0].text
            retries += 1
            text = prefix + tail
            current = Candidate(text, self.score(prompt, text) if split_steps(text) else [])
            if current.weakest < best.weakest:
                best = current
        return Guided(best.text, best.scores, retries=retries)


def pick_best(candidates: list[Candidate]) -> Candidate:
    """Lowest weakest-step P(incorrect); among near ties (0.02), the most common answer."""
    if not candidates:
        raise UHeadError("no candidates to choose from")
    votes = Counter(c.answer for c in candidates if c.answer is not None)
    floor = min(c.weakest for c in candidates)
    close = [c for c in candidates if c.weakest <= floor + 0.02]
    return max(close, key=lambda c: (votes.get(c.answer, 0), -c.weakest))


def majority(candidates: list[Candidate]) -> float | None:
    """The most common final answer (first seen wins ties)."""
    votes = Counter(c.answer for c in candidates if c.answer is not None)
    return votes.most_common(1)[0][0] if votes else None
