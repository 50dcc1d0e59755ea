"""``manyheads uhead``: generate labelled data, train a head, evaluate it against baselines."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table
from tqdm import tqdm

uhead_app = typer.Typer(help="Uncertainty heads: step-level verification.", no_args_is_help=True)
console = Console()

DEFAULT_DATA = Path.home() / ".cache" / "manyheads" / "uhead"


def _engine(threads: int):
    import torch

    from manyheads.models.local.engine import LocalEngine

    torch.set_num_threads(threads)  # one thread is fastest when the cores are shared
    return LocalEngine(attn_implementation="eager")


def _generate(engine, directory: Path, problems: int, samples: int, seed: int,
              temperature: float, max_tokens: int, per_batch: int) -> None:
    from manyheads.models.uhead.data import generate_shards
    from manyheads.models.uhead.features import FeatureConfig, FeatureObserver
    from manyheads.models.uhead.problems import make_problems

    observer = FeatureObserver(FeatureConfig())
    engine.observers.append(observer)
    with tqdm(total=problems, desc=f"solving (seed {seed})", unit="problem") as bar:
        generate_shards(engine, observer, make_problems(seed, problems), directory, samples,
                        per_batch, temperature, seed, max_tokens, on_batch=bar.update)
    engine.observers.remove(observer)


def metrics_table(result: dict[str, float], title: str) -> Table:
    table = Table(title=title)
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key, value in result.items():
        table.add_row(key, f"{value:.4f}" if isinstance(value, float) else str(value))
    return table


@uhead_app.command()
def train(out: Annotated[Path, typer.Option(help="checkpoint directory")] = Path("uhead-head"),
          data: Annotated[Path, typer.Option(help="data shards (made if missing)")]
          = DEFAULT_DATA / "train",
          problems: Annotated[int, typer.Option(help="problems to solve")] = 150,
          samples: Annotated[int, typer.Option(help="solutions per problem")] = 4,
          epochs: int = 40, seed: int = 1, temperature: float = 0.7, max_tokens: int = 80,
          per_batch: Annotated[int, typer.Option(help="problems per chat call")] = 4,
          threads: int = 1, generate: Annotated[bool, typer.Option(
              help="solve problems first (shards already there are kept)")] = True) -> None:
    """Solve generated problems, label steps with the checker, train and checkpoint a head."""
    from manyheads.models.uhead.data import load_samples
    from manyheads.models.uhead.features import FeatureConfig
    from manyheads.models.uhead.train import evaluate, split_by_problem, train_head

    engine = _engine(threads) if generate else None
    if engine is not None:
        _generate(engine, data, problems, samples, seed, temperature, max_tokens, per_batch)
    samples_all = load_samples(data)
    train_set, val_set = split_by_problem(samples_all)
    console.print(f"{len(train_set)} train / {len(val_set)} validation samples "
                  f"(split by problem)")
    with tqdm(total=epochs, desc="training", unit="epoch") as bar:
        def on_epoch(epoch: int, loss: float, score: float) -> None:
            bar.set_postfix(loss=f"{loss:.3f}", val_pr_auc=f"{score:.3f}")
            bar.update()
        head = train_head(train_set, val_set, FeatureConfig(), epochs=epochs, seed=seed,
                          backbone="smollm2-135m-instruct", checkpoint=out, on_epoch=on_epoch)
    head.save(out)
    result, _ = evaluate(head, val_set)
    result["params"] = float(head.num_params())
    result["threshold"] = head.config.threshold
    console.print(metrics_table(result, f"validation ({out})"))


@uhead_app.command("eval")
def evaluate_cmd(head_dir: Annotated[Path | None, typer.Option(
                     "--head", help="checkpoint directory (default: the shipped head)")] = None,
                 data: Annotated[Path, typer.Option(help="held-out shards (made if missing)")]
                 = DEFAULT_DATA / "heldout",
                 problems: int = 30, samples: int = 4, seed: int = 2, threads: int = 1,
                 png: Path = Path("uhead_pr.png"),
                 json_out: Annotated[Path | None, typer.Option("--json")] = None) -> None:
    """PR-AUC / ROC-AUC / ECE of the head and the baselines on held-out problems; PR curves."""
    from manyheads.models.uhead.data import load_samples
    from manyheads.models.uhead.head import UHead
    from manyheads.models.uhead.train import evaluate, save_pr_curves
    from manyheads.models.uhead.verifier import DEFAULT_HEAD

    if head_dir is None:
        from importlib import resources

        head_dir = Path(str(resources.files("manyheads.models.uhead") / "weights" / DEFAULT_HEAD))
    head = UHead.load(head_dir)
    if not any(data.glob("shard_*.pt")):
        _generate(_engine(threads), data, problems, samples, seed, 0.7, 80, 4)
    result, raw = evaluate(head, load_samples(data))
    save_pr_curves(raw, png)
    console.print(metrics_table(result, f"held-out ({data})"))
    console.print(f"PR curves: {png}")
    if json_out is not None:
        json_out.write_text(json.dumps(result, indent=2) + "\n")
