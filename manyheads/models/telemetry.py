"""OpenTelemetry traces of every engine request; off unless one setting turns them on.

``MANYHEADS_TRACING``:

- unset, ``off``: nothing is recorded and nothing is imported beyond the OpenTelemetry API;
- ``console``: spans printed to stderr as they end;
- ``otlp``: spans sent by the standard OTLP/HTTP exporter, configured by the usual
  ``OTEL_EXPORTER_OTLP_*`` variables (endpoint, headers, timeout), from a background thread: an
  endpoint that is down loses spans and never delays or fails a request;
- ``global``: spans go to the application's own tracer provider (``trace.set_tracer_provider``).

``MANYHEADS_TRACE_CONTENT=1`` also records prompts and completions; without it no text of a
conversation is put in a span.

Engine spans follow the OpenTelemetry GenAI semantic conventions (``gen_ai.operation.name``,
``gen_ai.request.model``, ``gen_ai.usage.input_tokens`` / ``output_tokens``,
``gen_ai.response.finish_reasons``, ...); the span's duration is the request's latency, also kept
as ``manyheads.latency_s``. ``span(name, **attributes)`` opens a span for callers (a room node, a
session) so engine spans nest under it.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

from opentelemetry import trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode

from manyheads.errors import ConfigError

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter

    from manyheads.models.types import Completion

MODES = ("off", "console", "otlp", "global")
_TRUE = {"1", "true", "yes", "on"}


class _State:
    def __init__(self, tracer: trace.Tracer | None, content: bool,
                 provider: TracerProvider | None = None) -> None:
        self.tracer = tracer
        self.content = content
        self.provider = provider


_state: _State | None = None
_lock = threading.Lock()


def configure(mode: str | None = None, *, exporter: SpanExporter | None = None,
              content: bool | None = None) -> bool:
    """(Re)configure tracing; returns whether it is on.

    ``mode`` defaults to ``MANYHEADS_TRACING``; ``exporter`` (e.g. the SDK's
    ``InMemorySpanExporter``) overrides the mode and gets every span as it ends.
    """
    global _state
    mode = (mode if mode is not None else os.environ.get("MANYHEADS_TRACING", "off"))
    mode = mode.strip().lower() or "off"
    if exporter is None and mode not in MODES:
        raise ConfigError(f"MANYHEADS_TRACING={mode!r} is not one of {', '.join(MODES)}")
    if content is None:
        content = os.environ.get("MANYHEADS_TRACE_CONTENT", "").strip().lower() in _TRUE
    with _lock:
        old, _state = _state, None
        if old is not None and old.provider is not None:
            old.provider.shutdown()
        if exporter is None and mode == "off":
            _state = _State(None, content)
        elif exporter is None and mode == "global":
            _state = _State(trace.get_tracer("manyheads"), content)
        else:
            provider = _provider(mode, exporter)
            _state = _State(provider.get_tracer("manyheads"), content, provider)
    return _state.tracer is not None


def _provider(mode: str, exporter: SpanExporter | None) -> TracerProvider:
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import (
        BatchSpanProcessor,
        ConsoleSpanExporter,
        SimpleSpanProcessor,
    )

    attributes = {} if os.environ.get("OTEL_SERVICE_NAME") else {"service.name": "manyheads"}
    provider = TracerProvider(resource=Resource.create(attributes))
    if exporter is not None:
        provider.add_span_processor(SimpleSpanProcessor(exporter))
    elif mode == "console":
        provider.add_span_processor(SimpleSpanProcessor(ConsoleSpanExporter()))
    else:  # otlp: batched, exported off the request path
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    return provider


def shutdown() -> None:
    """Flush and stop the exporter (spans still queued are sent or dropped); tracing goes off."""
    configure("off")


def _current() -> _State:
    if _state is None:
        configure()
    return _state


def enabled() -> bool:
    return _current().tracer is not None


def _clean(attributes: Mapping[str, Any]) -> dict[str, Any]:
    """OpenTelemetry takes str/bool/int/float and lists of them; None is left out."""
    out: dict[str, Any] = {}
    for key, value in attributes.items():
        if value is None:
            continue
        if isinstance(value, (list, tuple)):
            out[key] = [v if isinstance(v, (str, bool, int, float)) else str(v) for v in value]
        else:
            out[key] = value if isinstance(value, (str, bool, int, float)) else str(value)
    return out


@contextmanager
def span(name: str, **attributes: Any) -> Iterator[Span]:
    """A span around the block (current, so engine spans inside nest under it); a no-op span
    when tracing is off. An exception in the block is recorded and re-raised."""
    tracer = _current().tracer
    if tracer is None:
        yield trace.INVALID_SPAN
        return
    with tracer.start_as_current_span(name, attributes=_clean(attributes)) as current:
        yield current


def start_span(name: str, **attributes: Any) -> Span:
    """A span started now, as a child of the current one, but not made current: for work whose
    start and end are reported to this thread by another (a graph node). The caller ends it."""
    tracer = _current().tracer
    if tracer is None:
        return trace.INVALID_SPAN
    return tracer.start_span(name, attributes=_clean(attributes))


# -- engine requests ---------------------------------------------------------------------------
def request_attributes(engine: Any, request: Any, content: bool) -> dict[str, Any]:
    params = request.params
    attributes: dict[str, Any] = {
        "gen_ai.operation.name": "chat" if request.is_chat else "text_completion",
        "gen_ai.provider.name": "openai" if engine.name == "openai" else "manyheads",
        "gen_ai.request.model": engine.model_name,
        "gen_ai.request.max_tokens": params.max_tokens,
        "gen_ai.request.temperature": params.temperature,
        "gen_ai.request.top_p": params.top_p,
        "gen_ai.request.seed": params.seed,
        "gen_ai.request.stop_sequences": list(params.stop) or None,
        "gen_ai.output.type": "json" if request.schema is not None else "text",
        "manyheads.engine": engine.name,
    }
    base_url = getattr(engine, "base_url", None)
    if base_url:
        url = urlparse(str(base_url))
        attributes["server.address"] = url.hostname
        attributes["server.port"] = url.port
    if content:
        messages = ([{"role": "user", "content": request.prompt}] if not request.is_chat
                    else request.prompt)
        attributes["gen_ai.input.messages"] = json.dumps(
            [{"role": m["role"], "parts": [{"type": "text", "content": m["content"]}]}
             for m in messages])
    return attributes


def completion_attributes(engine: Any, completion: Completion, content: bool
                          ) -> dict[str, Any]:
    attributes: dict[str, Any] = {
        "gen_ai.response.model": engine.model_name,
        "gen_ai.response.finish_reasons": [completion.finish_reason],
        "gen_ai.usage.input_tokens": completion.usage.prompt_tokens,
        "gen_ai.usage.output_tokens": completion.usage.completion_tokens,
        "manyheads.tokens_per_s": round(completion.tokens_per_s, 3),
    }
    if content:
        attributes["gen_ai.output.messages"] = json.dumps([{
            "role": "assistant", "parts": [{"type": "text", "content": completion.text}],
            "finish_reason": completion.finish_reason}])
    return attributes


def record_request(engine: Any, request: Any, completion: Completion | None = None, *,
                   started_ns: int | None = None, error: BaseException | None = None,
                   stream: bool = False) -> None:
    """One span for one finished (or failed) request, from ``started_ns`` (default: now minus
    the completion's elapsed time) to now. Never raises: tracing must not break a request."""
    state = _current()
    if state.tracer is None:
        return
    try:
        end = time.time_ns()
        if started_ns is None:
            elapsed = completion.elapsed_s if completion is not None else 0.0
            started_ns = end - int(elapsed * 1e9)
        attributes = request_attributes(engine, request, state.content)
        attributes["gen_ai.request.stream"] = stream
        attributes["manyheads.latency_s"] = round((end - started_ns) / 1e9, 6)
        if completion is not None:
            attributes.update(completion_attributes(engine, completion, state.content))
        kind = SpanKind.CLIENT if engine.name == "openai" else SpanKind.INTERNAL
        name = f"{attributes['gen_ai.operation.name']} {engine.model_name}"
        current = state.tracer.start_span(name, kind=kind, attributes=_clean(attributes),
                                          start_time=started_ns)
        if error is not None:
            current.set_attribute("error.type", type(error).__qualname__)
            current.set_status(Status(StatusCode.ERROR, str(error)[:500]))
        current.end(end_time=end)
    except Exception:  # noqa: BLE001 - a tracing problem is never the request's problem
        return
