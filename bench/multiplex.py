"""The multiplex modes on the embedded model over our question set (all 56 by default).

``--limit N`` takes the first N questions round-robin over categories (so seven span all seven).
Prints the table and writes ``bench/results/multiplex.json`` and ``multiplex.png``; per-item
JSONL goes to ``--work`` and is resumed. A 135M model writes weak answers, so the numbers show
what the harness measures, not what a frontier model would score.

The panel's synthesis attributes each key point to its member ("- Ubuntu Elder: ..."), and the
MiniLM labeller follows the name. ``unattributed`` scores the same syntheses with those names
removed, so the table also shows how much of the spread the sentences carry by themselves.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path
from statistics import mean
from typing import Any

from rich.console import Console

from manyheads.models.local.engine import LocalEngine
from manyheads.orchestration.rooms.multiplex.eval import (
    load_questions,
    pick,
    run_eval,
    summarize,
    summary_table,
    write_results,
)
from manyheads.orchestration.rooms.multiplex.graph import (
    MODES,
    MultiplexConfig,
    Panel,
    default_panel,
)
from manyheads.orchestration.rooms.multiplex.pds import entropy_pct, score
from manyheads.settings import get_settings

RESULTS = Path(__file__).parent / "results"


def unattributed(rows: list[dict[str, Any]], panel: Panel) -> dict[str, Any]:
    """PDS of the panel's syntheses with each point's "- Name: " removed (MiniLM labeller)."""
    names = "|".join(re.escape(m.name) for m in panel.members)
    prefix = re.compile(rf"^- (?:{names}): ", re.M)
    perspectives = panel.perspectives()
    results = [score(prefix.sub("", r["synthesis"]), perspectives)
               for r in rows if r["mode"] == "panel" and "synthesis" in r]
    if not results:
        return {}
    counts = [sum(r.counts[n] for r in results) for n in perspectives]
    return {"items": len(results), "pds_entropy": round(mean(r.entropy for r in results), 2),
            "pooled_entropy": entropy_pct(counts, len(counts)),
            "labelled_sentences": sum(counts)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--limit", type=int, default=len(load_questions()), help="questions")
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
    if "panel" in summary["modes"] and (plain := unattributed(rows, panel)):
        summary["modes"]["panel"]["unattributed"] = plain
    summary |= {"model": model, "engine": "local", "questions": len(pick(args.limit)),
                "max_tokens": args.max_tokens, "member_tokens": args.member_tokens,
                "revise": args.revise}
    data, chart = write_results(summary, RESULTS)
    console.print(summary_table(summary))
    console.print(f"wrote {data} and {chart}")


if __name__ == "__main__":
    main()
