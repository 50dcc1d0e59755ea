"""``manyheads eval multiplex``: the three multiplex modes over our question set, scored by PDS.

Each (mode, question) pair is one JSON line in ``--out`` (the final answer, the panel's turns, its
PDS, entropy and sentiment); pairs already there are skipped, so an interrupted run resumes. The
summary per mode is the mean PDS entropy of the answers, the pooled share of labelled sentences
per perspective, and the mean VADER sentiment (of whole answers, and per perspective). It is
printed as a table, recorded as an eval run in the store, and written as JSON plus a bar chart.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from functools import cache
from importlib import resources
from pathlib import Path
from statistics import mean
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from manyheads.errors import ConfigError
from manyheads.models import Engine
from manyheads.orchestration.harness.files import read_jsonl
from manyheads.orchestration.rooms.multiplex.graph import MODES, MultiplexConfig, Panel, ask
from manyheads.orchestration.rooms.multiplex.pds import entropy_pct, score

RESULTS = Path("bench/results")
QUESTION_FIELDS = ("id", "category", "question")
console = Console()


@cache
def load_questions() -> tuple[dict[str, str], ...]:
    """The shipped educational questions (``data/multiplex/questions.jsonl``), in file order."""
    path = Path(str(resources.files("manyheads.orchestration.rooms.multiplex.data")
                    / "questions.jsonl"))
    rows = tuple({k: row[k] for k in QUESTION_FIELDS} for row in read_jsonl(path, QUESTION_FIELDS))
    if len({r["id"] for r in rows}) != len(rows):
        raise ConfigError(f"{path}: question ids must be unique")
    return rows


def pick(limit: int | None = None) -> list[dict[str, str]]:
    """The first ``limit`` questions taken round-robin over categories, so few cover many."""
    by_category: dict[str, list[dict[str, str]]] = {}
    for question in load_questions():
        by_category.setdefault(question["category"], []).append(question)
    columns = list(by_category.values())
    ordered = [column[i] for i in range(max(map(len, columns))) for column in columns
               if i < len(column)]
    return ordered[:limit]


def parse_modes(text: str) -> list[str]:
    modes = [m.strip() for m in text.split(",") if m.strip()]
    unknown = [m for m in modes if m not in MODES]
    if unknown or not modes:
        raise ConfigError(f"unknown mode(s) {', '.join(unknown) or '(none)'}: "
                          f"choose from {', '.join(MODES)}")
    return modes


def run_item(engine: Engine, question: dict[str, str], config: MultiplexConfig,
             panel: Panel) -> dict[str, Any]:
    """One mode on one question, with the PDS of its answer (MiniLM classifier)."""
    started = time.perf_counter()
    result = ask(engine, question["question"], config)
    pds = score(result.synthesis, panel.perspectives())
    turns = [{"stage": t["meta"]["stage"], "speaker": t["speaker"], "content": t["content"],
              "tradition": t["meta"].get("tradition", "")} for t in result.transcript]
    made = result.transcript[-1]["meta"].get("synthesis", {})
    return {"mode": config.mode, **question, "final": result.final, "sources": result.sources,
            "synthesis": result.synthesis, "made": made,
            "panel": [t for t in turns if t["stage"] != "final"],
            **pds.model_dump(), "elapsed_s": round(time.perf_counter() - started, 2)}


def run_eval(engine: Engine, questions: Sequence[dict[str, str]], out: Path, *,
             modes: Sequence[str], config: MultiplexConfig, panel: Panel,
             on_item: Callable[[dict[str, Any], bool], None] | None = None
             ) -> list[dict[str, Any]]:
    """Every mode on every question, resuming from ``out``; the rows of this run's pairs.

    ``on_item(row, fresh)`` is called once per pair, ``fresh`` False for one found in ``out``.
    """
    done: dict[tuple[str, str], dict[str, Any]] = {}
    if out.exists():
        for row in read_jsonl(out, ("mode", "id", "final", "shares", "entropy")):
            done[(row["mode"], row["id"])] = {k: v for k, v in row.items() if k != "_line"}
    out.parent.mkdir(parents=True, exist_ok=True)
    rows = []
    for mode in modes:
        mode_config = config.model_copy(update={"mode": mode})
        for question in questions:
            row, fresh = done.get((mode, question["id"])), False
            if row is None:
                row, fresh = run_item(engine, question, mode_config, panel), True
                with out.open("a", encoding="utf-8") as handle:
                    handle.write(json.dumps(row) + "\n")
            rows.append(row)
            if on_item is not None:
                on_item(row, fresh)
    return rows


def summarize(rows: Sequence[dict[str, Any]], names: Sequence[str]) -> dict[str, Any]:
    """Per mode: mean answer entropy, pooled perspective shares, mean sentiments."""
    modes: dict[str, Any] = {}
    for mode in dict.fromkeys(r["mode"] for r in rows):
        mine = [r for r in rows if r["mode"] == mode]
        counts = {n: sum(r["counts"].get(n, 0) for r in mine) for n in names}
        total = sum(counts.values())
        shares = {n: round(c / total, 4) if total else 0.0 for n, c in counts.items()}
        per_perspective = {n: round(mean(values), 4) for n in names
                           if (values := [r["sentiment_by_perspective"][n] for r in mine
                                          if n in r["sentiment_by_perspective"]])}
        made = {key: sum(r.get("made", {}).get(key, 0) for r in mine)
                for key in ("drafted", "extracted", "overview")}
        modes[mode] = {"items": len(mine),
                       "pds_entropy": round(mean(r["entropy"] for r in mine), 2),
                       "pooled_entropy": entropy_pct(list(shares.values()), len(names)),
                       "labelled_sentences": total,
                       "sentiment": round(mean(r["sentiment"] for r in mine), 4),
                       "sentiment_by_perspective": per_perspective,
                       "shares": shares,
                       **({"synthesis": made} if any(made.values()) else {}),
                       "elapsed_s": round(sum(r.get("elapsed_s", 0.0) for r in mine), 1)}
    return {"perspectives": list(names), "modes": modes}


def summary_table(summary: dict[str, Any]) -> Table:
    """Modes as columns (there are few), metrics and perspective shares as rows."""
    modes = summary["modes"]
    table = Table(title="Multiplex eval: PDS entropy and perspective shares (%), sentiment")
    table.add_column("")
    for mode in modes:
        table.add_column(mode, justify="right")
    rows = [("items", lambda m: str(m["items"])),
            ("PDS entropy (mean)", lambda m: f"{m['pds_entropy']:.1f}"),
            ("PDS entropy (pooled)", lambda m: f"{m['pooled_entropy']:.1f}"),
            ("labelled sentences", lambda m: str(m["labelled_sentences"])),
            ("sentiment (VADER)", lambda m: f"{m['sentiment']:+.2f}")]
    for label, cell in rows:
        table.add_row(label, *(cell(stats) for stats in modes.values()))
    for name in summary["perspectives"]:
        table.add_row(f"share: {name}", *(f"{100 * stats['shares'][name]:.0f}"
                                          for stats in modes.values()))
    return table


def write_chart(summary: dict[str, Any], path: Path) -> None:
    """Grouped bars: the share of each perspective, one colour per mode."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names, modes = summary["perspectives"], list(summary["modes"])
    width = 0.8 / max(len(modes), 1)
    fig, axis = plt.subplots(figsize=(max(6.0, 1.2 * len(names)), 4))
    for i, mode in enumerate(modes):
        stats = summary["modes"][mode]
        axis.bar([x + i * width for x in range(len(names))],
                 [100 * stats["shares"][n] for n in names], width,
                 label=f"{mode} (entropy {stats['pds_entropy']:.0f}%)")
    axis.set_xticks([x + width * (len(modes) - 1) / 2 for x in range(len(names))],
                    [n.split()[0] for n in names], rotation=20)
    axis.set_ylabel("share of labelled sentences (%)")
    axis.set_title("Perspective distribution per mode")
    axis.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_results(summary: dict[str, Any], folder: Path) -> tuple[Path, Path]:
    """``multiplex.json`` and ``multiplex.png`` in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    data, chart = folder / "multiplex.json", folder / "multiplex.png"
    data.write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    write_chart(summary, chart)
    return data, chart


def multiplex(
        limit: Annotated[int | None, typer.Option(help="the first N questions (round-robin "
                                                       "over categories)")] = None,
        modes: Annotated[str, typer.Option(help="comma-separated modes")] = ",".join(MODES),
        engine: Annotated[str | None, typer.Option(help="local | vllm | openai")] = None,
        model: Annotated[str | None, typer.Option(help="model name, folder or .gguf")] = None,
        revise: Annotated[bool, typer.Option(help="panel: one revise round")] = False,
        max_tokens: Annotated[int, typer.Option(help="per final answer")] = 192,
        member_tokens: Annotated[int, typer.Option(help="per panel member")] = 96,
        panel: Annotated[Path | None, typer.Option(help="panel YAML/JSON")] = None,
        out: Annotated[Path, typer.Option(help="per-item JSONL; resumed if present")]
        = Path("multiplex.jsonl"),
        results: Annotated[Path, typer.Option(help="folder for multiplex.json/.png")] = RESULTS,
        db: Annotated[str | None, typer.Option(help="store URL (default: the home store)")]
        = None) -> None:
    """Run baseline, contextual and panel answers, score their PDS, store and chart them."""
    from manyheads.models import make_engine
    from manyheads.storage import Store

    chosen = parse_modes(modes)
    config = MultiplexConfig(revise=revise, max_tokens=max_tokens, member_tokens=member_tokens,
                             panel_file=str(panel) if panel else None)
    the_panel, questions = config.panel(), pick(limit)
    with console.status("starting the engine..."):
        llm = make_engine(engine, model)
    with llm, Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                       TimeElapsedColumn(), console=console) as progress:
        bar = progress.add_task("multiplex", total=len(questions) * len(chosen))
        rows = run_eval(llm, questions, out, modes=chosen, config=config, panel=the_panel,
                        on_item=lambda row, fresh: progress.update(
                            bar, advance=1, description=f"multiplex / {row['mode']}"))
    summary = summarize(rows, list(the_panel.perspectives()))
    summary |= {"model": llm.model_name, "engine": llm.name, "questions": len(questions),
                "revise": revise, "outputs": str(out)}
    with Store.open(db) as store:
        store.record_eval_run(f"multiplex/{'+'.join(chosen)}", room="multiplex", metrics=summary)
    data, chart = write_results(summary, results)
    console.print(summary_table(summary))
    console.print(f"wrote {data} and {chart}")
