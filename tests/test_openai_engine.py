"""OpenAIEngine and the plain `openai` client against `manyheads serve` on loopback."""

from __future__ import annotations

import http.server
import json
import threading

import openai
import pytest

from manyheads.errors import EngineUnavailableError
from manyheads.models import SamplingParams, make_engine
from manyheads.models.openai_engine import OpenAIEngine


def test_plain_openai_client_talks_to_manyheads_serve(served_url):
    client = openai.OpenAI(base_url=served_url, api_key="unused")
    assert [m.id for m in client.models.list().data] == ["smollm2-135m-instruct"]
    reply = client.chat.completions.create(
        model="smollm2-135m-instruct", max_tokens=12, temperature=0,
        messages=[{"role": "user", "content": "Say hello."}])
    assert reply.choices[0].message.content.strip()
    assert reply.usage.completion_tokens > 0
    stream = client.chat.completions.create(
        model="smollm2-135m-instruct", max_tokens=12, temperature=0, stream=True,
        messages=[{"role": "user", "content": "Say hello."}])
    streamed = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert streamed == reply.choices[0].message.content


def test_served_answers_match_the_local_engine(openai_engine, local_engine):
    conversation = [{"role": "user", "content": "Name a planet."}]
    params = SamplingParams(max_tokens=16)
    assert openai_engine.chat([conversation], params)[0].text == \
        local_engine.chat([conversation], params)[0].text


def test_unreachable_server_is_a_typed_error():
    engine = OpenAIEngine(model="x", base_url="http://127.0.0.1:9/v1", timeout_s=2,
                          max_retries=1)
    with pytest.raises(EngineUnavailableError, match="127.0.0.1:9"):
        engine.chat([[{"role": "user", "content": "hi"}]])


def test_switching_to_a_remote_model_is_one_setting(monkeypatch, served_url):
    monkeypatch.setenv("MANYHEADS_ENGINE", "openai")
    monkeypatch.setenv("MANYHEADS_BASE_URL", served_url)
    engine = make_engine()
    assert isinstance(engine, OpenAIEngine) and engine.base_url == served_url


@pytest.mark.slow
def test_manyheads_serve_hands_over_to_vllms_server():
    """`manyheads serve --engine vllm` runs vLLM's own OpenAI server; our client uses it."""
    import subprocess
    import sys
    import time

    import httpx
    from conftest import ROOT, free_port
    from pydantic import BaseModel, Field

    class Answer(BaseModel):
        city: str = Field(max_length=30)

    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "manyheads.cli", "serve", "--engine", "vllm",
                               "--port", str(port)], cwd=ROOT, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            assert server.poll() is None, "vLLM's server exited"
            try:
                if httpx.get(f"{url}/models", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(2)
        engine = OpenAIEngine(model="smollm2-135m-instruct", base_url=url, timeout_s=120)
        question = [{"role": "user", "content": "Which city is the capital of France?"}]
        assert engine.chat([question], SamplingParams(max_tokens=12))[0].text.strip()
        assert isinstance(engine.structured(question, Answer, SamplingParams(max_tokens=40)),
                          Answer)
        engine.close()
    finally:
        server.terminate()
        server.wait(60)


class StrictVendor(http.server.BaseHTTPRequestHandler):
    """A strict OpenAI-style API on loopback (pure control flow, no model): it refuses vLLM's
    extension fields the way OpenAI does and answers anything else."""

    bodies: list[dict] = []

    def do_POST(self):  # noqa: N802 - the http.server API
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.bodies.append(body)
        if "repetition_penalty" in body or "vllm_xargs" in body:
            status, reply = 400, {"error": {"message": "Unrecognized request argument supplied: "
                                            "repetition_penalty", "type": "invalid_request_error"}}
        else:
            status, reply = 200, {
                "id": "x", "object": "chat.completion", "created": 0, "model": body["model"],
                "choices": [{"index": 0, "finish_reason": "stop",
                             "message": {"role": "assistant", "content": "Fine."}}],
                "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4}}
        data = json.dumps(reply).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


def test_a_strict_api_gets_only_standard_penalties():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), StrictVendor)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        engine = OpenAIEngine(model="m", base_url=f"http://127.0.0.1:{server.server_port}/v1",
                              max_retries=0)
        params = SamplingParams(max_tokens=8, repetition_penalty=1.1, no_repeat_ngram_size=4,
                                frequency_penalty=0.2)
        with pytest.warns(UserWarning, match="refuses vLLM's sampling extensions"):
            assert engine.chat([[{"role": "user", "content": "hi"}]], params)[0].text == "Fine."
        assert engine.chat([[{"role": "user", "content": "again"}]], params)[0].text == "Fine."
        first, retried, second = StrictVendor.bodies
        assert "repetition_penalty" in first and first["vllm_xargs"]
        assert "repetition_penalty" not in retried and retried["frequency_penalty"] == 0.2
        assert "repetition_penalty" not in second  # remembered: no second refusal
    finally:
        server.shutdown()
