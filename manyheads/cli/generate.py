"""``manyheads generate``: build datasets by running rooms in concurrent, resumable batches."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from manyheads.errors import ConfigError

generate_app = typer.Typer(help="Generate datasets with the rooms.", no_args_is_help=True,
                           pretty_exceptions_enable=False)
console = Console(stderr=True)


@generate_app.command()
def persuasion(
    out: Annotated[Path, typer.Option(help="folder for the JSONL, card and tables")],
    scenarios: Annotated[Path | None, typer.Option(
        help="CToMPersu JSON/JSONL file (default: the packaged 60 dev scenarios)")] = None,
    domain: Annotated[str | None, typer.Option(
        help="draft scenarios in this domain with a scenario agent instead of --scenarios")]
    = None,
    n: Annotated[int | None, typer.Option(help="dialogues (default: one per scenario)")] = None,
    concurrency: Annotated[int, typer.Option(min=1, max=512,
                                             help="dialogues per engine batch")] = 8,
    engine: Annotated[str | None, typer.Option("--engine", "-e",
                                               help="local | vllm | openai")] = None,
    model: Annotated[str | None, typer.Option("--model", "-m")] = None,
    max_turns: Annotated[int, typer.Option(help="persuader turns before the limit")] = 3,
    max_tokens: Annotated[int, typer.Option(help="tokens per utterance")] = 64,
    tom_max_tokens: Annotated[int, typer.Option(help="tokens per ToM estimate")] = 128,
    temperature: float = 0.7,
    seed: int = 0,
    name: Annotated[str | None, typer.Option(
        help="dataset name in the store (default: persuasion-<out folder name>)")] = None,
    observer: Annotated[bool, typer.Option(help="score ToM guesses live (evaluation only)")]
    = False,
    feedback: Annotated[bool, typer.Option(
        help="show observer scores to the persuader: breaks double-blindness, recorded")] = False,
) -> None:
    """Generate persuasion dialogues; rerun the same command to resume after a kill."""
    from manyheads.models import make_engine
    from manyheads.orchestration.rooms.persuasion.generate import export, generate_persuasion
    from manyheads.orchestration.rooms.persuasion.graph import PersuasionConfig
    from manyheads.orchestration.rooms.persuasion.scenarios import (
        draft_scenarios,
        load_scenarios,
        package_scenarios,
    )
    from manyheads.storage.store import Store

    if scenarios is not None and domain is not None:
        raise ConfigError("give --scenarios or --domain, not both")
    try:
        config = PersuasionConfig(max_turns=max_turns, max_tokens=max_tokens,
                                  tom_max_tokens=tom_max_tokens, temperature=temperature,
                                  seed=seed, observer=observer, feedback=feedback)
    except ValueError as exc:
        raise ConfigError(f"invalid persuasion settings: {exc}") from None
    out.mkdir(parents=True, exist_ok=True)
    drafted = out / "scenarios.jsonl"  # drafted once, reused on resume
    records = (load_scenarios(scenarios) if scenarios is not None
               else load_scenarios(drafted) if domain is not None and drafted.exists()
               else None if domain is not None else load_scenarios(package_scenarios()))
    name = name or f"persuasion-{out.resolve().name}"
    with make_engine(engine, model) as llm, Store.open() as store:
        if records is None:
            records = draft_scenarios(llm, domain, n or 8)
            drafted.write_text("".join(r.model_dump_json(exclude_none=True) + "\n"
                                       for r in records), encoding="utf-8")
        total = n or len(records)
        columns = (TextColumn("[bold]persuasion"), BarColumn(), MofNCompleteColumn(),
                   TimeElapsedColumn())
        with Progress(*columns, console=console) as progress:
            task = progress.add_task("dialogues", total=total)
            counts = generate_persuasion(
                llm, store, records, name=name, n=total, config=config, concurrency=concurrency,
                on_progress=lambda done: progress.update(task, completed=done))
        result = export(store, name, out)
    console.print(f"{counts['generated']} generated, {counts['skipped']} already stored; "
                  f"wrote {', '.join(result['formats'])} to {out}")
    typer.echo(json.dumps(result["metrics"]))


@generate_app.command()
def room(
    name: Annotated[str, typer.Argument(help="a chat room: spp, multiplex, ...")],
    out: Annotated[Path, typer.Option(help="folder for the JSONL, card and tables")],
    prompts: Annotated[Path | None, typer.Option(
        help='JSONL of {"prompt": "..."} (default: spp the trivia_n5 items, multiplex its '
             "question set)")] = None,
    n: Annotated[int | None, typer.Option(help="the first N prompts only")] = None,
    engine: Annotated[str | None, typer.Option("--engine", "-e",
                                               help="local | vllm | openai")] = None,
    model: Annotated[str | None, typer.Option("--model", "-m")] = None,
    verify: Annotated[bool, typer.Option(help="store UHead step scores")] = False,
    setting: Annotated[list[str] | None, typer.Option(
        "--set", help="room setting as key=value (JSON value), e.g. --set max_rounds=1")] = None,
    dataset: Annotated[str | None, typer.Option(
        "--name", help="dataset name in the store (default: <room>-<out folder name>)")] = None,
    executor: Annotated[str, typer.Option(
        help="local: this process, one engine | ray: Ray actors, one engine each")] = "local",
    ray_address: Annotated[str | None, typer.Option(
        help="a Ray cluster's head (host:port); default: start one on this machine")] = None,
    workers: Annotated[int, typer.Option(min=1, help="Ray workers (one engine each)")] = 2,
    gpus_per_worker: Annotated[float, typer.Option(min=0, help="GPUs per Ray worker")] = 0,
    lease_s: Annotated[float, typer.Option(
        min=1, help="Ray: seconds a dead worker's item stays leased before another takes it")]
    = 120.0,
) -> None:
    """One stored session per prompt through any chat room; rerun to resume after a kill."""
    if executor not in ("local", "ray"):
        raise ConfigError(f"unknown --executor {executor!r}: choose local or ray")
    from manyheads.models import make_engine
    from manyheads.orchestration.conversation import ChatOptions
    from manyheads.orchestration.harness.generate import export, generate_chat, load_prompts
    from manyheads.orchestration.registry import get_room
    from manyheads.storage.store import Store

    chosen = get_room(name)
    texts = load_prompts(prompts) if prompts is not None else default_prompts(name)
    texts = texts[:n] if n is not None else texts
    options = ChatOptions(verify=verify, config=parse_settings(setting or []))
    chosen.config(**options.config)  # a bad setting fails here, before the engine starts
    dataset = dataset or f"{name}-{out.resolve().name}"
    if executor == "ray":
        on_ray(chosen, texts, out=out, dataset=dataset, options=options, engine=engine,
               model=model, address=ray_address, workers=workers, gpus=gpus_per_worker,
               lease_s=lease_s)
        return
    with make_engine(engine, model) as llm, Store.open() as store:
        columns = (TextColumn(f"[bold]{name}"), BarColumn(), MofNCompleteColumn(),
                   TimeElapsedColumn())
        with Progress(*columns, console=console) as progress:
            task = progress.add_task("sessions", total=len(texts))
            counts = generate_chat(llm, store, chosen, texts, name=dataset, options=options,
                                   on_progress=lambda done: progress.update(task,
                                                                            completed=done))
        result = export(store, dataset, out)
    console.print(f"{counts['generated']} generated, {counts['skipped']} already stored; "
                  f"wrote {', '.join(result['formats'])} to {out}")
    typer.echo(json.dumps(result["metrics"]))


def on_ray(room, texts: list[str], *, out: Path, dataset: str, options, engine: str | None,
           model: str | None, address: str | None, workers: int, gpus: float,
           lease_s: float) -> None:
    """``generate room --executor ray``: one bar for the whole cluster, a line per worker."""
    from manyheads.orchestration.harness.generate import export
    from manyheads.orchestration.harness.ray_executor import generate_on_ray
    from manyheads.storage.store import Store

    columns = (TextColumn(f"[bold]{room.name}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("{task.fields[detail]}"), TimeElapsedColumn())
    with Progress(*columns, console=console) as progress:
        task = progress.add_task("sessions", total=len(texts), detail="starting workers")
        start: dict[str, int] = {}

        def show(state, elapsed: float) -> None:
            rate = (state.done - start.setdefault("done", state.done)) / elapsed * 3600
            progress.update(task, completed=state.done, detail=(
                f"failed {state.failed} · in flight {state.in_flight} · {rate:.0f} dialogues/h"))

        counts = generate_on_ray(room, texts, name=dataset, options=options, engine=engine,
                                 model=model, address=address, workers=workers,
                                 gpus_per_worker=gpus, lease_s=lease_s, on_progress=show)
    for tally in sorted(counts["tallies"], key=lambda t: t["worker"]):
        rate = tally["done"] / tally["busy_s"] * 3600 if tally["busy_s"] else 0.0
        console.print(f"  {tally['worker']}: {counts['workers'].get(tally['worker'], 0)} done in "
                      f"all, {tally['done']} this run ({rate:.0f}/h busy), "
                      f"{tally['failed']} failed, {tally['lost_leases']} lost leases"
                      + (", restarted" if tally.get("restarted") else ""))
    for error in counts["errors"]:
        console.print(f"  [red]{error}")
    with Store.open() as store:
        result = export(store, dataset, out)
    console.print(f"{counts['generated']} generated, {counts['skipped']} already stored, "
                  f"{counts['failed']} failed; wrote {', '.join(result['formats'])} to {out}")
    typer.echo(json.dumps(result["metrics"]))


def default_prompts(room: str) -> list[str]:
    if room == "spp":
        from manyheads.orchestration.rooms.spp.eval import item_prompt, load_items

        return [item_prompt("trivia_n5", item) for item in load_items("trivia_n5")]
    if room == "multiplex":
        from manyheads.orchestration.rooms.multiplex.eval import load_questions

        return [row["question"] for row in load_questions()]
    from manyheads.orchestration.registry import get_room

    example = get_room(room).example
    if not example:
        raise ConfigError(f"room {room!r} has no default prompts", hint="pass --prompts FILE")
    return [example]


def parse_settings(pairs: list[str]) -> dict[str, object]:
    """``key=value`` pairs; values are JSON when they parse (1, true, "x"), else strings."""
    settings: dict[str, object] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set {pair!r}: expected key=value")
        try:
            settings[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            settings[key.strip()] = value
    return settings

