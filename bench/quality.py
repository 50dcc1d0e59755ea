"""What a person reads: output quality of every built-in room on the embedded model, with the
utterance hygiene and the rooms' repetition control off ("before") and on ("after", the
defaults), both measured in the same run.

Each built-in room answers its packaged example (``Room.example``; the demo room speaks
``--demo-turns`` times) through ``generate_chat`` into a throw-away SQLite store, exactly as
``manyheads generate room`` makes a dataset, and its metrics are that dataset's
(``harness.generate.chat_quality``). ``--dialogues`` persuasion dialogues on the packaged CToMPersu
scenarios run as ``manyheads generate persuasion`` runs them (``metrics.summarise``).
"Before" sets ``MANYHEADS_HYGIENE=0`` (``agents.hygiene.enabled``): no repair, no resampling,
no penalties, no few-shot examples, only the flags a metric needs.

``--sweep-dialogues`` persuasion dialogues plus the demo example then run once per candidate of
``SWEEP`` (hygiene on) to back the rooms' ``SPEECH_PENALTIES`` and their few-shot examples with
numbers: how often hygiene had to cut a loop, repeated sentences across a dialogue, distinct-2
and length.

Writes ``bench/results/quality.json`` (per room before/after, the worst room after per target,
the targets and whether each is met, the sweep) and ``bench/results/quality.png``.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from unittest import mock

import torch
from rich.console import Console
from rich.progress import Progress
from rich.table import Table
from sqlalchemy import select

from manyheads.agents.hygiene import quality
from manyheads.agents.prompts import Prompts
from manyheads.models import Engine, make_engine
from manyheads.orchestration import room as room_module
from manyheads.orchestration.conversation import ChatOptions
from manyheads.orchestration.harness.generate import chat_quality, generate_chat, utterances
from manyheads.orchestration.registry import get_room
from manyheads.orchestration.rooms.persuasion.generate import payload
from manyheads.orchestration.rooms.persuasion.graph import PersuasionConfig, run_batch
from manyheads.orchestration.rooms.persuasion.metrics import summarise
from manyheads.orchestration.rooms.persuasion.scenarios import load_scenarios, package_scenarios
from manyheads.storage import Store
from manyheads.storage.models import DatasetItem

RESULTS = Path(__file__).parent / "results"
ROOMS = ("demo", "spp", "multiplex", "persuasion", "studio")
DIALOGUES = "persuasion dialogues"
METRICS = ("trimmed_rate", "mid_sentence_rate", "repeated_sentence_rate", "instruction_echo_rate",
           "invalid_name_rate", "distinct_1", "distinct_2", "mean_words", "empty_rate")
TARGETS = {"mid_sentence_rate": 0.01, "repeated_sentence_rate": 0.05,
           "instruction_echo_rate": 0.02, "invalid_name_rate": 0.0}  # each: at most this
SWEEP = [{"repetition_penalty": rp, "no_repeat_ngram_size": n, "examples": True}
         for n, rp in ((0, 1.0), (0, 1.1), (0, 1.2), (4, 1.1), (4, 1.2))]
SWEEP.append({"repetition_penalty": 1.1, "no_repeat_ngram_size": 4, "examples": False})
CHOICE = ("repetition_penalty", "no_repeat_ngram_size", "examples")


@contextmanager
def hygiene(on: bool):
    """Hygiene and repetition control on or off (``MANYHEADS_HYGIENE``) for the block."""
    with mock.patch.dict(os.environ, {"MANYHEADS_HYGIENE": "1" if on else "0"}):
        yield


@contextmanager
def examples(on: bool):
    """The rooms' few-shot exchanges (``examples.yaml``) shown or not for the block."""
    if on:
        yield
        return
    with mock.patch.object(Prompts, "examples", lambda self, role, **variables: []):
        yield


def room_items(engine: Engine, store: Store, name: str, phase: str, demo_turns: int,
               tick) -> list[dict[str, Any]]:
    """The dataset payloads of one room's example, generated as ``generate room`` does."""
    room = get_room(name)
    options = ChatOptions(config={"turns": demo_turns} if name == "demo" else {})
    result = generate_chat(engine, store, room, [room.example], name=f"{name}-{phase}",
                           options=options, on_progress=lambda _: tick())
    with store.reading() as db:
        return list(db.scalars(select(DatasetItem.payload).where(
            DatasetItem.dataset_id == result["dataset_id"])))


def dialogues(engine: Engine, n: int, config: PersuasionConfig, concurrency: int,
              tick) -> dict[str, Any]:
    """Persuasion metrics of ``n`` dialogues on the packaged scenarios."""
    records = load_scenarios(package_scenarios())
    items = [(f"{i:06d}", records[i % len(records)].scenario) for i in range(n)]
    done = run_batch(engine, items, config, concurrency=concurrency, on_done=lambda _: tick())
    return summarise([payload(s, config, int(s.key) % len(records), engine) for s in done])


def pick(metrics: dict[str, Any]) -> dict[str, Any]:
    return {"utterances": metrics.get("utterances", 0),
            **{k: metrics[k] for k in METRICS if k in metrics}}


def measure(engine: Engine, store: Store, phase: str, args, progress) -> dict[str, Any]:
    task = progress.add_task(f"{phase}: rooms", total=len(args.rooms))
    rows = {}
    for name in args.rooms:
        items = room_items(engine, store, name, phase, args.demo_turns,
                           lambda: progress.advance(task))
        rows[name] = pick(chat_quality(items))
    if args.dialogues:
        task = progress.add_task(f"{phase}: {DIALOGUES}", total=args.dialogues)
        rows[DIALOGUES] = pick(dialogues(engine, args.dialogues, args.persuasion,
                                         args.concurrency, lambda: progress.advance(task)))
    return rows


def sweep(engine: Engine, store: Store, args, progress) -> Iterator[dict[str, Any]]:
    """Each candidate (penalties, few-shot examples shown or not) on the demo example and
    ``--sweep-dialogues`` dialogues, hygiene on."""
    task = progress.add_task("penalty sweep", total=len(SWEEP))
    records = load_scenarios(package_scenarios())
    items = [(f"{i:06d}", records[i % len(records)].scenario)
             for i in range(args.sweep_dialogues)]
    for index, candidate in enumerate(SWEEP):
        penalties = {k: v for k, v in candidate.items() if k != "examples"}
        with (mock.patch.dict(room_module.SPEECH_PENALTIES, penalties, clear=True),
              examples(candidate["examples"])):
            demo = room_items(engine, store, "demo", f"sweep{index}", args.demo_turns,
                              lambda: None)
            done = run_batch(engine, items, args.persuasion, concurrency=args.concurrency)
        said = [u for p in demo for u in utterances(p)]
        turns = [[t.content for t in s.public_turns] for s in done]
        said += [(text, flags) for s, texts in zip(done, turns, strict=True)
                 for text, flags in zip(texts, s.hygiene, strict=False)]
        dialogues_ = [[t for t, _ in utterances(p)] for p in demo] + turns
        scores = quality(said, dialogues=dialogues_)
        progress.advance(task)
        yield {**candidate, "utterances": scores["utterances"],
               "looped_rate": round(sum("looped" in f for _, f in said) / len(said), 4),
               **{k: scores[k] for k in ("repeated_sentence_rate", "distinct_2",
                                         "mid_sentence_rate", "mean_words")}}


def best(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Fewest loops cut plus repeated sentences; ties to the higher distinct-2."""
    top = min(rows, key=lambda r: (round(r["looped_rate"] + r["repeated_sentence_rate"], 3),
                                   -r["distinct_2"]))
    return {k: top[k] for k in CHOICE}


def worst(rows: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Per target metric, the highest value over the rooms that have it, and which room."""
    found = {}
    for metric in TARGETS:
        have = [(r[metric], name) for name, r in rows.items() if metric in r and r["utterances"]]
        if metric == "invalid_name_rate":
            have = [(r[metric], name) for name, r in rows.items() if metric in r]
        if have:
            value, name = max(have)
            found[metric] = {"value": value, "room": name}
    return found


def chart(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rooms = [r for r in result["rooms"] if result["rooms"][r]["after"]["utterances"]]
    fig, axes = plt.subplots(2, 2, figsize=(12, 7))
    for axis, metric in zip(axes.flat, TARGETS, strict=True):
        xs = range(len(rooms))
        for shift, phase in ((-0.2, "before"), (0.2, "after")):
            axis.bar([x + shift for x in xs],
                     [result["rooms"][r][phase].get(metric, 0.0) for r in rooms], 0.4,
                     label=phase)
        axis.axhline(TARGETS[metric], color="red", linestyle="--", linewidth=1, label="target")
        axis.set_xticks(list(xs), [r.replace(" ", "\n") for r in rooms], fontsize=8)
        axis.set_title(metric)
    axes.flat[0].legend()
    fig.suptitle(f"Output quality on {result['model']}: hygiene and repetition control off/on")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def table(result: dict[str, Any]) -> Table:
    view = Table(title=f"quality on {result['engine']} ({result['model']}), before -> after")
    view.add_column("room")
    view.add_column("n")
    for metric in METRICS:
        view.add_column(metric.replace("_rate", "").replace("_", " "))
    for name, phases in result["rooms"].items():
        before, after = phases["before"], phases["after"]
        view.add_row(name, f"{before['utterances']}/{after['utterances']}",
                     *(f"{before[m]:g} -> {after[m]:g}" if m in after else "-" for m in METRICS))
    return view


def summary(engine: Engine, args, phases: dict[str, dict[str, Any]],
            penalty_rows: list[dict[str, Any]], elapsed: float) -> dict[str, Any]:
    rooms = {name: {"before": phases["before"][name], "after": phases["after"][name]}
             for name in phases["after"]}
    found = worst(phases["after"])
    return {
        "engine": engine.name, "model": engine.model_name,
        "settings": {"rooms": args.rooms, "dialogues": args.dialogues,
                     "demo_turns": args.demo_turns, "concurrency": args.concurrency,
                     "persuasion": args.persuasion.model_dump(), "threads": args.threads},
        "rooms": rooms,
        "worst_after": {m: v["value"] for m, v in found.items()},
        "worst_room": {m: v["room"] for m, v in found.items()},
        "targets": TARGETS,
        "met": {m: m in found and found[m]["value"] <= limit for m, limit in TARGETS.items()},
        "penalty_sweep": {"candidates": penalty_rows,
                          "best": best(penalty_rows) if penalty_rows else None,
                          "defaults": dict(room_module.SPEECH_PENALTIES),
                          "dialogues": args.sweep_dialogues, "demo_turns": args.demo_turns},
        "elapsed_s": round(elapsed, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--engine", default="local", choices=["local", "vllm", "openai"])
    parser.add_argument("--rooms", nargs="*", default=list(ROOMS), choices=ROOMS)
    parser.add_argument("--dialogues", type=int, default=60, help="persuasion dialogues")
    parser.add_argument("--demo-turns", type=int, default=6, help="demo speeches")
    parser.add_argument("--sweep-dialogues", type=int, default=8, help="0: no penalty sweep")
    parser.add_argument("--max-turns", type=int, default=3, help="persuader turns")
    parser.add_argument("--concurrency", type=int, default=16, help="dialogues in one batch")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    args.persuasion = PersuasionConfig(max_turns=args.max_turns)
    console = Console()
    if not console.is_terminal:  # a log file: room for every column
        console = Console(width=200)
    started = time.perf_counter()
    phases: dict[str, dict[str, Any]] = {}
    penalty_rows: list[dict[str, Any]] = []
    args.out.mkdir(parents=True, exist_ok=True)

    def save(engine: Engine) -> dict[str, Any]:
        """Everything measured so far: a run cut short still leaves its numbers."""
        result = summary(engine, args, phases, penalty_rows, time.perf_counter() - started)
        (args.out / "quality.json").write_text(json.dumps(result, indent=2) + "\n",
                                               encoding="utf-8")
        chart(result, args.out / "quality.png")
        return result

    with (make_engine(args.engine) as engine, tempfile.TemporaryDirectory() as folder,
          Store.open(f"sqlite:///{folder}/quality.db") as store, Progress(console=console) as bar):
        for phase, on in (("before", False), ("after", True)):
            with hygiene(on):
                phases[phase] = measure(engine, store, phase, args, bar)
        result = save(engine)
        for row in sweep(engine, store, args, bar) if args.sweep_dialogues else ():
            penalty_rows.append(row)
            result = save(engine)
    console.print(table(result))
    console.print({"worst_after": result["worst_after"], "met": result["met"],
                   "penalty_best": result["penalty_sweep"]["best"]})


if __name__ == "__main__":
    main()
