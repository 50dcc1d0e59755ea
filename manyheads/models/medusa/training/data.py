"""Self-distillation data: the base model answers our prompts greedily, we keep its own tokens.

Two steps per batch of prompts. Any ``Engine`` writes the greedy answers (vLLM when speed
matters, or the ``LocalEngine`` itself), kept as the token ids it chose: re-tokenizing the text
gave other ids for 13% of the embedded model's chat answers (7% of their tokens from the first
difference on), and the heads must guess what the model writes. Then one teacher-forced forward
pass of the HF model over prompt + answer gives the final (post-norm) hidden state of every
position at once. Medusa-1 trains heads on a frozen backbone, so these are the states the decode
loop would have seen. Recording them in-flight tied the data to our own slow decode loop; one
batched prefill-style pass costs a fraction of decoding (about a quarter per token on the CPU)
and lets a fast engine (vLLM) write the answers. Everything lands in a work folder:
``tokens.jsonl`` (one line per prompt) and one ``hidden-*.safetensors`` per batch, so an
interrupted run resumes at the next batch and training never regenerates."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from safetensors.torch import load_file, save_file

from manyheads.errors import ConfigError
from manyheads.models.engine import Engine, encode_prompt
from manyheads.models.medusa.heads import previous_tokens
from manyheads.models.types import SamplingParams

if TYPE_CHECKING:
    from manyheads.models.local.engine import LocalEngine

PROMPTS_FILE = Path(__file__).parent / "prompts.jsonl"
FORWARD_TOKENS = 4096  # padded tokens per teacher-forced forward pass (bounds its memory)


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


@dataclass
class Sequence:
    """One answered prompt: ``hidden[j]`` is the state after feeding answer token j-1
    (``hidden[0]`` is the last prompt position), so the base predicts ``tokens[j]`` from it."""

    id: int
    split: str
    tokens: list[int]  # the answer, EOS appended when the model stopped
    hidden: torch.Tensor  # [len(tokens), H] float16


def generate(text_engine: Engine, local_engine: LocalEngine, work_dir: str | Path, *,
             max_new_tokens: int = 160, batch_size: int = 16, prompts: list[Prompt] | None = None,
             progress: Callable[[int], None] | None = None,
             forward_tokens: int = FORWARD_TOKENS) -> int:
    """Answer every prompt not yet in ``work_dir``; returns how many were answered now.

    ``text_engine`` writes the greedy answers (any engine serving the same model, the local one
    included); ``local_engine`` supplies the tokenizer and the HF model for the hidden states.
    """
    work = Path(work_dir)
    work.mkdir(parents=True, exist_ok=True)
    done = answered_ids(work)
    todo = [p for p in (load_prompts() if prompts is None else prompts) if p.id not in done]
    tokenizer, context_len = local_engine.tokenizer, local_engine.context_len
    eos = min(local_engine.eos_ids)
    params = SamplingParams(max_tokens=max_new_tokens, temperature=0)
    made = 0
    for start in range(0, len(todo), batch_size):
        chunk = todo[start:start + batch_size]
        ids = [encode_prompt(tokenizer, chat(p.prompt), context_len) for p in chunk]
        completions = text_engine.chat([chat(p.prompt) for p in chunk], params)
        answers = []
        for prompt_ids, completion in zip(ids, completions, strict=True):
            tokens = completion.token_ids  # the model's own ids; the text only where unknown
            if tokens is None:
                tokens = tokenizer(completion.text, add_special_tokens=False)["input_ids"]
            tokens = list(tokens) + ([eos] if completion.finish_reason == "stop" else [])
            answers.append(tokens[:context_len - len(prompt_ids)])
        hidden = answer_hidden(local_engine.model, ids, answers, pad_id=local_engine.pad_id,
                               max_tokens=forward_tokens)
        tensors, lines = {}, []
        for p, prompt_ids, tokens, h in zip(chunk, ids, answers, hidden, strict=True):
            tensors[f"p{p.id}"] = h
            lines.append(json.dumps({"id": p.id, "split": p.split, "category": p.category,
                                     "prompt_ids": prompt_ids, "tokens": tokens}))
        tmp = work / f"hidden-{chunk[0].id:05d}.tmp"
        save_file(tensors, str(tmp))
        tmp.replace(work / f"hidden-{chunk[0].id:05d}.safetensors")
        with open(work / "tokens.jsonl", "a") as f:  # the record goes last: it marks "done"
            f.write("".join(line + "\n" for line in lines))
        made += len(chunk)
        if progress:
            progress(len(chunk))
    return made


@torch.inference_mode()
def answer_hidden(model, prompts: list[list[int]], answers: list[list[int]], *, pad_id: int,
                  max_tokens: int = FORWARD_TOKENS) -> list[torch.Tensor]:
    """Teacher-forced final hidden states: for each pair, rows [P-1, P-1+len(answer)) of
    ``hidden_states[-1]`` over prompt + answer (``Sequence.hidden``), as float16 on the CPU.

    The answer's last token is never fed (nothing is predicted from it). Sequences go through in
    right-padded sub-batches of at most ``max_tokens`` padded tokens, longest first.
    """
    feeds = [p + a[:-1] for p, a in zip(prompts, answers, strict=True)]
    out: list[torch.Tensor | None] = [None] * len(feeds)
    device = next(model.parameters()).device
    order = sorted(range(len(feeds)), key=lambda i: -len(feeds[i]))
    while order:
        width = len(feeds[order[0]])
        group = order[:max(1, max_tokens // max(width, 1))]
        order = order[len(group):]
        input_ids = torch.full((len(group), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(group), width), dtype=torch.long)
        for row, i in enumerate(group):
            input_ids[row, :len(feeds[i])] = torch.tensor(feeds[i], dtype=torch.long)
            mask[row, :len(feeds[i])] = 1
        outputs = model(input_ids=input_ids.to(device), attention_mask=mask.to(device),
                        output_hidden_states=True, use_cache=False,
                        logits_to_keep=1)  # no [b, width, vocab] logits: only states are wanted
        last = outputs.hidden_states[-1]  # [b, width, H], post final norm
        for row, i in enumerate(group):
            first = len(prompts[i]) - 1
            out[i] = last[row, first:first + len(answers[i])].to("cpu", torch.float16).clone()
    return out


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


def features(sequences: list[Sequence], num_heads: int,
             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Stack sequences into hidden [N, H] (float32), targets [N, K] and previous tokens [N, K]
    (what sequential heads read); drops targetless rows."""
    hidden = torch.cat([s.hidden for s in sequences]).float()
    targets = torch.cat([head_targets(s.tokens, num_heads) for s in sequences])
    prev = torch.cat([previous_tokens(s.tokens, num_heads) for s in sequences])
    keep = (targets != -100).any(dim=1)
    return hidden[keep], targets[keep], prev[keep]


def teacher_rows(sequences: list[Sequence], num_heads: int) -> torch.Tensor:
    """For each row ``features`` keeps, the row of ``torch.cat([s.hidden for s in sequences])``
    whose base prediction is head i's target: [N, K] (-1 past the end).

    Head i at row j predicts ``tokens[j+i+1]``, which the base predicts from ``hidden[j+i+1]``:
    its distribution there is the soft target of distillation."""
    rows, offset = [], 0
    for s in sequences:
        n = len(s.tokens)
        j = torch.arange(n)[:, None] + torch.arange(1, num_heads + 1)[None, :]  # [n, K]
        rows.append(torch.where(j < n, j + offset, -1)[:max(0, n - 1)])  # kept: j < n-1
        offset += s.hidden.shape[0]
    return torch.cat(rows)


def iter_batches(n: int, batch_size: int, generator: torch.Generator) -> Iterator[torch.Tensor]:
    order = torch.randperm(n, generator=generator)
    for start in range(0, n, batch_size):
        yield order[start:start + batch_size]
