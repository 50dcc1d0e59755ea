"""The heads' draft vocabulary on its own: draft-hydra projecting through the int8 lm_head rows
of the draft vocabulary vs through the int8 copy of the full lm_head, same heads, same tree.

Both arms draft from the same features, so they differ only in the cost of the projection and
in the guesses for tokens outside the draft vocabulary (never drafted by the first arm). Items
run interleaved with vanilla (``bench/medusa.py``'s ``measure``), median of ``--repeats``;
prints a table and writes ``bench/results/draft_vocab.json``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from medusa import bench_prompts, measure, room_requests, summary
from rich.console import Console
from rich.table import Table

from manyheads.models.local.decode import vanilla_step
from manyheads.models.local.engine import LocalEngine
from manyheads.models.local.prepack import int8_projection
from manyheads.models.local.speculate import DraftStep
from manyheads.models.medusa import default_heads_dir
from manyheads.models.medusa.step import MedusaStep, chosen_tree, heads_for
from manyheads.models.medusa.training.data import chat

RESULTS = Path(__file__).parent / "results" / "draft_vocab.json"


def full_vocab_step(engine: LocalEngine, heads_dir: Path) -> DraftStep:
    """draft-hydra with the same heads drafting over all 49k tokens (the int8 full lm_head)."""
    heads = heads_for(engine, heads_dir)
    heads.config = heads.config.model_copy(update={"draft_vocab": 0})
    weight = engine.model.get_output_embeddings().weight
    heads.__dict__["draft_projection"] = int8_projection(weight)
    return DraftStep(engine.encode, medusa=MedusaStep(heads, chosen_tree(heads_dir)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--prompts", type=int, default=12)
    parser.add_argument("--room-prompts", type=int, default=12)
    parser.add_argument("--max-tokens", type=int, default=48)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    console = Console()
    engine = LocalEngine(decoder="vanilla")
    hydra = default_heads_dir(sequential=True)
    arms = {"vanilla": vanilla_step,
            "draft_vocab": DraftStep(engine.encode, medusa=MedusaStep(heads_for(engine, hydra),
                                                                      chosen_tree(hydra))),
            "full_vocab": full_vocab_step(engine, hydra)}
    started = time.perf_counter()
    workloads = {
        "generic": measure(engine, arms, [(c, chat(t), None, args.max_tokens)
                                          for c, t in bench_prompts(args.prompts)],
                           args.repeats, args.max_tokens, console, "generic"),
        "rooms": measure(engine, arms, room_requests("rooms", args.room_prompts), args.repeats,
                         args.max_tokens, console, "rooms"),
    }
    result: dict = {"settings": vars(args) | {"out": str(args.out)},
                    "draft_vocab": arms["draft_vocab"].medusa.heads.config.draft_vocab}
    table = Table(title=f"draft-hydra, draft vocabulary vs full vocabulary, {args.threads} "
                        f"threads, median of {args.repeats}")
    for col in ("workload", "arm", "speed-up", "tokens/step", "lossless"):
        table.add_column(col, justify="right")
    for name, rows in workloads.items():
        result[name] = {arm: summary(rows, arm) for arm in ("draft_vocab", "full_vocab")}
        result[name]["items"] = rows
        for arm in ("draft_vocab", "full_vocab"):
            v = result[name][arm]
            table.add_row(name, arm, f"{v['speedup']:.2f}x", f"{v['tokens_per_step']:.2f}",
                          f"{v['lossless_fraction']:.3f}")
    result["wall_s"] = time.perf_counter() - started
    console.print(table)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
