"""The one interface every agent talks to, and the checks all engines share.

Subclasses implement ``_run`` (a batch of requests to raw text) and ``_stream`` (one request to text
deltas). This base class owns the behaviour that must not differ between engines: input checks,
structured-output parsing into a validated object or a typed error, and the public signatures.
"""

from __future__ import annotations

import abc
import asyncio
import time
from collections.abc import AsyncIterator, Generator, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from manyheads.errors import PromptError
from manyheads.models import structured, telemetry
from manyheads.models.types import ChatMessage, Completion, SamplingParams

Prompt = str | list[ChatMessage]  # plain text, or a chat conversation


@dataclass(frozen=True)
class Request:
    prompt: Prompt
    params: SamplingParams
    schema: dict | None = None  # JSON schema the output must satisfy
    response_model: type[BaseModel] | None = None  # parsed into ``Completion.parsed`` when set

    def __post_init__(self) -> None:
        if self.response_model is not None and self.schema is None:
            object.__setattr__(self, "schema", structured.json_schema(self.response_model))

    @property
    def is_chat(self) -> bool:
        return not isinstance(self.prompt, str)


# A program asks for one completion at a time: it yields a Request, is sent the Completion, and
# finally returns its result. ``Engine.drive`` runs many of them on one engine.
Program = Generator[Request, Completion, Any]


@dataclass
class Tally:
    """What an engine has done since it started; a UI shows the difference over one turn."""

    batches: int = 0
    requests: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    busy_s: float = 0.0  # wall time inside batches and streams
    stream_chunks: int = 0  # streamed deltas (a delta may hold more than one token)
    # Engines that batch across callers (LocalEngine): decode steps, the rows they carried
    # (step_rows / decode_steps = mean batch size), the largest batch, sequences cancelled.
    decode_steps: int = 0
    step_rows: int = 0
    max_batch_size: int = 0
    cancelled: int = 0

    @property
    def mean_batch_size(self) -> float:
        return self.step_rows / self.decode_steps if self.decode_steps else 0.0


class Engine(abc.ABC):
    """Batch ``generate``/``chat``, async ``stream``, JSON-schema outputs via ``response_model``."""

    name: str = "engine"
    model_name: str = ""

    @property
    def tally(self) -> Tally:
        if "_tally" not in self.__dict__:
            self._tally = Tally()
        return self._tally

    def generate(self, prompts: Sequence[str], params: SamplingParams | Sequence[SamplingParams]
                 | None = None, response_model: type[BaseModel] | None = None) -> list[Completion]:
        """Complete raw text prompts (no chat template)."""
        return self._batch(list(prompts), params, response_model)

    def chat(self, conversations: Sequence[list[ChatMessage]],
             params: SamplingParams | Sequence[SamplingParams] | None = None,
             response_model: type[BaseModel] | None = None) -> list[Completion]:
        """Answer each conversation as the assistant; all run as one batch."""
        return self._batch([list(c) for c in conversations], params, response_model)

    def structured(self, conversation: list[ChatMessage], response_model: type[BaseModel],
                   params: SamplingParams | None = None) -> BaseModel:
        """One validated object for one conversation, or ``StructuredOutputError``."""
        return self.chat([conversation], params, response_model)[0].value()

    def run(self, requests: list[Request]) -> list[Completion]:
        """Run prepared requests as one batch; outputs of a ``response_model`` are parsed."""
        for request in requests:
            check_prompt(request.prompt)
        return self._run_checked(requests)

    def _run_checked(self, requests: list[Request]) -> list[Completion]:
        """``run`` for requests whose prompts are already checked (``advance`` checks them)."""
        if not requests:
            return []
        started, started_ns = time.perf_counter(), time.time_ns()
        try:
            completions = self._run(requests)
        except Exception as exc:
            for request in requests:
                telemetry.record_request(self, request, started_ns=started_ns, error=exc)
            raise
        self.tally.busy_s += time.perf_counter() - started
        self.tally.batches += 1
        for request, completion in zip(requests, completions, strict=True):
            self._finish(request, completion)
        return completions

    def drive(self, programs: Iterable[Program], *, concurrency: int = 8) -> Iterator[Any]:
        """Run ``programs`` at most ``concurrency`` at a time; yield each result as it ends.

        Programs are independent multi-step jobs (a dialogue is one), so a finished slot is
        refilled at once. The consumer must not call this engine until the iteration ends.
        """
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        yield from self._drive(iter(programs), concurrency)

    def _drive(self, programs: Iterator[Program], concurrency: int) -> Iterator[Any]:
        """Lock-step: one batch of the next request of every active program, then refill.

        A batch waits for its longest request; engines with their own scheduler (vLLM)
        override this to submit each request the moment its program asks for it.
        """
        active: list[tuple[Program, Request]] = []
        while True:
            while len(active) < concurrency and (program := next(programs, None)) is not None:
                request, result = advance(program, None)
                if request is None:
                    yield result
                else:
                    active.append((program, request))
            if not active:
                return
            completions = self._run_checked([request for _, request in active])
            waiting = []
            for (program, _), completion in zip(active, completions, strict=True):
                request, result = advance(program, completion)
                if request is None:
                    yield result
                else:
                    waiting.append((program, request))
            active = waiting

    async def complete(self, request: Request) -> Completion:
        """One request from async code (a server handler): checked, counted, parsed and traced
        like ``run``; on engines that batch across callers it joins the running batch, and
        cancelling the awaiting task takes it out."""
        check_prompt(request.prompt)
        started, started_ns = time.perf_counter(), time.time_ns()
        try:
            completion = await self._complete(request)
        except Exception as exc:
            telemetry.record_request(self, request, started_ns=started_ns, error=exc)
            raise
        self.tally.busy_s += time.perf_counter() - started
        self.tally.batches += 1
        self._finish(request, completion)
        return completion

    async def _complete(self, request: Request) -> Completion:
        """Default: one batch of one request in a worker thread."""
        return (await asyncio.to_thread(self._run, [request]))[0]

    def _finish(self, request: Request, completion: Completion) -> None:
        """Count a finished request, parse its structured output, and trace it."""
        telemetry.record_request(self, request, completion)
        self.tally.requests += 1
        self.tally.prompt_tokens += completion.usage.prompt_tokens
        self.tally.completion_tokens += completion.usage.completion_tokens
        if request.response_model is not None:
            completion.parsed, completion.error = structured.parse(
                completion.text, request.response_model, completion.finish_reason,
                request.params.max_tokens)

    async def stream(self, prompt: Prompt, params: SamplingParams | None = None
                     ) -> AsyncIterator[str]:
        """Yield text deltas as they are generated; joined they equal the full completion."""
        request = Request(prompt, params or SamplingParams())
        check_prompt(request.prompt)
        started, started_ns = time.perf_counter(), time.time_ns()
        error: BaseException | None = None
        try:
            async for delta in self._stream(request):
                self.tally.stream_chunks += 1
                yield delta
        except BaseException as exc:  # traced (a consumer that stops early too), then re-raised
            error = exc
            raise
        finally:
            self.tally.busy_s += time.perf_counter() - started
            telemetry.record_request(self, request, self._stream_completion(request),
                                     started_ns=started_ns, error=error, stream=True)

    def _stream_completion(self, request: Request) -> Completion | None:
        """The finished completion of a stream, where the engine keeps it (usage for traces)."""
        return None

    def close(self) -> None:  # noqa: B027 - engines without resources need nothing here
        """Release the model and any worker processes; safe to call twice."""

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _batch(self, prompts: list[Prompt], params, response_model) -> list[Completion]:
        if params is None or isinstance(params, SamplingParams):
            params = [params or SamplingParams()] * len(prompts)
        if len(params) != len(prompts):
            raise PromptError(f"got {len(prompts)} prompts but {len(params)} sampling params")
        schema = structured.json_schema(response_model) if response_model else None
        return self.run([Request(p, sp, schema, response_model)
                         for p, sp in zip(prompts, params, strict=True)])

    @abc.abstractmethod
    def _run(self, requests: list[Request]) -> list[Completion]: ...

    @abc.abstractmethod
    def _stream(self, request: Request) -> AsyncIterator[str]: ...


def advance(program: Program, completion: Completion | None) -> tuple[Request | None, Any]:
    """Send ``completion`` (None to start): ``(next request, None)`` or ``(None, result)``."""
    try:
        request = program.send(completion)
    except StopIteration as stop:
        return None, stop.value
    check_prompt(request.prompt)
    return request, None


def encode_prompt(tokenizer, prompt: Prompt, context_len: int) -> list[int]:
    """Token ids of a prompt (chat template applied to conversations), checked against context."""
    if isinstance(prompt, str):
        ids = tokenizer(prompt)["input_ids"]
    else:
        text = tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    if len(ids) >= context_len:
        raise PromptError(f"prompt is {len(ids)} tokens; the context is {context_len}",
                          hint="shorten the prompt or the history")
    return list(ids)


def check_prompt(prompt: Prompt) -> None:
    if isinstance(prompt, str):
        if not prompt.strip():
            raise PromptError("empty prompt")
        return
    if not prompt:
        raise PromptError("empty conversation: no messages")
    for i, message in enumerate(prompt):
        if not isinstance(message, dict) or "role" not in message or "content" not in message:
            raise PromptError(f"message {i} must be a dict with 'role' and 'content'")
    if not any(str(m["content"]).strip() for m in prompt):
        raise PromptError("every message in the conversation is empty")
