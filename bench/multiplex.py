"""The multiplex modes on the embedded model over a fixed subset of our question set.

The subset is the first ``--limit`` questions taken round-robin over categories (so six questions
span six categories). Prints the table and writes ``bench/results/multiplex.json`` and
``multiplex.png``; per-item JSONL goes to ``--work`` and is resumed. A 135M model writes weak
answers, so the numbers show what the harness measures, not what a frontier model would score.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.console import Console

from manyheads.models.local.engine import LocalEngine
from manyheads.orchestration.rooms.multiplex.eval import (
    pick,
    run_eval,
    summarize,
    summary_table,
    write_results,
)
from manyheads.orchestration.rooms.multiplex.graph import MODES, MultiplexConfig, default_panel
from manyheads.settings import get_settings

RESULTS = Path(__file__).parent / "results"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--limit", type=int, default=6, help="questions")
    parser.add_argument("--modes", nargs="+", default=list(MODES), choices=list(MODES))
    parser.add_argument("--max-tokens", type=int, default=96, help="per final answer")
    parser.add_argument("--member-tokens", type=int, default=48, help="per panel member")
    parser.add_argument("--revise", action="store_true", help="panel: one revise round")
    parser.add_argument("--work", type=Path, default=get_settings().home / "bench" / "multiplex",
                        help="folder for the per-item JSONL")
    args = parser.parse_args()
    console = Console()
    panel = default_panel()
    config = MultiplexConfig(max_tokens=args.max_tokens, member_tokens=args.member_tokens,
                             revise=args.revise)
    out = args.work / f"items-{args.max_tokens}-{args.member_tokens}-{int(args.revise)}.jsonl"
    with LocalEngine() as engine:
        rows = run_eval(engine, pick(args.limit), out, modes=args.modes, config=config,
                        panel=panel, on_item=lambda row, fresh: console.print(
                            f"{row['mode']:>10} {row['id']}: entropy {row['entropy']:.1f}% "
                            f"({row['elapsed_s']} s{'' if fresh else ', resumed'})"))
        model = engine.model_name
    summary = summarize(rows, list(panel.perspectives()))
    summary |= {"model": model, "engine": "local", "questions": args.limit,
                "max_tokens": args.max_tokens, "member_tokens": args.member_tokens,
                "revise": args.revise}
    data, chart = write_results(summary, RESULTS)
    console.print(summary_table(summary))
    console.print(f"wrote {data} and {chart}")


if __name__ == "__main__":
    main()
