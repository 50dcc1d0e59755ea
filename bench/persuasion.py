"""Persuasion dialogue throughput at concurrency 1 and C, with the dataset's quality checks.

Runs the same ``--n`` dialogues (the first n packaged CToMPersu scenarios) twice on one engine:
one at a time, then C at a time through ``Engine.drive`` (continuous batching on vLLM). Writes
dialogues/hour for both, their ratio (``concurrency_speedup``), leaks, mean ToM accuracy and
success rate of the concurrent run to ``bench/results/persuasion.json``, engine named inside.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from manyheads.models import make_engine
from manyheads.orchestration.rooms.persuasion.generate import payload
from manyheads.orchestration.rooms.persuasion.graph import PersuasionConfig, run_batch
from manyheads.orchestration.rooms.persuasion.metrics import summarise
from manyheads.orchestration.rooms.persuasion.scenarios import load_scenarios, package_scenarios

RESULTS = Path(__file__).parent / "results" / "persuasion.json"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--engine", default="vllm", choices=["local", "vllm", "openai"])
    parser.add_argument("--n", type=int, default=32)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--max-turns", type=int, default=3)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--tom-max-tokens", type=int, default=128)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    config = PersuasionConfig(max_turns=args.max_turns, max_tokens=args.max_tokens,
                              tom_max_tokens=args.tom_max_tokens)
    records = load_scenarios(package_scenarios())
    items = [(f"{i:06d}", records[i % len(records)].scenario) for i in range(args.n)]

    with make_engine(args.engine) as engine:
        runs = {}
        for concurrency in (1, args.concurrency):
            start = time.perf_counter()
            done = run_batch(engine, items, config, concurrency=concurrency)
            seconds = time.perf_counter() - start
            runs[concurrency] = {"seconds": round(seconds, 2),
                                 "dialogues_per_hour": round(len(done) * 3600 / seconds, 1),
                                 "done": done}
        payloads = [payload(s, config, int(s.key) % len(records), engine)
                    for s in runs[args.concurrency]["done"]]
        metrics = summarise(payloads)
        result = {
            "engine": engine.name,
            "model": engine.model_name,
            "n": args.n,
            "concurrency": args.concurrency,
            "cpu_worker_cores": os.environ.get("VLLM_CPU_OMP_THREADS_BIND"),  # set by VLLMEngine
            "config": config.model_dump(),
            "seconds": {str(c): r["seconds"] for c, r in runs.items()},
            "dialogues_per_hour": {str(c): r["dialogues_per_hour"] for c, r in runs.items()},
            "concurrency_speedup": round(runs[args.concurrency]["dialogues_per_hour"]
                                         / runs[1]["dialogues_per_hour"], 2),
            "leaks": metrics["leaks"],
            "tom_accuracy_mean": metrics["tom_accuracy_mean"],
            "tom_fallback_rate": metrics["tom_fallback_rate"],
            "success_rate": metrics["success_rate"],
            "outcomes": metrics["outcomes"],
        }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    table = Table(title=f"persuasion on {result['engine']} ({result['model']})")
    for key in ("dialogues_per_hour", "concurrency_speedup", "leaks", "tom_accuracy_mean",
                "success_rate"):
        table.add_row(key, json.dumps(result[key]))
    Console().print(table)


if __name__ == "__main__":
    main()
