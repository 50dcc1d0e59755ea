"""``manyheads uhead``: generate labelled data, train a head, evaluate it against baselines."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table
from tqdm import tqdm

from manyheads.models.data_engine import DataEngineOpt

uhead_app = typer.Typer(help="Uncertainty heads: step-level verification.", no_args_is_help=True)
console = Console()



def _engine(threads: int):
    import torch

    from manyheads.models.local.engine import LocalEngine

    torch.set_num_threads(threads)  # one thread is fastest when the cores are shared
    return LocalEngine(attn_implementation="eager")


def _generate(engine, directory: Path, problems: int, samples: int, seed: int,
              temperature: float, max_tokens: int, per_batch: int,
              data_engine: str = "local") -> None:
    """Missing shards of ``problems`` × ``samples`` solutions; ``engine`` (eager ``LocalEngine``)
    computes the features. ``local``: it also writes the solutions, observed in flight.
    ``vllm``: vLLM on the same model writes them (started only if a shard is missing) and
    ``engine`` scores them by prefill."""
    from contextlib import ExitStack

    from manyheads.models.data_engine import check_data_engine, text_engine
    from manyheads.models.uhead.features import FeatureConfig, FeatureObserver
    from manyheads.models.uhead.training.data import generate_shards, solve, solve_by_prefill
    from manyheads.models.uhead.training.problems import make_problems

    check_data_engine(data_engine)
    config = FeatureConfig()
    with ExitStack() as stack:
        if data_engine == "local":
            observer = FeatureObserver(config)
            engine.observers.append(observer)
            stack.callback(engine.observers.remove, observer)

            def solver(batch, batch_seed: int):
                return solve(engine, observer, batch, samples, temperature, batch_seed,
                             max_tokens)
        else:
            writer = None

            def solver(batch, batch_seed: int):
                nonlocal writer
                if writer is None:  # started at the first missing shard
                    writer = stack.enter_context(text_engine(data_engine, engine))
                return solve_by_prefill(writer, engine, batch, samples, temperature,
                                        batch_seed, max_tokens, config)

        with tqdm(total=problems, desc=f"solving (seed {seed}, {data_engine})",
                  unit="problem") as bar:
            generate_shards(solver, make_problems(seed, problems), directory, per_batch, seed,
                            on_batch=bar.update)


def metrics_table(result: dict[str, float], title: str) -> Table:
    table = Table(title=title)
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key, value in result.items():
        table.add_row(key, f"{value:.4f}" if isinstance(value, float) else str(value))
    return table


def _synthesize(engine, directory: Path, problems: int, seed: int) -> None:
    import random

    import torch

    from manyheads.models.uhead.features import FeatureConfig
    from manyheads.models.uhead.training.problems import make_problems
    from manyheads.models.uhead.training.synth import synth_samples

    directory.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    for start in tqdm(range(0, problems, 5), desc="planted mistakes (prefill)", unit="x5"):
        shard = directory / f"shard_{seed}_{start:05d}.pt"
        if shard.exists():
            continue
        batch = [s for p in make_problems(seed, min(5, problems - start), start)
                 for s in synth_samples(engine, p, 4, FeatureConfig(), rng)]
        torch.save([s.__dict__ for s in batch], shard)


def default_data() -> Path:
    """Shards live under ``MANYHEADS_HOME`` with the converted model and the database."""
    from manyheads.settings import get_settings

    return get_settings().home / "uhead"


@uhead_app.command()
def train(out: Annotated[Path, typer.Option(help="checkpoint directory")] = Path("uhead-head"),
          data: Annotated[Path | None, typer.Option(
              help="data root: generated/ and synth/ shards, made if missing "
                   "(default: $MANYHEADS_HOME/uhead)")] = None,
          problems: Annotated[int, typer.Option(help="problems the model solves")] = 320,
          samples: Annotated[int, typer.Option(help="solutions per problem")] = 8,
          synth: Annotated[int, typer.Option(
              help="problems with planted mistakes (train side only)")] = 0,
          epochs: int = 12, seed: int = 1, temperature: float = 0.7, max_tokens: int = 80,
          per_batch: Annotated[int, typer.Option(help="problems per chat call")] = 32,
          threads: int = 2, generate: Annotated[bool, typer.Option(
              help="make missing data first (shards already there are kept)")] = True,
          data_engine: DataEngineOpt = "vllm") -> None:
    """Solve generated problems, label steps with the checker, train and checkpoint a head.

    Validation (and the threshold) use only generated text, split by problem; text with
    planted mistakes is added to the training side only."""
    data = data or default_data()
    from manyheads.models.uhead.features import FeatureConfig
    from manyheads.models.uhead.training.data import load_samples
    from manyheads.models.uhead.training.train import evaluate, split_by_problem, train_head

    if generate:
        engine = _engine(threads)
        _generate(engine, data / "generated", problems, samples, seed, temperature, max_tokens,
                  per_batch, data_engine)
        if synth:
            _synthesize(engine, data / "synth", synth, seed + 4)
    train_set, val_set = split_by_problem(load_samples(data / "generated"), 0.25)
    if any((data / "synth").glob("shard_*.pt")):
        train_set += load_samples(data / "synth")
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
                 data: Annotated[Path | None, typer.Option(
                     help="held-out shards, made if missing "
                          "(default: $MANYHEADS_HOME/uhead/heldout)")] = None,
                 problems: int = 30, samples: int = 4, seed: int = 2, threads: int = 1,
                 data_engine: DataEngineOpt = "vllm", png: Path = Path("uhead_pr.png"),
                 json_out: Annotated[Path | None, typer.Option("--json")] = None) -> None:
    """PR-AUC / ROC-AUC / ECE of the head and the baselines on held-out problems; PR curves."""
    data = data or default_data() / "heldout"
    from manyheads.models.uhead.head import UHead
    from manyheads.models.uhead.training.data import load_samples
    from manyheads.models.uhead.training.train import evaluate, save_pr_curves
    from manyheads.models.uhead.verifier import DEFAULT_HEAD

    if head_dir is None:
        from importlib import resources

        head_dir = Path(str(resources.files("manyheads.models.uhead") / "weights" / DEFAULT_HEAD))
    head = UHead.load(head_dir)
    if not any(data.glob("shard_*.pt")):
        _generate(_engine(threads), data, problems, samples, seed, 0.7, 80, 4, data_engine)
    result, raw = evaluate(head, load_samples(data))
    save_pr_curves(raw, png)
    console.print(metrics_table(result, f"held-out ({data})"))
    console.print(f"PR curves: {png}")
    if json_out is not None:
        json_out.write_text(json.dumps(result, indent=2) + "\n")
