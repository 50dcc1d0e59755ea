"""``langgraph.json`` for real: the LangGraph API server (``langgraph dev``) on loopback runs a
room, driven through ``langgraph-sdk`` as LangGraph Studio would."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from conftest import ROOT, free_port
from langgraph_sdk import get_sync_client


@pytest.mark.slow
def test_langgraph_dev_runs_the_demo_room(tmp_path: Path):
    port = free_port()
    env = {**os.environ, "MANYHEADS_ENGINE": "local", "MANYHEADS_HOME": os.environ.get(
        "MANYHEADS_HOME", str(Path.home() / ".cache" / "manyheads")),
        "LANGGRAPH_NO_ANALYTICS": "1", "LANGSMITH_TRACING": "false"}
    log = (tmp_path / "server.log").open("w")
    server = subprocess.Popen(
        [str(Path(sys.executable).with_name("langgraph")), "dev", "--config", "langgraph.json",
         "--port", str(port), "--host", "127.0.0.1", "--no-browser", "--no-reload",
         "--allow-blocking"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 240
        while True:
            assert server.poll() is None, (tmp_path / "server.log").read_text()[-3000:]
            try:
                if httpx.get(f"{url}/ok", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "langgraph dev did not start in 240 s"
            time.sleep(1)
        client = get_sync_client(url=url)
        assert {"demo", "spp", "multiplex", "persuasion", "studio"} <= {
            a["graph_id"] for a in client.assistants.search(limit=50)}
        thread = client.threads.create()
        result = client.runs.wait(thread["thread_id"], "demo", input={
            "request": "growing tomatoes", "turn": 0, "history": []},
            context={"turns": 2, "max_tokens": 16})
        assert [s["speaker"] for s in result["said"]] == ["Ada", "Basil"]
        assert result["topic"] == "growing tomatoes"
    finally:
        server.terminate()
        server.wait(30)
        log.close()
