"""Self-distillation data: the base model answers our prompts greedily, we keep its own tokens.

Medusa-1 trains heads on a frozen backbone, so the backbone's hidden states can be computed once.
We capture them *during* generation with a decode-loop observer (the hidden state of each token as
it is fed), so no second pass over prompt + answer is needed. Everything lands in a work folder:
``tokens.jsonl`` (one line per prompt) and one ``hidden-*.safetensors`` per generated batch, so an
interrupted run resumes at the next batch and training never regenerates.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from manyheads.errors import ConfigError
from manyheads.models.engine import encode_prompt
from manyheads.models.local.decode import Row, decode_stream
from manyheads.models.types import SamplingParams

PROMPTS_FILE = Path(__file__).parent / "prompts.jsonl"


@dataclass
class Prompt:
    id: int
    category: str
    split: str  # "train" or "eval"
    prompt: str


def load_prompts(path: str | Path | None = None, split: str | None = None) -> list[Prompt]:
    """The shipped prompt set (or another jsonl with id/category/split/prompt fields)."""
    path = Path(path) if path else PROMPTS_FILE
    try:
        items = [Prompt(**json.loads(line)) for line in path.read_text().splitlines()
                 if line.strip()]
    except (OSError, ValueError, TypeError) as exc:
        raise ConfigError(f"cannot read prompts from {path}: {exc}") from None
    return [p for p in items if split is None or p.split == split]


def chat(prompt: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": prompt}]


class _HiddenRecorder:
    """Decode-loop observer keeping the final hidden state of the last fed position per pass."""

    wants_attentions = False

    def __init__(self) -> None:
        self.steps: list[torch.Tensor] = []  # each [B, H]

    def on_forward(self, input_ids: torch.Tensor, outputs: Any, rows: list[int]) -> None:
        self.steps.append(outputs.hidden_states[-1][:, -1, :].to(torch.float16))


@dataclass
class Sequence:
    """One answered prompt: ``hidden[j]`` is the state after feeding answer token j-1
    (``hidden[0]`` is the last prompt position), so the base predicts ``tokens[j]`` from it."""

    id: int
    split: str
    tokens: list[int]  # the answer, EOS appended when the model stopped
    hidden: torch.Tensor  # [len(tokens), H] float16


def generate(engine: Any, work_dir: str | Path, *, max_new_tokens: int = 160,
             batch_size: int = 8, prompts: list[Prompt] | None = None,
             progress: Callable[[int], None] | None = None) -> int:
    """Answer every prompt not yet in ``work_dir``; returns how many were answered now."""
    work = Path(work_dir)
    work.mkdir(parents=True, exist_ok=True)
    done = answered_ids(work)
    todo = [p for p in (load_prompts() if prompts is None else prompts) if p.id not in done]
    eos = min(engine.eos_ids)
    made = 0
    for start in range(0, len(todo), batch_size):
        chunk = todo[start:start + batch_size]
        ids = [encode_prompt(engine.tokenizer, chat(p.prompt), engine.context_len) for p in chunk]
        rows = [Row(prompt_len=len(i), params=SamplingParams(max_tokens=max_new_tokens))
                for i in ids]
        recorder = _HiddenRecorder()
        for _ in decode_stream(engine.model, ids, rows, eos_ids=engine.eos_ids,
                               pad_id=engine.pad_id, observers=[recorder]):
            pass
        hidden = torch.stack(recorder.steps, dim=1)  # [B, passes, H]
        tensors, lines = {}, []
        for b, (p, row) in enumerate(zip(chunk, rows, strict=True)):
            tokens = list(row.tokens) + ([eos] if row.finish_reason == "stop" else [])
            tensors[f"p{p.id}"] = hidden[b, :len(tokens)].contiguous()
            lines.append(json.dumps({"id": p.id, "split": p.split, "category": p.category,
                                     "prompt_ids": ids[b], "tokens": tokens}))
        tmp = work / f"hidden-{chunk[0].id:05d}.tmp"
        save_file(tensors, str(tmp))
        tmp.replace(work / f"hidden-{chunk[0].id:05d}.safetensors")
        with open(work / "tokens.jsonl", "a") as f:  # the record goes last: it marks "done"
            f.write("".join(line + "\n" for line in lines))
        made += len(chunk)
        if progress:
            progress(len(chunk))
    return made


def answered_ids(work_dir: str | Path) -> set[int]:
    """Ids of the prompts whose answers are already cached."""
    return {r["id"] for r in _read_records(Path(work_dir))}


def _read_records(work: Path) -> list[dict]:
    path = work / "tokens.jsonl"
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def load_sequences(work_dir: str | Path, split: str | None = None) -> list[Sequence]:
    """Everything ``generate`` wrote, as sequences of (hidden, tokens)."""
    work = Path(work_dir)
    records = {r["id"]: r for r in _read_records(work)}
    if not records:
        raise ConfigError(f"no self-distillation data in {work}",
                          hint="run `manyheads medusa train` (it generates the data first)")
    hidden: dict[int, torch.Tensor] = {}
    for file in sorted(work.glob("hidden-*.safetensors")):
        for key, value in load_file(str(file)).items():
            hidden[int(key[1:])] = value
    return [Sequence(id=i, split=r["split"], tokens=r["tokens"], hidden=hidden[i])
            for i, r in sorted(records.items())
            if i in hidden and (split is None or r["split"] == split)]


def head_targets(tokens: list[int], num_heads: int) -> torch.Tensor:
    """Targets [L, K]: row j, head i holds tokens[j+i+1] (-100 past the end).

    ``hidden[j]`` predicts ``tokens[j]`` through the base lm_head, so head i (0-based) predicts
    the token i+1 further on.
    """
    n = len(tokens)
    out = torch.full((n, num_heads), -100, dtype=torch.long)
    t = torch.tensor(tokens, dtype=torch.long)
    for i in range(num_heads):
        if n > i + 1:
            out[:n - i - 1, i] = t[i + 1:]
    return out


def features(sequences: list[Sequence], num_heads: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack sequences into hidden [N, H] (float32) and targets [N, K]; drops targetless rows."""
    hidden = torch.cat([s.hidden for s in sequences]).float()
    targets = torch.cat([head_targets(s.tokens, num_heads) for s in sequences])
    keep = (targets != -100).any(dim=1)
    return hidden[keep], targets[keep]


def iter_batches(n: int, batch_size: int, generator: torch.Generator) -> Iterator[torch.Tensor]:
    order = torch.randperm(n, generator=generator)
    for start in range(0, n, batch_size):
        yield order[start:start + batch_size]
