"""`manyheads serve` for real use: API key, bad input, batching across clients, disconnects,
overload and shutdown, against real servers on loopback over the embedded model."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import pytest
import uvicorn
from conftest import ROOT, free_port

from manyheads.errors import ConfigError
from manyheads.models.serve import ServeConfig, build_app, check_exposure

KEY = "test-key-7f3a"
QUESTIONS = ["Name a planet.", "List two fruits.", "Explain in one sentence why ice floats.",
             "Write a haiku about rain.", "What is the capital of Italy?",
             "Give one tip for learning to cook."]


@contextmanager
def serving(engine, config: ServeConfig | None = None) -> Iterator[str]:
    """Our app on loopback in a thread of this process (sharing the loaded engine)."""
    server = uvicorn.Server(uvicorn.Config(build_app(engine, config), host="127.0.0.1",
                                           port=free_port(), log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        assert thread.is_alive(), "the server did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{server.config.port}"
    finally:
        server.should_exit = True
        thread.join(30)


def _chat(content: str, **extra) -> dict:
    return {"model": "m", "messages": [{"role": "user", "content": content}], "temperature": 0,
            "max_tokens": 20, **extra}


def test_api_key_is_enforced(local_engine, caplog):
    with serving(local_engine, ServeConfig(api_key=KEY)) as url:
        assert httpx.get(f"{url}/health").json()["status"] == "ok"  # open to probes
        missing = httpx.get(f"{url}/v1/models")
        assert missing.status_code == 401 and missing.headers["www-authenticate"] == "Bearer"
        assert "API key" in missing.json()["error"]["message"]
        wrong = httpx.post(f"{url}/v1/chat/completions", json=_chat("hi"),
                           headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401
        good = httpx.post(f"{url}/v1/chat/completions", json=_chat("hi", max_tokens=4),
                          headers={"Authorization": f"Bearer {KEY}"}, timeout=300)
        assert good.status_code == 200 and good.json()["choices"][0]["message"]["content"]
    assert KEY not in caplog.text and "nope" not in caplog.text
    assert KEY not in repr(ServeConfig(api_key=KEY))


def test_an_open_address_needs_a_key_or_insecure():
    check_exposure("127.0.0.1", None, insecure=False)
    check_exposure("localhost", None, insecure=False)
    check_exposure("::1", None, insecure=False)
    check_exposure("0.0.0.0", KEY, insecure=False)
    check_exposure("0.0.0.0", None, insecure=True)
    with pytest.raises(ConfigError, match="without an API key"):
        check_exposure("0.0.0.0", None, insecure=False)
    env = {k: v for k, v in os.environ.items() if k != "MANYHEADS_API_KEY"}
    refused = subprocess.run(
        [sys.executable, "-m", "manyheads.cli", "serve", "--engine", "local", "--host",
         "0.0.0.0", "--port", str(free_port())], cwd=ROOT, env=env, capture_output=True,
        text=True, timeout=120)
    assert refused.returncode != 0 and "without an API key" in refused.stdout + refused.stderr


def test_bad_requests_get_clear_4xx(local_engine):
    with serving(local_engine, ServeConfig(max_body_bytes=20_000, max_n=4)) as url:
        post = lambda body: httpx.post(f"{url}/v1/chat/completions", json=body,  # noqa: E731
                                       timeout=300)
        for body, status, words in [
            ({"messages": [{"role": "robot", "content": "hi"}]}, 400, "role"),
            ({"messages": [{"role": "tool", "content": "hi"}]}, 400, "role"),
            ({"messages": [{"role": "user", "content": [{"type": "image_url"}]}]}, 400, "text"),
            ({"messages": [{"role": "user", "content": 5}]}, 400, "string"),
            (_chat("hi", n=5), 400, "n must be"),
            (_chat("hi", n=2, stream=True), 400, "stream"),
            (_chat("x" * 30_000), 413, "bytes"),
        ]:
            reply = post(body)
            assert reply.status_code == status, (body, reply.text)
            assert words in reply.text
        three = post(_chat("Name a colour.", n=3, temperature=0.9, seed=3)).json()
        assert [c["index"] for c in three["choices"]] == [0, 1, 2]
        assert all(c["message"]["content"] for c in three["choices"])
        assert three["usage"]["completion_tokens"] >= 3
        assert httpx.get(f"{url}/health").status_code == 200


def test_concurrent_clients_share_a_batch_and_get_their_solo_answers(local_engine):
    bodies = [_chat(q, max_tokens=24, logprobs=True, top_logprobs=0) for q in QUESTIONS]

    def tokens(reply: dict) -> list[str]:
        return [t["token"] for t in reply["choices"][0]["logprobs"]["content"]]

    with serving(local_engine) as url:
        alone = [httpx.post(f"{url}/v1/chat/completions", json=b, timeout=300).json()
                 for b in bodies]
        before = httpx.get(f"{url}/v1/stats").json()

        async def everyone() -> list[dict]:
            async with httpx.AsyncClient(timeout=300) as client:
                replies = await asyncio.gather(*(client.post(f"{url}/v1/chat/completions",
                                                             json=b) for b in bodies))
            return [r.json() for r in replies]

        together = asyncio.run(everyone())
        after = httpx.get(f"{url}/v1/stats").json()
    assert [tokens(r) for r in together] == [tokens(r) for r in alone]
    assert after["max_batch_size"] > 1
    assert after["step_rows"] - before["step_rows"] > after["decode_steps"] - before["decode_steps"]


def test_a_client_that_disconnects_mid_stream_leaves_the_batch(local_engine):
    body = _chat(QUESTIONS[3], max_tokens=60, stream=True)
    with serving(local_engine) as url:
        cancelled = httpx.get(f"{url}/v1/stats").json()["cancelled"]
        finished: dict = {}

        def stays() -> None:
            with httpx.stream("POST", f"{url}/v1/chat/completions", timeout=300,
                              json=_chat(QUESTIONS[0], max_tokens=60, stream=True)) as reply:
                finished["lines"] = [line for line in reply.iter_lines() if line]

        other = threading.Thread(target=stays)
        other.start()
        with httpx.stream("POST", f"{url}/v1/chat/completions", json=body, timeout=300) as reply:
            chunks = 0
            for line in reply.iter_lines():
                chunks += line.startswith("data: {")
                if chunks == 2:
                    break  # the client goes away with the answer half read
        other.join()
        assert finished["lines"][-1] == "data: [DONE]"
        deadline = time.monotonic() + 120  # the server notices between two decode steps
        while httpx.get(f"{url}/v1/stats").json()["cancelled"] == cancelled:
            assert time.monotonic() < deadline, "the disconnected sequence never left"
            time.sleep(0.2)
        assert httpx.get(f"{url}/health").json()["in_flight"] == 0


def test_overload_is_turned_away_with_retry_after(local_engine):
    with serving(local_engine, ServeConfig(max_in_flight=4, retry_after_s=3)) as url:

        async def crowd() -> list[httpx.Response]:
            # a connection each: a request queued for a pooled connection the server has
            # just closed after its keep-alive fails with a read error, not a reply
            limits = httpx.Limits(max_connections=None)
            async with httpx.AsyncClient(timeout=300, limits=limits) as client:
                return await asyncio.gather(*(
                    client.post(f"{url}/v1/chat/completions", json=_chat(q, max_tokens=4))
                    for q in QUESTIONS * 167))  # 1,002 requests at once

        replies = asyncio.run(crowd())
        codes = [r.status_code for r in replies]
        assert set(codes) <= {200, 503} and codes.count(200) >= 4 and 503 in codes
        busy = next(r for r in replies if r.status_code == 503)
        assert busy.headers["retry-after"] == "3"
        health = httpx.get(f"{url}/health").json()
        assert health["status"] == "ok" and health["in_flight"] == 0


def test_served_with_a_key_then_shut_down_gracefully():
    """A real `manyheads serve --api-key` process: SIGTERM lets the running stream finish."""
    port = free_port()
    env = {**os.environ, "MANYHEADS_API_KEY": KEY}
    server = subprocess.Popen(
        [sys.executable, "-m", "manyheads.cli", "serve", "--engine", "local", "--host",
         "127.0.0.1", "--port", str(port)], cwd=ROOT, env=env, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True)
    url, auth = f"http://127.0.0.1:{port}", {"Authorization": f"Bearer {KEY}"}
    try:
        deadline = time.monotonic() + 300
        while True:
            assert server.poll() is None, server.stdout.read()
            assert time.monotonic() < deadline, "the server did not start"
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.5)
        assert httpx.get(f"{url}/v1/models").status_code == 401
        lines = []
        with httpx.stream("POST", f"{url}/v1/chat/completions", headers=auth, timeout=300,
                          json=_chat(QUESTIONS[3], max_tokens=40, stream=True)) as reply:
            assert reply.status_code == 200
            for line in reply.iter_lines():
                if line and not lines:
                    server.send_signal(signal.SIGTERM)  # mid-stream
                if line:
                    lines.append(line)
        assert lines[-1] == "data: [DONE]"
        text = "".join(json.loads(x[6:])["choices"][0]["delta"]["content"] for x in lines[:-1])
        assert text.strip()
        # uvicorn re-raises the signal once its graceful shutdown is done
        assert server.wait(120) in (0, -signal.SIGTERM)
    finally:
        if server.poll() is None:
            server.kill()
        output = server.stdout.read()
        server.stdout.close()
    assert KEY not in output
