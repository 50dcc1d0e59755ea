"""``OpenAIEngine``: any OpenAI-compatible server (``vllm serve``, ``manyheads serve``, a vendor).

Requests of one batch run concurrently; the client retries with exponential backoff and gives up
after ``timeout_s``. Structured output is requested as ``response_format`` with a JSON schema.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any

import openai

from manyheads.errors import EngineError, EngineUnavailableError
from manyheads.models.engine import Engine, Request
from manyheads.models.types import Completion, SamplingParams, TokenLogprob, Usage

# Words of a 400 that refuses the extension fields (OpenAI: "Unrecognized request argument").
EXTENSION_WORDS = ("repetition_penalty", "vllm_xargs", "unrecognized request argument")


class OpenAIEngine(Engine):
    name = "openai"

    def __init__(self, model: str, base_url: str, api_key: str = "EMPTY", *,
                 timeout_s: float = 120.0, max_retries: int = 3, concurrency: int = 8) -> None:
        self.model_name = model
        self.base_url = base_url
        # vLLM's sampling extensions (repetition_penalty, vllm_xargs) until a server refuses them
        self.extensions = True
        options = dict(base_url=base_url, api_key=api_key, timeout=timeout_s,
                       max_retries=max_retries)
        self.client = openai.OpenAI(**options)
        self._options = options  # an async client is bound to one event loop: one per stream
        self._pool = ThreadPoolExecutor(max_workers=concurrency,
                                        thread_name_prefix="manyheads-openai")

    def _arguments(self, request: Request) -> dict[str, Any]:
        params = request.params
        args: dict[str, Any] = dict(model=self.model_name, temperature=params.temperature,
                                    top_p=params.top_p, max_tokens=params.max_tokens)
        if params.stop:
            args["stop"] = list(params.stop)
        if params.seed is not None:
            args["seed"] = params.seed
        if request.is_chat:
            args["messages"] = request.prompt
            if params.logprobs is not None:
                args["logprobs"] = True
                args["top_logprobs"] = params.logprobs
            if request.schema is not None:
                args["response_format"] = {"type": "json_schema", "json_schema": {
                    "name": request.schema.get("title", "output"), "schema": request.schema}}
        else:
            args["prompt"] = request.prompt
            if params.logprobs is not None:
                args["logprobs"] = params.logprobs
            if request.schema is not None:  # vLLM's extension for completions
                args["extra_body"] = {"structured_outputs": {"json": request.schema}}
        _add_penalties(args, params, self.extensions)
        return args

    def _refused_extensions(self, exc: openai.BadRequestError) -> bool:
        """A strict API (a vendor, not vLLM) refused our extension fields: drop them from now on
        (the standard penalties still go) and say so once. Returns whether to retry."""
        if not self.extensions or not any(k in str(exc).lower() for k in EXTENSION_WORDS):
            return False
        self.extensions = False
        warnings.warn(f"{self.base_url} refuses vLLM's sampling extensions: repetition_penalty "
                      "and no_repeat_ngram_size are not sent to it", stacklevel=3)
        return True

    def _call(self, request: Request) -> Completion:
        started = time.perf_counter()
        create = self.client.chat.completions.create if request.is_chat \
            else self.client.completions.create
        with self._errors():
            try:
                response = create(**self._arguments(request))
            except openai.BadRequestError as exc:
                if not self._refused_extensions(exc):
                    raise
                response = create(**self._arguments(request))
        choice = response.choices[0]
        text = choice.message.content if request.is_chat else choice.text
        usage = response.usage
        return Completion(
            text=text or "",
            finish_reason="length" if choice.finish_reason == "length" else "stop",
            usage=Usage(prompt_tokens=usage.prompt_tokens if usage else 0,
                        completion_tokens=usage.completion_tokens if usage else 0),
            elapsed_s=time.perf_counter() - started,
            logprobs=_logprobs(choice, request.is_chat))

    def _run(self, requests: list[Request]) -> list[Completion]:
        return list(self._pool.map(self._call, requests))

    async def _stream(self, request: Request) -> AsyncIterator[str]:
        with self._errors():
            async with openai.AsyncOpenAI(**self._options) as client:
                async for delta in self._deltas(client, request):
                    yield delta

    async def _deltas(self, client: openai.AsyncOpenAI, request: Request) -> AsyncIterator[str]:
        create = client.chat.completions.create if request.is_chat \
            else client.completions.create
        try:
            stream = await create(**self._arguments(request), stream=True)
        except openai.BadRequestError as exc:
            if not self._refused_extensions(exc):
                raise
            stream = await create(**self._arguments(request), stream=True)
        async for chunk in stream:
            if not chunk.choices:
                continue
            choice = chunk.choices[0]
            delta = choice.delta.content if request.is_chat else choice.text
            if delta:
                yield delta

    def _errors(self):
        return _translate_errors(self.base_url, self.model_name)

    def close(self) -> None:
        self._pool.shutdown(wait=False)
        self.client.close()


def _add_penalties(args: dict[str, Any], params: SamplingParams, extensions: bool) -> None:
    """Repetition control, sent only when set.

    ``frequency_penalty``/``presence_penalty`` are standard OpenAI fields; ``repetition_penalty``
    is vLLM's extension; ``no_repeat_ngram_size`` travels in vLLM's ``vllm_xargs`` (honoured by
    ``manyheads serve`` and by a vLLM server started with our ``NoRepeatNGram`` processor). The
    extensions go only while ``extensions`` holds: a strict vendor API rejects unknown fields.
    """
    if params.frequency_penalty:
        args["frequency_penalty"] = params.frequency_penalty
    if params.presence_penalty:
        args["presence_penalty"] = params.presence_penalty
    extra: dict[str, Any] = {}
    if not extensions:
        return
    if params.repetition_penalty != 1.0:
        extra["repetition_penalty"] = params.repetition_penalty
    if params.no_repeat_ngram_size:
        extra["vllm_xargs"] = {"no_repeat_ngram_size": params.no_repeat_ngram_size}
    if extra:
        args["extra_body"] = {**args.get("extra_body", {}), **extra}


@contextmanager
def _translate_errors(base_url: str, model: str) -> Iterator[None]:
    """Turn the client's exceptions into ours, naming the server and model."""
    try:
        yield
    except (openai.APIConnectionError, openai.APITimeoutError) as exc:
        raise EngineUnavailableError(
            f"cannot reach the OpenAI-compatible server at {base_url} ({type(exc).__name__})",
            hint="is it running? check MANYHEADS_BASE_URL") from exc
    except openai.APIStatusError as exc:
        raise EngineError(f"server {base_url} refused the request for model {model!r}: "
                          f"HTTP {exc.status_code}: {exc.message}") from exc


def _logprobs(choice: Any, is_chat: bool) -> list[TokenLogprob] | None:
    if choice.logprobs is None:
        return None
    if is_chat:
        return [TokenLogprob(token=item.token, logprob=item.logprob,
                             top={t.token: t.logprob for t in item.top_logprobs or []})
                for item in choice.logprobs.content or []]
    lp = choice.logprobs
    return [TokenLogprob(token=token, logprob=value, top=dict(top or {}))
            for token, value, top in zip(lp.tokens, lp.token_logprobs, lp.top_logprobs or
                                         [None] * len(lp.tokens), strict=False)]
