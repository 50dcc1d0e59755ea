"""No vLLM process outlives its owner: ``kill -9`` of the process that built a VLLMEngine takes
its EngineCore and Worker (which vLLM's CPU build *spawns*) with it."""

from __future__ import annotations

import signal
import subprocess
import sys

import psutil
import pytest

OWNER = """
import sys
from manyheads.models import SamplingParams
from manyheads.models.vllm_engine import VLLMEngine
engine = VLLMEngine(max_model_len=2048)
engine.generate(["Hi"], SamplingParams(max_tokens=2))
print("ready", flush=True)
sys.stdin.read()  # hold the engine until killed
"""


@pytest.mark.slow
def test_sigkill_of_the_owner_leaves_no_vllm_process(tmp_path) -> None:
    log = tmp_path / "owner.log"
    owner = subprocess.Popen([sys.executable, "-c", OWNER], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, stderr=log.open("w"), text=True)
    children: list[psutil.Process] = []
    try:
        assert owner.stdout is not None
        while (line := owner.stdout.readline()) and line.strip() != "ready":
            pass  # vLLM prints progress lines on stdout too
        if not line:
            owner.wait()
            pytest.fail(f"the engine did not start:\n{log.read_text()[-3000:]}")
        children = psutil.Process(owner.pid).children(recursive=True)
        assert children, "vLLM started no engine process (expected EngineCore)"
        owner.send_signal(signal.SIGKILL)
        owner.wait()
        # each child notices its parent is gone within a second; 60 s is only a deadline
        _, alive = psutil.wait_procs(children, timeout=60)
        assert not alive, f"orphaned vLLM processes: {[p.pid for p in alive]}"
    finally:
        owner.kill()
        for child in children:
            if child.is_running():
                child.kill()
