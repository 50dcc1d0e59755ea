"""The step format ("Step k: ..." lines) and the map from steps to token spans.

A verifier scores steps, but the backbone sees tokens: the splitter finds each step's character
range in the response, and ``token_spans`` turns character ranges into token index ranges using
the per-token character offsets (from the tokenizer's offset mapping, or from decoding).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

STEP_RE = re.compile(r"^[ \t]*(?:\*\*)?step[ \t]*(\d+)[ \t]*(?:\*\*)?[ \t]*[:.)](?:\*\*)?[ \t]*",
                     re.IGNORECASE | re.MULTILINE)
ANSWER_RE = re.compile(r"^[ \t]*(?:\*\*)?(?:final[ \t]+)?answer[ \t]*(?:\*\*)?[ \t]*:[ \t]*(.*)$",
                       re.IGNORECASE | re.MULTILINE)
NUMBER_RE = re.compile(r"-?\d+(?:\.\d+)?")


@dataclass(frozen=True)
class Step:
    """One step: its number as written, its text (without the "Step k:" label) and char range."""

    index: int  # 0-based position among the steps found
    number: int  # the k written after "Step"
    text: str
    start: int  # char offset of the step's first char (the "S" of "Step")
    end: int  # char offset just past its last non-space char


def split_steps(text: str) -> list[Step]:
    """Steps of a response. A step runs until the next step, an "Answer:" line or a blank line;
    lines in between that are not labelled continue the current step."""
    stops = sorted({m.start() for m in STEP_RE.finditer(text)}
                   | {m.start() for m in ANSWER_RE.finditer(text)}
                   | {m.start() for m in re.finditer(r"\n[ \t]*\r?\n", text)} | {len(text)})
    steps: list[Step] = []
    for match in STEP_RE.finditer(text):
        start = match.start() + len(match.group(0)) - len(match.group(0).lstrip(" \t"))
        end = next(s for s in stops if s > match.start())
        body_end = len(text[:end].rstrip())
        body = text[match.end():body_end].replace("\r", "")
        steps.append(Step(index=len(steps), number=int(match.group(1)),
                          text=" ".join(body.split()), start=start, end=body_end))
    return steps


def final_answer(text: str) -> str | None:
    """The text after the last "Answer:" label, or None."""
    found = ANSWER_RE.findall(text)
    return found[-1].strip() if found else None


def answer_number(text: str) -> float | None:
    """The first number of the final answer (commas between digits ignored), or None."""
    answer = final_answer(text)
    if answer is None:
        return None
    match = NUMBER_RE.search(re.sub(r"(?<=\d),(?=\d{3})", "", answer))
    return float(match.group(0)) if match else None


def format_steps(steps: list[str], answer: str | None = None) -> str:
    """The canonical rendering of steps (and an optional answer) in our step format."""
    lines = [f"Step {i}: {s.strip()}" for i, s in enumerate(steps, 1)]
    if answer is not None:
        lines.append(f"Answer: {answer}")
    return "\n".join(lines)


def token_spans(offsets: list[tuple[int, int]], steps: list[Step]) -> list[tuple[int, int]]:
    """Token index range [lo, hi) of each step: the tokens whose chars overlap the step's chars.

    ``offsets``: (start, end) char range of each token. A token that straddles a boundary
    (e.g. "\\nStep") belongs to every step it overlaps. A step with no token gets (lo, lo).
    """
    spans = []
    for step in steps:
        inside = [i for i, (a, b) in enumerate(offsets)
                  if b > a and a < step.end and b > step.start]
        spans.append((inside[0], inside[-1] + 1) if inside else (0, 0))
    return spans


def decode_offsets(tokenizer, ids: list[int]) -> tuple[str, list[tuple[int, int]]]:
    """Text of generated ``ids`` and each token's char range, by incremental decoding (the
    generated ids need not be what re-tokenizing the text would give)."""
    offsets, previous = [], ""
    for i in range(len(ids)):
        text = tokenizer.decode(ids[:i + 1], skip_special_tokens=True)
        if text.endswith("\ufffd"):  # an incomplete UTF-8 char: the next token finishes it
            offsets.append((len(previous), len(previous)))
            continue
        offsets.append((len(previous), len(text)))
        previous = text
    return previous, offsets
