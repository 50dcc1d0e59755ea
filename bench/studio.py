"""AutoStudio on the embedded model over the first ``--limit`` dialogues, with the sketch drawer.

Prints the per-dialogue table and writes ``bench/results/studio.json`` plus a contact sheet per
dialogue in ``--out``. Sessions go to a SQLite file in ``--out`` (not the home store), so a bench
run leaves nothing behind elsewhere. A 135M model places few boxes well by itself: the numbers
measure the room as a whole (agents, supervisor rounds and the deterministic repair together).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from rich.console import Console

from manyheads.models.local.engine import LocalEngine
from manyheads.orchestration.rooms.studio.eval import results_table, run_eval
from manyheads.orchestration.rooms.studio.graph import StudioConfig
from manyheads.settings import get_settings
from manyheads.storage import Store

RESULTS = Path(__file__).parent / "results" / "studio.json"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--limit", type=int, default=4, help="dialogues")
    parser.add_argument("--max-tokens", type=int, default=192, help="per structured answer")
    parser.add_argument("--max-rounds", type=int, default=2, help="supervisor rounds at most")
    parser.add_argument("--out", type=Path, default=get_settings().home / "bench" / "studio",
                        help="folder for the contact sheets and the session database")
    args = parser.parse_args()
    console = Console()
    config = StudioConfig(max_tokens=args.max_tokens, max_rounds=args.max_rounds)
    args.out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    with LocalEngine() as engine, Store.open(f"sqlite:///{args.out / 'studio.db'}") as store:
        summary = run_eval(engine, store, args.out, config=config, limit=args.limit,
                           on_item=lambda row: console.print(f"{row['id']}: done"))
        summary |= {"model": engine.model_name, "engine": engine.name,
                    "elapsed_s": round(time.perf_counter() - started, 1)}
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(summary, indent=2) + "\n")
    console.print(results_table(summary))
    console.print(f"{summary['elapsed_s']} s; contact sheets in {args.out}")


if __name__ == "__main__":
    main()
