"""SPP and its baselines on the embedded model, over the first ``--limit`` items of each task.

Prints a table (methods by tasks, score in %) and writes ``bench/results/spp_embedded.json``.
Per-item outputs go to ``--work`` as resumable JSONL, so an interrupted bench picks up where it
stopped, and results already in the JSON for other (task, method) pairs are kept: the bench can
be run one task at a time, and ``--report-only`` rebuilds the JSON from the JSONL. A 135M model
scores low here; the point is a harness that runs every method the same way, not the numbers.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from rich.console import Console
from rich.table import Table

from manyheads.models.local.engine import LocalEngine
from manyheads.orchestration.harness.files import read_jsonl
from manyheads.orchestration.rooms.spp.eval import TASKS, load_items, run_eval, summarize
from manyheads.settings import get_settings

RESULTS = Path(__file__).parent / "results" / "spp_embedded.json"
METHODS = {"standard": ("standard", "multi"), "cot": ("cot", "multi"),
           "self_refine": ("self_refine", "multi"), "spp_single": ("spp", "single"),
           "spp_multi": ("spp", "multi")}


def table(results: dict) -> Table:
    tasks = [t for t in TASKS if any(r["task"] == t for r in results["runs"].values())]
    grid = Table(title=f"SPP tasks on {results['model']} (score %, items per cell in brackets)")
    grid.add_column("method")
    for task in tasks:
        grid.add_column(task, justify="right")
    for method in METHODS:
        cells = [results["runs"].get(f"{task}/{method}") for task in tasks]
        grid.add_row(method, *(f"{c['score']:.1f} ({c['items']})" if c else "-" for c in cells))
    return grid


def stored(work: Path, task: str, name: str, limit: int) -> dict | None:
    """The summary of what ``work`` already holds for a pair, without running anything."""
    path = work / f"{task}-{name}.jsonl"
    if not path.exists():
        return None
    wanted = {item["idx"] for item in load_items(task)[:limit]}
    rows = [r for r in read_jsonl(path, ("idx", "score")) if r["idx"] in wanted]
    method, mode = METHODS[name]
    return summarize(task, method, mode if method == "spp" else None, rows) if rows else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--limit", type=int, default=3, help="items per task")
    parser.add_argument("--tasks", nargs="+", default=list(TASKS), choices=list(TASKS))
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("--work", type=Path, default=get_settings().home / "bench" / "spp",
                        help="folder for the per-item JSONL")
    parser.add_argument("--report-only", action="store_true",
                        help="rebuild the JSON and table from --work without running a model")
    args = parser.parse_args()
    console = Console()
    results = json.loads(RESULTS.read_text()) if RESULTS.exists() else {"runs": {}}
    results["model"] = results.get("model") or get_settings().model
    engine = None if args.report_only else LocalEngine()
    for task in args.tasks:
        for name in args.methods:
            method, mode = METHODS[name]
            if engine is None:
                summary = stored(args.work, task, name, args.limit)
                if summary is None:
                    continue
            else:
                summary = run_eval(engine, task, method, args.work / f"{task}-{name}.jsonl",
                                   mode=mode, limit=args.limit)
            results["runs"][f"{task}/{name}"] = summary
            console.print(f"{task} / {name}: {summary['score']:.1f}% over {summary['items']} "
                          f"items ({summary['elapsed_s']} s of model time)")
            RESULTS.parent.mkdir(parents=True, exist_ok=True)
            RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    if engine is not None:
        engine.close()
    console.print(table(results))


if __name__ == "__main__":
    main()
