"""``manyheads serve``: an OpenAI-compatible HTTP server for the configured model.

With the vLLM engine we hand over to vLLM's own server (same flags a user would pass). With the
local engine we serve ``/v1/models``, ``/v1/chat/completions`` and ``/v1/completions`` (streaming
and ``response_format`` JSON schemas included) from any ``Engine``.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
import uuid
from typing import Any

from fastapi import FastAPI, HTTPException
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field

from manyheads.errors import ManyheadsError
from manyheads.models.engine import Engine, Request
from manyheads.models.types import SamplingParams


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

    def params(self) -> SamplingParams:
        stop = (self.stop,) if isinstance(self.stop, str) else tuple(self.stop or ())
        top = self.top_logprobs if self.messages is not None else self.logprobs
        wants_logprobs = bool(self.logprobs) or self.logprobs == 0
        return SamplingParams(
            temperature=self.temperature, top_p=self.top_p, stop=stop, seed=self.seed,
            max_tokens=self.max_completion_tokens or self.max_tokens or 256,
            logprobs=int(top or 0) if wants_logprobs else None)

    def schema(self) -> dict | None:
        fmt = self.response_format or {}
        if fmt.get("type") == "json_schema":
            return fmt.get("json_schema", {}).get("schema")
        return None


def build_app(engine: Engine) -> FastAPI:
    app = FastAPI(title="manyheads", description="OpenAI-compatible API over a manyheads engine")
    model_id = engine.model_name

    @app.get("/v1/models")
    def models() -> dict:
        return {"object": "list", "data": [{"id": model_id, "object": "model",
                                            "owned_by": "manyheads"}]}

    @app.post("/v1/chat/completions")
    async def chat(body: _Body):
        if not body.messages:
            raise HTTPException(400, "messages must be a non-empty list")
        messages = [{"role": m["role"], "content": _text(m.get("content"))}
                    for m in body.messages]
        return await _answer(engine, Request(messages, body.params(), body.schema()),
                             body.stream, chat=True)

    @app.post("/v1/completions")
    async def complete(body: _Body):
        if body.prompt is None:
            raise HTTPException(400, "prompt is required")
        return await _answer(engine, Request(body.prompt, body.params(), body.schema()),
                             body.stream, chat=False)

    return app


def _text(content: Any) -> str:
    """Message content as text (OpenAI also allows a list of typed parts)."""
    if isinstance(content, list):
        return "".join(part.get("text", "") for part in content if isinstance(part, dict))
    return str(content or "")


async def _answer(engine: Engine, request: Request, stream: bool, chat: bool):
    kind = "chat.completion" if chat else "text_completion"
    ident, created = f"mh-{uuid.uuid4().hex}", int(time.time())
    if stream:
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
            yield "data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")
    try:
        completion = (await asyncio.to_thread(engine.run, [request]))[0]
    except ManyheadsError as exc:
        raise HTTPException(400, str(exc)) from exc
    choice: dict[str, Any] = {"index": 0, "finish_reason": completion.finish_reason}
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
    usage = completion.usage
    return {"id": ident, "object": kind, "created": created, "model": engine.model_name,
            "choices": [choice], "usage": {"prompt_tokens": usage.prompt_tokens,
                                           "completion_tokens": usage.completion_tokens,
                                           "total_tokens": usage.total_tokens}}


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
    return argv
