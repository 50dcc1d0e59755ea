"""``manyheads serve``: an OpenAI-compatible HTTP server for the configured model.

With the vLLM engine we hand over to vLLM's own server (same flags a user would pass, the API key
through ``VLLM_API_KEY``). With the local engine we serve ``/v1/models``, ``/v1/chat/completions``
and ``/v1/completions`` (streaming, ``n`` and ``response_format`` JSON schemas included) from any
``Engine``; concurrent requests join the local engine's running batch.

For real use: an API key (``Authorization: Bearer``, 401 otherwise, the key never logged), no
non-loopback address without one unless asked (``check_exposure``), a request-size limit (413),
a bounded number of requests in flight (503 with ``Retry-After`` past it), ``/health``, and a
client that goes away takes its sequence out of the batch.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import json
import sys
import time
import uuid
import weakref
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI, HTTPException
from fastapi import Request as HttpRequest
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, model_validator

from manyheads.errors import ConfigError, ManyheadsError
from manyheads.models.engine import Engine, Request
from manyheads.models.types import SamplingParams

ROLES = ("system", "user", "assistant")


class ServeConfig(BaseModel):
    """How ``build_app`` guards the engine."""

    model_config = ConfigDict(frozen=True)

    api_key: str | None = Field(None, repr=False)  # None: no key needed (loopback only)
    max_body_bytes: int = Field(2_000_000, ge=1)
    max_in_flight: int = Field(256, ge=1, description="choices running or queued; then 503")
    max_n: int = Field(16, ge=1)
    retry_after_s: int = Field(2, ge=1)


def check_exposure(host: str, api_key: str | None, insecure: bool) -> None:
    """Refuse to serve a non-loopback address without an API key unless ``insecure``."""
    if api_key or insecure or _is_loopback(host):
        return
    raise ConfigError(f"refusing to serve {host} without an API key: anyone who reaches the port "
                      "could use the model",
                      hint="pass --api-key (or set MANYHEADS_API_KEY), or --insecure to accept it")


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class _Body(BaseModel):
    model: str = ""
    messages: list[dict[str, Any]] | None = None
    prompt: str | None = None
    temperature: float = 1.0
    top_p: float = 1.0
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    stop: str | list[str] | None = None
    seed: int | None = None
    stream: bool = False
    logprobs: bool | int | None = None
    top_logprobs: int | None = None
    response_format: dict[str, Any] | None = None
    n: int = Field(1, ge=1)
    frequency_penalty: float = Field(0.0, ge=-2.0, le=2.0)
    presence_penalty: float = Field(0.0, ge=-2.0, le=2.0)
    repetition_penalty: float = Field(1.0, gt=0.0, le=10.0)  # vLLM's extension
    no_repeat_ngram_size: int = Field(0, ge=0, le=64)
    vllm_xargs: dict[str, Any] | None = None  # vLLM's extension: {"no_repeat_ngram_size": n}

    @model_validator(mode="before")
    @classmethod
    def _from_xargs(cls, data: Any) -> Any:
        """vLLM's ``vllm_xargs.no_repeat_ngram_size`` fills the field (and is checked by it)."""
        xargs = data.get("vllm_xargs") if isinstance(data, dict) else None
        if isinstance(xargs, dict) and "no_repeat_ngram_size" in xargs:
            data = {**data, "no_repeat_ngram_size": xargs["no_repeat_ngram_size"]}
        return data

    def params(self) -> SamplingParams:
        stop = (self.stop,) if isinstance(self.stop, str) else tuple(self.stop or ())
        top = self.top_logprobs if self.messages is not None else self.logprobs
        wants_logprobs = bool(self.logprobs) or self.logprobs == 0
        return SamplingParams(
            temperature=self.temperature, top_p=self.top_p, stop=stop, seed=self.seed,
            max_tokens=self.max_completion_tokens or self.max_tokens or 256,
            logprobs=int(top or 0) if wants_logprobs else None,
            frequency_penalty=self.frequency_penalty, presence_penalty=self.presence_penalty,
            repetition_penalty=self.repetition_penalty,
            no_repeat_ngram_size=self.no_repeat_ngram_size)

    def schema(self) -> dict | None:
        fmt = self.response_format or {}
        if fmt.get("type") == "json_schema":
            return fmt.get("json_schema", {}).get("schema")
        return None


def build_app(engine: Engine, config: ServeConfig | None = None) -> FastAPI:
    config = config or ServeConfig()
    app = FastAPI(title="manyheads", description="OpenAI-compatible API over a manyheads engine")
    app.add_middleware(_Guard, api_key=config.api_key, max_body_bytes=config.max_body_bytes)
    gate = _Gate(config)
    app.state.gate = gate
    model_id = engine.model_name

    @app.get("/health")
    def health() -> dict:
        return {"status": "ok", "model": model_id, "engine": engine.name,
                "in_flight": gate.in_flight}

    @app.get("/v1/stats")
    def stats() -> dict:
        """The engine's tally (batch sizes included) and the server's own counters."""
        tally = engine.tally
        return {**{k: getattr(tally, k) for k in tally.__dataclass_fields__},
                "mean_batch_size": tally.mean_batch_size, "in_flight": gate.in_flight,
                "rejected": gate.rejected}

    @app.get("/v1/models")
    def models() -> dict:
        return {"object": "list", "data": [{"id": model_id, "object": "model",
                                            "owned_by": "manyheads"}]}

    @app.post("/v1/chat/completions")
    async def chat(body: _Body, http: HttpRequest):
        if not body.messages:
            raise HTTPException(400, "messages must be a non-empty list")
        messages = [_message(i, m) for i, m in enumerate(body.messages)]
        return await _answer(engine, gate, http, body,
                             Request(messages, body.params(), body.schema()), chat=True)

    @app.post("/v1/completions")
    async def complete(body: _Body, http: HttpRequest):
        if body.prompt is None:
            raise HTTPException(400, "prompt is required")
        return await _answer(engine, gate, http, body,
                             Request(body.prompt, body.params(), body.schema()), chat=False)

    return app


def _message(index: int, message: dict[str, Any]) -> dict[str, str]:
    """A chat message as {role, content: text}; 400 for an unknown role or non-text content."""
    role = message.get("role")
    if role not in ROLES:
        raise HTTPException(400, f"messages[{index}].role must be one of {', '.join(ROLES)}, "
                                 f"not {role!r}")
    return {"role": role, "content": _text(index, message.get("content"))}


def _text(index: int, content: Any) -> str:
    """Message content as text (OpenAI also allows a list of typed parts: text ones only)."""
    if isinstance(content, list):
        parts = []
        for part in content:
            if not isinstance(part, dict) or part.get("type", "text") != "text":
                raise HTTPException(400, f"messages[{index}].content: only text parts are "
                                         "supported")
            parts.append(str(part.get("text", "")))
        return "".join(parts)
    if content is not None and not isinstance(content, str):
        raise HTTPException(400, f"messages[{index}].content must be a string or text parts")
    return content or ""


class _Gate:
    """Counts choices in flight; past ``max_in_flight`` a request is turned away at once."""

    def __init__(self, config: ServeConfig) -> None:
        self.config = config
        self.in_flight = 0
        self.rejected = 0

    def enter(self, n: int) -> Callable[[], None]:
        """Take ``n`` places or raise 503; returns the release (idempotent)."""
        if self.in_flight + n > self.config.max_in_flight:
            self.rejected += 1
            raise HTTPException(503, f"the server is busy ({self.in_flight} requests in flight); "
                                     "retry later",
                                headers={"Retry-After": str(self.config.retry_after_s)})
        self.in_flight += n
        held = [n]

        def release() -> None:
            self.in_flight -= held.pop() if held else 0

        return release


async def _answer(engine: Engine, gate: _Gate, http: HttpRequest, body: _Body,
                  request: Request, chat: bool):
    n = body.n
    if n > gate.config.max_n:
        raise HTTPException(400, f"n must be at most {gate.config.max_n}, not {n}")
    if body.stream and n > 1:
        raise HTTPException(400, "n > 1 is not supported with stream=true")
    kind = "chat.completion" if chat else "text_completion"
    ident, created = f"mh-{uuid.uuid4().hex}", int(time.time())
    release = gate.enter(n)
    if body.stream:
        async def events():
            try:
                async for delta in engine.stream(request.prompt, request.params):
                    choice = ({"index": 0, "delta": {"content": delta}} if chat
                              else {"index": 0, "text": delta})
                    chunk = {"id": ident, "object": f"{kind}.chunk", "created": created,
                             "model": engine.model_name, "choices": [choice]}
                    yield f"data: {json.dumps(chunk)}\n\n"
            except ManyheadsError as exc:
                yield f"data: {json.dumps({'error': exc.as_dict()})}\n\n"
            finally:
                release()
            yield "data: [DONE]\n\n"

        stream = events()
        weakref.finalize(stream, release)  # a stream that never started releases too
        return StreamingResponse(stream, media_type="text/event-stream")
    try:
        requests = [request] + [_nth(request, i) for i in range(1, n)]
        completions = await _unless_gone(http, asyncio.gather(
            *(engine.complete(r) for r in requests)))
    except ManyheadsError as exc:
        raise HTTPException(400, str(exc)) from exc
    finally:
        release()
    choices = [_choice(i, c, chat) for i, c in enumerate(completions)]
    prompt_tokens = completions[0].usage.prompt_tokens
    completion_tokens = sum(c.usage.completion_tokens for c in completions)
    return {"id": ident, "object": kind, "created": created, "model": engine.model_name,
            "choices": choices, "usage": {"prompt_tokens": prompt_tokens,
                                          "completion_tokens": completion_tokens,
                                          "total_tokens": prompt_tokens + completion_tokens}}


def _nth(request: Request, i: int) -> Request:
    """Choice ``i`` of ``n``: its own seed when the request has one (else its own random one)."""
    params = request.params
    if params.seed is not None:
        params = params.model_copy(update={"seed": params.seed + i})
    return Request(request.prompt, params, request.schema, request.response_model)


async def _unless_gone(http: HttpRequest, work: asyncio.Future) -> Any:
    """Await ``work``; if the client disconnects first, cancel it (its sequences leave)."""
    task = asyncio.ensure_future(work)
    while True:
        done, _ = await asyncio.wait({task}, timeout=0.5)
        if done:
            return task.result()
        if await http.is_disconnected():
            task.cancel()
            task.add_done_callback(lambda t: t.cancelled() or t.exception())  # nobody awaits it
            raise HTTPException(499, "client closed the request")


def _choice(index: int, completion: Any, chat: bool) -> dict[str, Any]:
    choice: dict[str, Any] = {"index": index, "finish_reason": completion.finish_reason}
    if chat:
        choice["message"] = {"role": "assistant", "content": completion.text}
    else:
        choice["text"] = completion.text
    if completion.logprobs is not None:
        items = [{"token": t.token, "logprob": t.logprob,
                  "top_logprobs": [{"token": k, "logprob": v} for k, v in t.top.items()]}
                 for t in completion.logprobs]
        choice["logprobs"] = ({"content": items} if chat else {
            "tokens": [t.token for t in completion.logprobs],
            "token_logprobs": [t.logprob for t in completion.logprobs],
            "top_logprobs": [t.top for t in completion.logprobs]})
    return choice


class _Guard:
    """ASGI middleware: the API key (all but ``/health``) and the request-size limit, checked
    before a body is parsed. Bodies are read here (up to the limit) and replayed to the app."""

    def __init__(self, app: Any, api_key: str | None, max_body_bytes: int) -> None:
        self.app = app
        self.key = api_key.encode() if api_key else None
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers") or [])
        if self.key is not None and scope["path"] != "/health":
            given = headers.get(b"authorization", b"")
            scheme, _, token = given.partition(b" ")
            if scheme.lower() != b"bearer" or not hmac.compare_digest(token.strip(), self.key):
                return await _error(send, 401, "missing or wrong API key "
                                    "(send Authorization: Bearer <key>)", "authentication_error",
                                    {"WWW-Authenticate": "Bearer"})
        if scope["method"] not in ("POST", "PUT", "PATCH"):
            return await self.app(scope, receive, send)
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_body_bytes:
            return await _error(send, 413, f"request body over {self.max_body_bytes} bytes",
                                "invalid_request_error")
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self.max_body_bytes:
                return await _error(send, 413, f"request body over {self.max_body_bytes} bytes",
                                    "invalid_request_error")
            if not message.get("more_body"):
                break
        body, replayed = b"".join(chunks), False

        async def replay() -> dict:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        return await self.app(scope, replay, send)


async def _error(send: Any, status: int, message: str, kind: str,
                 headers: dict[str, str] | None = None) -> None:
    response = JSONResponse({"error": {"message": message, "type": kind, "code": status},
                             "detail": message}, status_code=status, headers=headers)
    await response({"type": "http"}, None, send)


def serve_main(engine_name: str, model: str, host: str, port: int, *, api_key: str | None = None,
               insecure: bool = False) -> None:
    """``manyheads serve``: vLLM's own server, or ours over the local engine, until SIGTERM.

    The key comes from ``api_key`` or ``MANYHEADS_API_KEY`` (``EMPTY`` = none). On SIGINT/SIGTERM
    uvicorn stops accepting, lets requests in flight finish (30 s at most), then the engine fails
    whatever is left with a clean error.
    """
    import os

    from manyheads.settings import get_settings

    if api_key is None:
        configured = get_settings().api_key
        api_key = None if configured in ("", "EMPTY") else configured
    check_exposure(host, api_key, insecure)
    if engine_name == "vllm":
        from manyheads.models.embedded import resolve_model

        argv = vllm_server_argv(str(resolve_model(model)), model, host, port)
        env = dict(os.environ)
        if api_key:
            env["VLLM_API_KEY"] = api_key  # not on the command line, where `ps` would show it
        os.execve(argv[0], argv, env)
    if engine_name != "local":
        raise ConfigError(f"serve runs the local or vllm engine, not {engine_name!r}")
    import uvicorn

    from manyheads.models import make_engine

    engine = make_engine("local", model)
    try:
        uvicorn.run(build_app(engine, ServeConfig(api_key=api_key)), host=host, port=port,
                    log_level="info", timeout_graceful_shutdown=30)
    finally:
        engine.close()


def vllm_server_argv(model_path: str, served_name: str, host: str, port: int) -> list[str]:
    """The command line of vLLM's own OpenAI server with our CPU defaults."""
    import torch

    argv = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", model_path,
            "--served-model-name", served_name, "--host", host, "--port", str(port),
            "--max-model-len", "4096"]
    if not torch.cuda.is_available():
        argv += ["--dtype", "float32", "--gpu-memory-utilization", "0.25"]
    argv += ["--structured-outputs-config",
             '{"backend": "xgrammar", "disable_any_whitespace": true}']
    # no_repeat_ngram_size via vllm_xargs (the FQCN of ``vllm_logits.NoRepeatNGram``).
    argv += ["--logits-processors", "manyheads.models.vllm_logits:NoRepeatNGram"]
    return argv
