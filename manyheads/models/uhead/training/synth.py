"""Off-policy training text: reference solutions with planted mistakes, scored by prefill.

Decoding is the expensive part of making data on a CPU; one prefill pass over a written solution
costs about as much as a few decoded tokens. Mistakes are planted where the small model makes
them (a wrong result, an invented operand); labels still come from the checker, so they follow
exactly the same definition as on generated text. Evaluation stays on generated text.
"""

from __future__ import annotations

import random
import re

from manyheads.models.uhead.features import FeatureConfig
from manyheads.models.uhead.steps import format_steps
from manyheads.models.uhead.training.data import Sample, prefill_sample, solver_prompt
from manyheads.models.uhead.training.problems import Problem

_LAST_NUMBER = re.compile(r"(\d+)(?!.*\d)")


def _nudge(value: int, rng: random.Random) -> int:
    """A plausible wrong number: off by a little, or off by a power of ten."""
    if rng.random() < 0.3 and value >= 10:
        return value * 10 if rng.random() < 0.5 else value // 10
    return max(0, value + rng.choice([-1, 1]) * rng.randint(1, max(2, value // 4)))


def plant_mistake(steps: list[str], rng: random.Random) -> list[str]:
    """Change one step: its result (later steps then carry the wrong value on) or an operand."""
    k = rng.randrange(len(steps))
    step = steps[k]
    if rng.random() < 0.6:
        match = _LAST_NUMBER.search(step)
        old = int(match.group(1))
        new = _nudge(old, rng)
        if new == old:
            new = old + 1
        planted = [*steps[:k], step[:match.start()] + str(new) + step[match.end():]]
        return planted + [s.replace(str(old), str(new)) for s in steps[k + 1:]]
    numbers = list(re.finditer(r"\d+", step.split("=")[1] if "=" in step else step))
    offset = step.index("=") + 1 if "=" in step else 0
    if not numbers:
        return steps
    target = rng.choice(numbers[:-1] or numbers)
    new = str(_nudge(int(target.group(0)), rng) or 1)
    changed = step[:offset + target.start()] + new + step[offset + target.end():]
    return [*steps[:k], changed, *steps[k + 1:]]


def synth_texts(problem: Problem, count: int, rng: random.Random) -> list[str]:
    """``count`` responses: about a third correct, the rest with one or two planted mistakes."""
    texts = []
    for _ in range(count):
        steps = list(problem.solution)
        if rng.random() > 0.35:
            steps = plant_mistake(steps, rng)
            if rng.random() < 0.25:
                steps = plant_mistake(steps, rng)
        answer = _LAST_NUMBER.search(steps[-1]).group(1)
        texts.append(format_steps(steps, answer))
    return texts


def synth_samples(engine, problem: Problem, count: int, config: FeatureConfig,
                  rng: random.Random) -> list[Sample]:
    """Prefill-scored samples of ``synth_texts`` on the engine's backbone."""
    prompt = solver_prompt(engine, problem)
    scored = (prefill_sample(engine, problem, prompt, text, config)
              for text in synth_texts(problem, count, rng))
    return [s for s in scored if s is not None]
