"""Traces of engine requests: GenAI attributes, nesting under caller spans, no text unless asked,
and an exporter that is down costs nothing."""

from __future__ import annotations

import asyncio
import json

import pytest
from conftest import free_port
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from manyheads.errors import ConfigError, PromptError
from manyheads.models import SamplingParams, telemetry

QUESTION = [{"role": "user", "content": "Name a secret colour."}]


@pytest.fixture
def spans():
    exporter = InMemorySpanExporter()
    telemetry.configure(exporter=exporter, content=False)
    yield exporter
    telemetry.configure("off")


def test_off_by_default(local_engine, monkeypatch):
    monkeypatch.delenv("MANYHEADS_TRACING", raising=False)
    assert telemetry.configure() is False
    with telemetry.span("room.node", room="demo") as span:
        assert not span.is_recording()
    local_engine.chat([QUESTION], SamplingParams(max_tokens=2))  # nothing to record, no error
    with pytest.raises(ConfigError, match="MANYHEADS_TRACING"):
        telemetry.configure("loud")


def test_every_request_is_a_genai_span(local_engine, spans):
    params = SamplingParams(max_tokens=6, stop=("\n\n",))
    completions = local_engine.chat([QUESTION, QUESTION], params)
    finished = spans.get_finished_spans()
    assert len(finished) == 2
    span, completion = finished[0], completions[0]
    a = span.attributes
    assert span.name == f"chat {local_engine.model_name}"
    assert a["gen_ai.operation.name"] == "chat"
    assert a["gen_ai.request.model"] == local_engine.model_name
    assert a["gen_ai.request.max_tokens"] == 6 and a["gen_ai.request.temperature"] == 0.0
    assert a["gen_ai.usage.input_tokens"] == completion.usage.prompt_tokens
    assert a["gen_ai.usage.output_tokens"] == completion.usage.completion_tokens
    assert tuple(a["gen_ai.response.finish_reasons"]) == (completion.finish_reason,)
    assert a["manyheads.latency_s"] > 0 and span.end_time > span.start_time
    assert a["manyheads.engine"] == "local" and a["gen_ai.request.stream"] is False
    dumped = json.dumps({k: list(v) if isinstance(v, tuple) else v for k, v in a.items()})
    assert "secret" not in dumped and completion.text not in dumped  # no text unless asked


def test_streams_and_failures_are_traced_too(local_engine, spans):
    async def stream() -> str:
        return "".join([d async for d in local_engine.stream(QUESTION,
                                                             SamplingParams(max_tokens=5))])

    text = asyncio.run(stream())
    with pytest.raises(PromptError):
        local_engine.generate(["x " * 10_000])
    streamed, failed = spans.get_finished_spans()
    assert streamed.attributes["gen_ai.request.stream"] is True
    assert streamed.attributes["gen_ai.usage.output_tokens"] == 5 and text
    assert failed.attributes["error.type"] == "PromptError"
    assert failed.attributes["gen_ai.operation.name"] == "text_completion"
    assert not failed.status.is_ok


def test_engine_spans_nest_under_a_caller_span_and_text_only_when_asked(local_engine):
    exporter = InMemorySpanExporter()
    telemetry.configure(exporter=exporter, content=True)
    try:
        with telemetry.span("room.node", **{"manyheads.room": "demo", "manyheads.node": "reply",
                                            "manyheads.session": "s1", "skip": None}):
            completion = local_engine.chat([QUESTION], SamplingParams(max_tokens=4))[0]
    finally:
        telemetry.configure("off")
    engine_span, node = exporter.get_finished_spans()
    assert node.name == "room.node" and node.attributes["manyheads.room"] == "demo"
    assert "skip" not in node.attributes
    assert engine_span.parent.span_id == node.context.span_id
    assert "secret colour" in engine_span.attributes["gen_ai.input.messages"]
    output = json.loads(engine_span.attributes["gen_ai.output.messages"])
    assert output[0]["parts"][0]["content"] == completion.text


def test_an_exporter_that_is_down_does_not_touch_requests(local_engine, monkeypatch):
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                       f"http://127.0.0.1:{free_port()}/v1/traces")  # nobody listens
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TIMEOUT", "1")
    assert telemetry.configure("otlp")
    try:
        params = SamplingParams(max_tokens=4)
        expected = local_engine.chat([QUESTION], params)[0].text
        assert [c.text for c in local_engine.chat([QUESTION] * 3, params)] == [expected] * 3
    finally:
        telemetry.shutdown()  # the queued spans are dropped, nothing raises
    assert not telemetry.enabled()
