"""``LocalEngine``: PyTorch + transformers with our own decode loop (``decode.py``).

It is the engine where the heads live: draft heads replace the decode step, uncertainty heads
observe every forward pass. Requests in one ``chat``/``generate`` call share one padded batch.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from manyheads.models.embedded import resolve_model
from manyheads.models.engine import Engine, Request, encode_prompt
from manyheads.models.local.decode import Observer, Row, StepFn, decode_stream, vanilla_step
from manyheads.models.local.grammar import GrammarFactory
from manyheads.models.local.text import TextTracker
from manyheads.models.types import Completion, TokenLogprob, Usage


class LocalEngine(Engine):
    name = "local"

    def __init__(self, model: str | Path | None = None, *, dtype: str = "float32",
                 attn_implementation: str = "sdpa", threads: int | None = None) -> None:
        if threads:
            torch.set_num_threads(threads)
        self.path = resolve_model(model)
        self.model_name = str(model or self.path.name)
        self.tokenizer = AutoTokenizer.from_pretrained(self.path)
        self.model = AutoModelForCausalLM.from_pretrained(
            self.path, dtype=getattr(torch, dtype), attn_implementation=attn_implementation)
        self.model.eval()
        config = self.model.config
        self.context_len = int(getattr(config, "max_position_embeddings", 2048))
        self.vocab_size = int(config.vocab_size)
        self.eos_ids = _eos_ids(self.tokenizer, self.model)
        self.pad_id = self.tokenizer.pad_token_id
        if self.pad_id is None:
            self.pad_id = min(self.eos_ids)
        self.observers: list[Observer] = []
        self.step: StepFn = vanilla_step
        self._grammars: GrammarFactory | None = None
        self._lock = threading.Lock()

    def _row(self, request: Request, prompt_len: int) -> Row:
        params = request.params
        room = self.context_len - prompt_len
        if params.max_tokens > room:
            params = params.model_copy(update={"max_tokens": room})
        generator = None
        if not params.greedy:
            generator = torch.Generator()
            generator.manual_seed(params.seed if params.seed is not None
                                  else int(torch.randint(0, 2**31 - 1, ())))
        grammar = None
        if request.schema is not None:
            if self._grammars is None:
                self._grammars = GrammarFactory(self.tokenizer, self.vocab_size)
            grammar = self._grammars.for_schema(request.schema)
        return Row(prompt_len=prompt_len, params=params, grammar=grammar, generator=generator)

    # -- decoding ------------------------------------------------------------------------------
    def _decode(self, requests: list[Request]) -> Iterator[list[str]]:
        """Yield the text deltas of every row after each step; return the completions."""
        started = time.perf_counter()
        prompts = [encode_prompt(self.tokenizer, r.prompt, self.context_len) for r in requests]
        rows = [self._row(r, len(p)) for r, p in zip(requests, prompts, strict=True)]
        trackers = [TextTracker(self.tokenizer, r.params.stop) for r in rows]
        steps = decode_stream(self.model, prompts, rows, eos_ids=self.eos_ids, pad_id=self.pad_id,
                              observers=self.observers, step=self.step)
        for new_tokens in steps:
            deltas = []
            for row, tracker, new in zip(rows, trackers, new_tokens, strict=True):
                if not new and row.finish_reason is None:
                    deltas.append("")
                    continue
                final = row.finish_reason is not None
                deltas.append(tracker.update(row.tokens, final) if new or final else "")
                if tracker.stopped and row.finish_reason is None:
                    row.finish_reason = "stop"
            yield deltas
        elapsed = time.perf_counter() - started
        return [self._completion(row, tracker, elapsed) for row, tracker in
                zip(rows, trackers, strict=True)]

    def _completion(self, row: Row, tracker: TextTracker, elapsed: float) -> Completion:
        tracker.update(row.tokens, final=True)
        logprobs = None
        if row.params.logprobs is not None:
            logprobs = [TokenLogprob(token=self.tokenizer.decode([t]), logprob=lp,
                                     top={self.tokenizer.decode([i]): v for i, v in top.items()})
                        for t, lp, top in row.logprobs[:len(row.tokens)]]
        return Completion(text=tracker.text, finish_reason=row.finish_reason or "stop",
                          usage=Usage(prompt_tokens=row.prompt_len,
                                      completion_tokens=len(row.tokens)),
                          elapsed_s=elapsed, logprobs=logprobs)

    def _run(self, requests: list[Request]) -> list[Completion]:
        with self._lock:
            steps = self._decode(requests)
            while True:
                try:
                    next(steps)
                except StopIteration as done:
                    return done.value

    async def _stream(self, request: Request) -> AsyncIterator[str]:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[str | BaseException | None] = asyncio.Queue()

        def worker() -> None:
            try:
                with self._lock:
                    for deltas in self._decode([request]):
                        if deltas[0]:
                            loop.call_soon_threadsafe(queue.put_nowait, deltas[0])
                loop.call_soon_threadsafe(queue.put_nowait, None)
            except BaseException as exc:  # re-raised in the consumer
                loop.call_soon_threadsafe(queue.put_nowait, exc)

        thread = threading.Thread(target=worker, daemon=True, name="manyheads-local-stream")
        thread.start()
        while (item := await queue.get()) is not None:
            if isinstance(item, BaseException):
                raise item
            yield item

    def close(self) -> None:
        self.observers.clear()


def _eos_ids(tokenizer, model) -> set[int]:
    ids = {tokenizer.eos_token_id}
    configured = getattr(model.generation_config, "eos_token_id", None)
    if isinstance(configured, int):
        ids.add(configured)
    elif isinstance(configured, Sequence):
        ids.update(configured)
    return {i for i in ids if i is not None}
