"""How long ``VLLMEngine`` takes to start on this CPU, with and without vLLM's AOT compile cache.

vLLM 0.32's default ahead-of-time compile artifacts do not load on its CPU build ("'function'
object has no attribute 'finalize_loading'"), so each start compiles the model with Inductor
again. With ``VLLM_USE_AOT_COMPILE=0`` Inductor's own cache loads instead. Each start runs in a
fresh process, one at a time, settings interleaved; each then decodes the same greedy batch, so the
table shows what the faster start costs in decoding and that the text stays the same.

    flock /tmp/manyheads-cpu.lock .venv/bin/python bench/vllm_start.py --starts 3
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

from rich.console import Console
from rich.table import Table

RESULTS = Path(__file__).resolve().parent / "results" / "vllm_start.json"
SETTINGS = {"vLLM default (AOT artifacts)": "1", "VLLM_USE_AOT_COMPILE=0": "0"}

# One start in a fresh process: time the engine's construction, then a greedy batch.
CHILD = """
import json, sys, time
from manyheads.models import SamplingParams
from manyheads.models.vllm_engine import VLLMEngine
started = time.perf_counter()
engine = VLLMEngine(max_model_len=2048)
start_s = time.perf_counter() - started
prompts = [f"Write a short note about the number {i}." for i in range(8)]
params = SamplingParams(max_tokens=64, temperature=0)
engine.generate(prompts[:1], SamplingParams(max_tokens=4))
began = time.perf_counter()
out = engine.generate(prompts, params)
decode_s = time.perf_counter() - began
engine.close()
tokens = sum(c.usage.completion_tokens for c in out)
print("RESULT " + json.dumps({"start_s": start_s, "tok_per_s": tokens / decode_s,
                             "texts": [c.text for c in out]}))
"""


def one_start(aot: str) -> dict:
    env = {**os.environ, "VLLM_USE_AOT_COMPILE": aot}
    done = subprocess.run([sys.executable, "-c", CHILD], env=env, capture_output=True, text=True,
                          timeout=900, check=False)
    lines = [ln for ln in done.stdout.splitlines() if ln.startswith("RESULT ")]
    if not lines:
        raise SystemExit(f"a start with VLLM_USE_AOT_COMPILE={aot} failed:\n{done.stderr[-3000:]}")
    return json.loads(lines[-1].removeprefix("RESULT "))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--starts", type=int, default=3, help="starts per setting (>= 2)")
    args = parser.parse_args()
    runs: dict[str, list[dict]] = {name: [] for name in SETTINGS}
    for i in range(args.starts):
        for name, aot in SETTINGS.items():
            runs[name].append(one_start(aot))
            print(f"start {i + 1}/{args.starts} {name}: {runs[name][-1]['start_s']:.0f} s")
    reference = runs[next(iter(SETTINGS))][0]["texts"]
    summary = {
        name: {
            "first_start_s": starts[0]["start_s"],
            "later_start_s_median": statistics.median(s["start_s"] for s in starts[1:]),
            "tok_per_s_median": statistics.median(s["tok_per_s"] for s in starts),
            "same_text_as_default": all(s["texts"] == reference for s in starts),
            "starts": [{k: v for k, v in s.items() if k != "texts"} for s in starts],
        }
        for name, starts in runs.items()
    }
    table = Table(title="VLLMEngine start on this CPU (embedded model, max_model_len 2048)")
    for column in ("compile cache", "first start s", "later starts s (median)",
                   "decode tok/s (median)", "same greedy text"):
        table.add_column(column)
    for name, row in summary.items():
        table.add_row(name, f"{row['first_start_s']:.0f}", f"{row['later_start_s_median']:.0f}",
                      f"{row['tok_per_s_median']:.1f}", str(row["same_text_as_default"]))
    Console().print(table)
    RESULTS.write_text(json.dumps({"threads": os.cpu_count(), "settings": summary}, indent=2)
                       + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
