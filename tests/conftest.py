"""Shared fixtures: real engines on the embedded model, started once per test session."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parent.parent

# The suite starts vLLM several times (this process, an owner to kill, `vllm serve`), so it trades
# decode speed for start time: without vLLM's ahead-of-time artifacts, which do not load on its
# CPU build, a start reuses Inductor's cache. `bench/vllm_start.py`: 78 s instead of 149 s, 10%
# slower decoding, the same greedy text. Child processes inherit the setting.
os.environ.setdefault("VLLM_USE_AOT_COMPILE", "0")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def local_engine():
    from manyheads.models.local.engine import LocalEngine

    engine = LocalEngine()
    yield engine
    engine.close()


@pytest.fixture(scope="session")
def vllm_engine():
    from manyheads.models.vllm_engine import VLLMEngine

    engine = VLLMEngine(max_model_len=2048)
    yield engine
    engine.close()


@pytest.fixture(scope="session")
def served_url() -> Iterator[str]:
    """`manyheads serve --engine local` on loopback, in its own process."""
    port = free_port()
    log = open(os.devnull, "w")  # noqa: SIM115 - closed at teardown
    server = subprocess.Popen(
        [sys.executable, "-m", "manyheads.cli", "serve", "--engine", "local", "--port", str(port)],
        cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/v1"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"manyheads serve exited with {server.returncode}")
        try:
            if httpx.get(f"{url}/models", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(1)
    else:
        server.kill()
        raise RuntimeError("manyheads serve did not answer within 300 s")
    yield url
    server.terminate()
    server.wait(30)
    log.close()


@pytest.fixture(scope="session")
def openai_engine(served_url):
    from manyheads.models.openai_engine import OpenAIEngine

    engine = OpenAIEngine(model="smollm2-135m-instruct", base_url=served_url, timeout_s=300)
    yield engine
    engine.close()


@pytest.fixture(params=["local", "vllm", "openai"])
def any_engine(request):
    """Each real engine in turn (the vLLM one is slow to start, so it is shared)."""
    return request.getfixturevalue(f"{request.param}_engine")
