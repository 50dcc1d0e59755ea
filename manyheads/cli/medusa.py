"""``manyheads medusa``: train, evaluate, pick a tree for, and export Medusa heads."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from manyheads.models.data_engine import DataEngineOpt

medusa_app = typer.Typer(help="Medusa draft heads: train, eval, choose-tree, export-vllm.",
                         no_args_is_help=True)
console = Console()

HeadsOpt = Annotated[Path | None, typer.Option(help="heads folder (default: the shipped heads)")]
WorkOpt = Annotated[Path | None, typer.Option(
    help="self-distillation cache (default: $MANYHEADS_HOME/medusa/<model>)")]
ModelOpt = Annotated[str | None, typer.Option(help="base model (default: the embedded one)")]
ThreadsOpt = Annotated[int | None, typer.Option(help="torch CPU threads (1 is steadier on a "
                                                     "busy machine)")]


def _work_dir(work_dir: Path | None, model: str | None) -> Path:
    if work_dir is not None:
        return work_dir
    from manyheads.settings import get_settings
    name = Path(str(model)).name if model else "smollm2-135m-instruct"
    return get_settings().home / "medusa" / name


def _engine(model: str | None, threads: int | None):
    from manyheads.models.local.engine import LocalEngine
    return LocalEngine(model, threads=threads)


def _ensure_data(engine, work: Path, max_new_tokens: int, batch_size: int,
                 data_engine: str = "local", limit: int | None = None,
                 split: str | None = None) -> None:
    """Generate the self-distillation answers that are not cached yet (resumable); ``split``
    "eval" answers only the held-out prompts (all that ``eval`` and ``choose-tree`` read).

    ``engine`` (a ``LocalEngine``) computes the hidden states; the answers come from it too, or
    from a vLLM engine on the same model when ``data_engine`` is ``vllm`` (started only if some
    prompts are not cached yet, and closed afterwards).
    """
    from rich.progress import Progress

    from manyheads.models.data_engine import text_engine
    from manyheads.models.medusa.training.data import answered_ids, generate, load_prompts

    prompts = load_prompts(split=split)[:limit]
    done = answered_ids(work)
    if all(p.id in done for p in prompts):
        return
    with text_engine(data_engine, engine) as writer, Progress(console=console) as bar:
        task = bar.add_task("answering prompts (self-distillation)", total=len(prompts),
                            completed=sum(p.id in done for p in prompts))
        generate(writer, engine, work, max_new_tokens=max_new_tokens,
                 batch_size=batch_size, prompts=prompts, progress=lambda n: bar.advance(task, n))


@medusa_app.command()
def train(
    out: Annotated[Path, typer.Option(help="where the trained heads go")] = Path("medusa-heads"),
    work_dir: WorkOpt = None,
    model: ModelOpt = None,
    num_heads: Annotated[int, typer.Option(help="heads K")] = 4,
    num_layers: Annotated[int, typer.Option(help="residual blocks per head")] = 1,
    epochs: Annotated[float, typer.Option(help="passes over the cached features")] = 2.0,
    batch_size: Annotated[int, typer.Option(help="positions per optimiser step")] = 128,
    lr: Annotated[float, typer.Option(help="peak learning rate")] = 1e-3,
    max_new_tokens: Annotated[int, typer.Option(help="answer length when generating data")] = 128,
    gen_batch: Annotated[int, typer.Option(help="prompts per generation batch")] = 16,
    checkpoint_every: Annotated[int, typer.Option(help="optimiser steps between checkpoints")
                                ] = 100,
    max_minutes: Annotated[float | None, typer.Option(help="stop training (and save) after this")
                           ] = 25.0,
    vocab: Annotated[str, typer.Option(help="training softmax over 'data' tokens or 'full'")
                     ] = "data",
    resume: Annotated[bool, typer.Option(help="continue from the last checkpoint")] = False,
    hydra: Annotated[bool, typer.Option(help="sequential heads: each also reads the token "
                                             "before its target (Hydra)")] = False,
    draft_vocab: Annotated[int, typer.Option(help="the heads draft only the N most frequent "
                                                  "answer tokens (0: every token)")] = 8192,
    distill: Annotated[bool, typer.Option(help="targets: the base's distribution at each "
                                               "position, not only its greedy token")] = False,
    generate: Annotated[bool, typer.Option(help="answer the prompts not cached yet first "
                                                "(--no-generate: train on what is cached)")
                        ] = True,
    prompts: Annotated[int | None, typer.Option(
        help="answer only the first N shipped prompts (default: all)")] = None,
    data_engine: DataEngineOpt = "local",
    threads: ThreadsOpt = None,
) -> None:
    """Self-distil the base model, then train Medusa-1 heads on its frozen hidden states."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    from manyheads.models.medusa.training.train import TrainConfig
    from manyheads.models.medusa.training.train import train as run_train

    work = _work_dir(work_dir, model)
    engine = _engine(model, threads)
    if generate:
        _ensure_data(engine, work, max_new_tokens, gen_batch, data_engine, prompts)
    config = TrainConfig(num_heads=num_heads, num_layers=num_layers, epochs=epochs,
                         batch_size=batch_size, lr=lr,
                         checkpoint_every=checkpoint_every, max_minutes=max_minutes,
                         vocab=vocab, sequential=hydra, draft_vocab=draft_vocab,
                         distill=distill)
    weight = engine.model.get_output_embeddings().weight.detach()
    embed = engine.model.get_input_embeddings().weight.detach()
    columns = (TextColumn("training heads"), BarColumn(), TextColumn("{task.completed}/"
               "{task.total} loss {task.fields[loss]:.3f}"), TimeRemainingColumn())
    with Progress(*columns, console=console) as bar:
        task = bar.add_task("train", total=None, loss=float("nan"))

        def progress(step: int, total: int, loss: float) -> None:
            bar.update(task, completed=step, total=total, loss=loss)

        run_train(work, out, weight, config, embed_weight=embed, base_model=engine.model_name,
                  resume=resume, progress=progress)
    rows = _accuracy(out, work, engine)
    _print_accuracy(rows)
    from manyheads.models.medusa.heads import load_heads
    trained = load_heads(out)  # keep the held-out accuracy with the checkpoint
    trained.config.training["eval_accuracy"] = rows
    trained.save(out)
    console.print(f"heads written to [bold]{out}[/]")


def _accuracy(heads_dir: Path | None, work: Path, engine) -> list[dict]:
    from manyheads.models.medusa.heads import load_heads
    from manyheads.models.medusa.training.train import evaluate
    return evaluate(load_heads(heads_dir), work, engine.model.get_output_embeddings().weight,
                    embed_weight=engine.model.get_input_embeddings().weight)


def _print_accuracy(rows: list[dict]) -> None:
    table = Table(title="Medusa heads on held-out prompts (model's own greedy answers)")
    for col in ("head", "predicts", "top-1", "top-5", "positions"):
        table.add_column(col, justify="right")
    for r in rows:
        table.add_row(str(r["head"]), f"t+{r['head'] + 2}", f"{r['top1']:.3f}",
                      f"{r['top5']:.3f}", str(r["positions"]))
    console.print(table)


@medusa_app.command("eval")
def eval_(heads: HeadsOpt = None, work_dir: WorkOpt = None, model: ModelOpt = None,
          max_new_tokens: int = 128, gen_batch: int = 16, data_engine: DataEngineOpt = "local",
          threads: ThreadsOpt = None,
          json_out: Annotated[Path | None, typer.Option("--json")] = None) -> None:
    """Per-head top-1/top-5 accuracy on the held-out prompts."""
    work = _work_dir(work_dir, model)
    engine = _engine(model, threads)
    _ensure_data(engine, work, max_new_tokens, gen_batch, data_engine, split="eval")
    rows = _accuracy(heads, work, engine)
    _print_accuracy(rows)
    if json_out:
        json_out.write_text(json.dumps(rows, indent=2) + "\n")


@medusa_app.command("choose-tree")
def choose_tree_cmd(heads: HeadsOpt = None, work_dir: WorkOpt = None, model: ModelOpt = None,
                    max_nodes: Annotated[int, typer.Option(help="largest tree tried")] = 16,
                    data_engine: DataEngineOpt = "local", threads: ThreadsOpt = None,
                    json_out: Annotated[Path | None, typer.Option("--json")] = None) -> None:
    """Pick the tree with the best predicted speed-up from head accuracy x forward cost (the
    tree Medusa heads verify; Hydra heads draw theirs per step and use it only when asked to)."""
    from manyheads.models.medusa.step import heads_for
    from manyheads.models.medusa.training.choose import (
        choose_tree,
        draft_cost,
        forward_costs,
        truth_ranks,
    )
    from manyheads.models.medusa.training.data import load_sequences

    work = _work_dir(work_dir, model)
    engine = _engine(model, threads)
    _ensure_data(engine, work, 128, 16, data_engine, split="eval")
    weight = engine.model.get_output_embeddings().weight.detach()
    loaded = heads_for(engine, heads)
    ranks = truth_ranks(loaded, load_sequences(work, "eval"), weight,
                        embed_weight=engine.model.get_input_embeddings().weight.detach())
    costs = forward_costs(engine.model, list(range(1, max_nodes + 1)))
    per_depth = draft_cost(loaded, engine.model)
    result = choose_tree(ranks, costs, per_depth)
    result["draft_cost_s"] = per_depth
    table = Table(title="tree size vs predicted speed-up (this machine)")
    for col in ("nodes", "E[tokens/step]", "pass ms", "speed-up"):
        table.add_column(col, justify="right")
    for r in result["table"]:
        table.add_row(str(r["nodes"]), f"{r['expected_tokens']:.2f}", f"{1000 * r['cost_s']:.0f}",
                      f"{r['predicted_speedup']:.2f}")
    console.print(table)
    console.print(f"drafting: {1000 * per_depth:.2f} ms per tree depth (in 'pass ms')")
    console.print(f"best tree: {[tuple(p) for p in result['tree']]}")
    from manyheads.models.medusa.heads import TREE_FILE, default_heads_dir
    saved = Path(heads or default_heads_dir()) / TREE_FILE  # the heads now decode with it
    for path in (saved, json_out):
        if path is not None:
            path.write_text(json.dumps(result, indent=2) + "\n")
    console.print(f"tree saved with the heads: {saved}")


@medusa_app.command("export-vllm")
def export_vllm_cmd(out: Annotated[Path, typer.Argument(help="output folder")],
                    heads: HeadsOpt = None, model: ModelOpt = None) -> None:
    """Write the heads in vLLM's Medusa checkpoint format."""
    from manyheads.models.medusa.vllm_export import export_vllm
    export_vllm(heads, out, model)
    console.print(f"vLLM Medusa checkpoint written to [bold]{out}[/]")
