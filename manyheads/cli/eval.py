"""``manyheads eval``: benchmark harnesses from the shell; ``eval spp`` runs and scores SPP tasks.

Errors are left to the top-level ``manyheads`` entry point, which prints a ``ManyheadsError``
(such as a ``ConfigError`` naming a bad file line) as one red line instead of a traceback.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from manyheads.orchestration.rooms.multiplex import eval as multiplex_eval
from manyheads.orchestration.rooms.spp import eval as spp_eval
from manyheads.orchestration.rooms.studio.eval import studio_command

eval_app = typer.Typer(help="Evaluate methods and rooms on benchmark tasks.", no_args_is_help=True)
spp_app = typer.Typer(help="Solo Performance Prompting tasks: trivia, codenames, logic grid.",
                      no_args_is_help=True)
eval_app.add_typer(spp_app, name="spp")
eval_app.command("multiplex")(multiplex_eval.multiplex)
eval_app.command("studio")(studio_command)
console = Console()

TaskOpt = Annotated[str, typer.Option(help=f"one of {', '.join(spp_eval.TASKS)}")]


def summary_table(summary: dict[str, Any]) -> Table:
    table = Table(title=f"SPP eval: {summary['task']}")
    for column in ("method", "mode", "items", "score %"):
        table.add_column(column)
    table.add_row(summary["method"], summary["mode"] or "-", str(summary["items"]),
                  f"{summary['score']:.1f}")
    return table


@spp_app.command("run")
def run(task: TaskOpt,
        method: Annotated[str, typer.Option(help=f"one of {', '.join(spp_eval.METHODS)}")],
        mode: Annotated[str, typer.Option(help="spp only: single | multi")] = "multi",
        limit: Annotated[int | None, typer.Option(help="the first N items only")] = None,
        engine: Annotated[str | None, typer.Option(help="local | vllm | openai")] = None,
        model: Annotated[str | None, typer.Option(help="model name, folder or .gguf")] = None,
        max_tokens: Annotated[int | None, typer.Option(help="per answer")] = None,
        out: Annotated[Path | None, typer.Option(help="per-item JSONL; resumed if present")]
        = None,
        db: Annotated[str | None, typer.Option(help="store URL (default: the home store)")]
        = None) -> None:
    """Run a method on a task, resuming from --out, and store the summary as an eval run."""
    from manyheads.models import make_engine
    from manyheads.storage import Store

    spp_eval.get_task(task)
    spp_eval.check_method(method, mode)
    suffix = f"-{mode}" if method == "spp" else ""
    out = out or Path(f"spp-{task}-{method}{suffix}.jsonl")
    total = len(spp_eval.load_items(task)[:limit])
    with console.status("starting the engine..."):
        llm = make_engine(engine, model)
    with llm, Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                       TimeElapsedColumn(), console=console) as progress:
        bar = progress.add_task(f"{task} / {method}{suffix}", total=total)
        summary = spp_eval.run_eval(
            llm, task, method, out, mode=mode, limit=limit, max_tokens=max_tokens,
            on_item=lambda row, fresh: progress.advance(bar))
    summary |= {"model": llm.model_name, "engine": llm.name, "outputs": str(out)}
    with Store.open(db) as store:
        store.record_eval_run(f"spp/{task}/{method}{suffix}", room="spp", metrics=summary)
    console.print(summary_table(summary))


@spp_app.command("score")
def score(task: TaskOpt,
          outputs: Annotated[Path, typer.Option(help='JSONL of {"idx": ..., "output": "..."}',
                                                exists=True, dir_okay=False)]) -> None:
    """Score outputs produced elsewhere (for codenames, the guesser's answers)."""
    console.print(summary_table(spp_eval.score_file(task, outputs)))
