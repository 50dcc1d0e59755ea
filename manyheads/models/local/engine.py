"""``LocalEngine``: PyTorch + transformers with our own decode loop (``decode.py``).

It is the engine where the heads live: draft heads replace the decode step, uncertainty heads
observe every forward pass.

Requests from every caller (threads, coroutines, server requests) join one running batch
(``batching.py``: continuous batching, a sequence joins or leaves between steps). Draft-head steps
and observers see one caller's requests as their own padded batch instead (``decode_stream``),
run alone between two steps of the shared batch.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from concurrent.futures import Future
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from manyheads.models.embedded import resolve_model
from manyheads.models.engine import Engine, Request, encode_prompt
from manyheads.models.local import gqa_attention
from manyheads.models.local.batching import Job, Scheduler
from manyheads.models.local.decode import Observer, Row, StepFn, decode_stream, vanilla_step
from manyheads.models.local.decoders import DecoderName, make_step
from manyheads.models.local.grammar import GrammarFactory
from manyheads.models.local.prepack import prepack_linears
from manyheads.models.local.speculate import DraftStep
from manyheads.models.local.text import TextTracker
from manyheads.models.types import Completion, TokenLogprob, Usage


class LocalEngine(Engine):
    name = "local"

    def __init__(self, model: str | Path | None = None, *, dtype: str = "float32",
                 attn_implementation: str = "sdpa", threads: int | None = None,
                 max_batch: int = 32, decoder: DecoderName = "draft-hydra",
                 prepack: bool = True) -> None:
        if threads:
            torch.set_num_threads(threads)
        self.path = resolve_model(model)
        self.model_name = str(model or self.path.name)
        self.tokenizer = AutoTokenizer.from_pretrained(self.path)
        if attn_implementation == "sdpa":  # the same kernel, without copying grouped K/V heads
            attn_implementation = gqa_attention.NAME
        self.model = AutoModelForCausalLM.from_pretrained(
            self.path, dtype=getattr(torch, dtype), attn_implementation=attn_implementation)
        self.model.eval()
        if prepack:
            prepack_linears(self.model)
        config = self.model.config
        self.context_len = int(getattr(config, "max_position_embeddings", 2048))
        self.vocab_size = int(config.vocab_size)
        self.eos_ids = _eos_ids(self.tokenizer, self.model)
        self.pad_id = self.tokenizer.pad_token_id
        if self.pad_id is None:
            self.pad_id = min(self.eos_ids)
        self.observers: list[Observer] = []
        self._grammars: GrammarFactory | None = None
        self._scheduler = Scheduler(self.model, eos_ids=self.eos_ids, pad_id=self.pad_id,
                                    complete=lambda job, elapsed: self._completion(
                                        job.row, job.tracker, elapsed),
                                    stats=self.tally, max_batch=max_batch)
        self._streamed: dict[int, Completion] = {}  # id(request) -> its completion, for traces
        self.step = make_step(self, decoder)

    @property
    def step(self) -> StepFn:
        """The decode step: ``vanilla_step``, a ``DraftStep`` or a ``MedusaStep``."""
        return self._step

    @step.setter
    def step(self, step: StepFn) -> None:
        self._step = step
        # A DraftStep speculates for a batch of one and is a plain step otherwise, so it can
        # drive the shared batch; Medusa trees run each caller's requests alone.
        shares = step is vanilla_step or isinstance(step, DraftStep)
        self._scheduler.step = step if shares else vanilla_step

    @property
    def batched(self) -> bool:
        """Requests join the shared batch unless draft heads or observers are attached."""
        return self._scheduler.step is self._step and not self.observers

    @property
    def grammars(self) -> GrammarFactory:
        """JSON-schema grammars for this tokenizer, compiled on first use."""
        if self._grammars is None:
            self._grammars = GrammarFactory(self.tokenizer, self.vocab_size)
        return self._grammars

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text`` alone (no special tokens)."""
        return self.tokenizer.encode(text, add_special_tokens=False)

    @property
    def in_flight(self) -> int:
        """Requests running or waiting in the shared batch."""
        return self._scheduler.in_flight

    def _job(self, request: Request, on_delta=None) -> Job:
        prompt = encode_prompt(self.tokenizer, request.prompt, self.context_len)
        row = self._row(request, prompt)
        return Job(prompt, row, TextTracker(self.tokenizer, row.params.stop), on_delta=on_delta)

    def _row(self, request: Request, prompt: list[int]) -> Row:
        params = request.params
        prompt_len = len(prompt)
        room = self.context_len - prompt_len
        if params.max_tokens > room:
            params = params.model_copy(update={"max_tokens": room})
        seed = params.seed if params.seed is not None else int(torch.randint(0, 2**31 - 1, ()))
        generator = None if params.greedy else torch.Generator().manual_seed(seed)
        grammar = None
        if request.schema is not None:
            grammar = self.grammars.for_schema(request.schema)
        return Row(prompt_len=prompt_len, params=params, grammar=grammar, generator=generator,
                   seed=seed,
                   prompt=prompt)

    # -- decoding ------------------------------------------------------------------------------
    def _decode(self, requests: list[Request]) -> Iterator[list[str]]:
        """Yield the text deltas of every row after each step; return the completions."""
        started = time.perf_counter()
        prompts = [encode_prompt(self.tokenizer, r.prompt, self.context_len) for r in requests]
        rows = [self._row(r, p) for r, p in zip(requests, prompts, strict=True)]
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
                          elapsed_s=elapsed, logprobs=logprobs, token_ids=list(row.tokens))

    def _alone(self, requests: list[Request], on_delta=None,
               stop: threading.Event | None = None) -> Future:
        """One caller's requests as their own batch (draft heads, observers), run between two
        steps of the shared batch; ``on_delta`` gets row 0's text; ``stop`` ends it early."""

        def work() -> list[Completion]:
            steps = self._decode(requests)
            while True:
                try:
                    deltas = next(steps)
                except StopIteration as done:
                    return done.value
                if on_delta is not None and deltas[0]:
                    on_delta(deltas[0])
                if stop is not None and stop.is_set():
                    steps.close()
                    return []

        return self._scheduler.exclusive(work)

    def _run(self, requests: list[Request]) -> list[Completion]:
        if not self.batched:
            return self._alone(requests).result()
        jobs = [self._job(r) for r in requests]  # prompt errors raise before anything runs
        futures = [self._scheduler.submit(job) for job in jobs]
        try:
            return [future.result() for future in futures]
        except BaseException:
            for job in jobs:
                job.cancel()
            raise

    async def _complete(self, request: Request) -> Completion:
        if not self.batched:
            return (await asyncio.wrap_future(self._alone([request])))[0]
        job = self._job(request)
        try:
            return await asyncio.wrap_future(self._scheduler.submit(job))
        except asyncio.CancelledError:
            job.cancel()  # the caller went away: its sequence leaves the batch
            raise

    async def _stream(self, request: Request) -> AsyncIterator[str]:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[str | None] = asyncio.Queue()

        def put(item: str | None) -> None:
            loop.call_soon_threadsafe(queue.put_nowait, item)

        job, stop = None, threading.Event()
        if self.batched:
            job = self._job(request, on_delta=put)
            future = self._scheduler.submit(job)
        else:
            future = self._alone([request], on_delta=put, stop=stop)
        future.add_done_callback(lambda _: put(None))  # after every delta of this request
        try:
            while (item := await queue.get()) is not None:
                yield item
            result = future.result()
            completion = result if isinstance(result, Completion) else result[0]
            self._streamed[id(request)] = completion
        finally:
            stop.set()
            if job is not None:
                job.cancel()  # a consumer that stops early takes its sequence out of the batch

    def _stream_completion(self, request: Request) -> Completion | None:
        return self._streamed.pop(id(request), None)

    def close(self) -> None:
        """Fail whatever is still queued or running; safe to call twice."""
        self._scheduler.close()
        self.observers.clear()


def _eos_ids(tokenizer, model) -> set[int]:
    ids = {tokenizer.eos_token_id}
    configured = getattr(model.generation_config, "eos_token_id", None)
    if isinstance(configured, int):
        ids.add(configured)
    elif isinstance(configured, Sequence):
        ids.update(configured)
    return {i for i in ids if i is not None}
