"""``manyheads eval studio``: four-turn picture dialogues through the AutoStudio room, scored.

The dialogues (``data/studio/dialogues.jsonl``, written by us in the style of CMIGBench: stories
and edits that add, move, recolour, remove and refer back) name after every turn the subjects
that should be in the picture. Each dialogue runs as a stored session through ``converse``, the
same path a person takes, and is scored from what the store holds: layout validity (in bounds,
worst overlap), coverage of the expected subjects, and cross-turn consistency of each subject's
crops under a pluggable image embedding. A contact sheet PNG per dialogue shows its turns.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal

import typer
from PIL import Image
from pydantic import BaseModel, Field, ValidationError
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from manyheads.errors import ConfigError
from manyheads.models import Engine
from manyheads.orchestration.conversation import ChatOptions
from manyheads.orchestration.rooms.studio import ROOM
from manyheads.orchestration.rooms.studio.draw import (
    Embedding,
    contact_sheet,
    pixel_embedding,
    subject_consistency,
)
from manyheads.orchestration.rooms.studio.graph import StudioConfig
from manyheads.orchestration.rooms.studio.layout import Layout, Subject, coverage, layout_metrics

RESULTS = Path("bench/results/studio.json")


class DialogueTurn(BaseModel):
    text: str = Field(min_length=1, max_length=300)
    expect: list[str] = Field(default_factory=list, max_length=8)


class Dialogue(BaseModel):
    id: str = Field(min_length=1, max_length=40)
    kind: Literal["story", "edit"]
    turns: list[DialogueTurn] = Field(min_length=1, max_length=8)


def dialogue_file() -> Path:
    data = resources.files("manyheads.orchestration.rooms.studio.data")
    return Path(str(data / "dialogues.jsonl"))


def load_dialogues(path: Path | None = None) -> list[Dialogue]:
    """The dialogues in file order; a bad line is a ``ConfigError`` naming the file and line."""
    path = path or dialogue_file()
    dialogues = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            dialogues.append(Dialogue.model_validate_json(line))
        except ValidationError as exc:
            problem = exc.errors()[0]
            where = ".".join(str(p) for p in problem["loc"]) or "line"
            raise ConfigError(f"{path}:{number}: {where}: {problem['msg']}",
                              hint="each line is {id, kind, turns: [{text, expect}]}") from None
    return dialogues


def run_dialogue(engine: Engine, store: Any, dialogue: Dialogue, config: StudioConfig) -> str:
    """Every turn of a dialogue through the room's chat entry point; returns the session id."""
    session_id = None
    options = ChatOptions(config=config.model_dump(mode="json"))
    for turn in dialogue.turns:
        session_id = ROOM.converse(engine, store, session_id, turn.text, options=options)
    assert session_id is not None
    return session_id


def stored_turns(store: Any, session_id: str) -> list[tuple[Image.Image, Layout, list[Subject]]]:
    """Each turn's picture, layout and subjects, read back from the image artifacts."""
    images = sorted((a for a in store.load(session_id).artifacts if a.kind == "image"),
                    key=lambda a: a.meta["turn"])
    return [(Image.open(io.BytesIO(a.data)).convert("RGB"), Layout(**a.meta["layout"]),
             [Subject(**s) for s in a.meta["subjects"]]) for a in images]


def score_session(store: Any, session_id: str, dialogue: Dialogue,
                  embed: Embedding = pixel_embedding) -> dict[str, Any]:
    """Per-dialogue means over its turns, and the mean consistency over its subjects."""
    turns = stored_turns(store, session_id)
    layouts = [layout_metrics(layout, subjects) for _, layout, subjects in turns]
    covered = [coverage(layout, subjects, t.expect)
               for (_, layout, subjects), t in zip(turns, dialogue.turns, strict=True)]
    same = subject_consistency([(image, layout) for image, layout, _ in turns], embed)

    def mean(values: list[float]) -> float:
        return round(sum(values) / len(values), 4) if values else 1.0

    own = model_work(store, session_id, len(turns))
    return {"id": dialogue.id, "kind": dialogue.kind, "session": session_id,
            "model_first_pass": mean(own["first_pass"]), "repaired": mean(own["repaired"]),
            "turns": len(turns), "valid": mean([m["valid"] for m in layouts]),
            "in_bounds": mean([m["in_bounds"] for m in layouts]),
            "max_overlap": max((m["max_overlap"] for m in layouts), default=0.0),
            "coverage": mean(covered), "consistency": mean(list(same.values())),
            "subjects": len(turns[-1][2]) if turns else 0}


def model_work(store: Any, session_id: str, turns: int) -> dict[str, list[float]]:
    """Per turn: did the model's own first layout pass the supervisor, and was one repaired?

    Validity is guaranteed by the supervisor's repair, so these two say how much of it was the
    model's work rather than the room's deterministic safety net.
    """
    by_key = {m.idempotency_key: m for m in store.load(session_id).messages}
    first_pass, repaired = [], []
    for turn in range(1, turns + 1):
        layout = by_key.get(f"studio-{turn}-layout-0")
        check = by_key.get(f"studio-{turn}-check-0")
        own = bool(layout and layout.meta.get("from_model"))
        first_pass.append(float(own and check is not None and not check.meta.get("issues")))
        repaired.append(float(any(m.meta.get("repaired") for k, m in by_key.items()
                                  if k and k.startswith(f"studio-{turn}-check-"))))
    return {"first_pass": first_pass, "repaired": repaired}


def save_sheet(store: Any, session_id: str, dialogue: Dialogue, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    images = [image for image, _, _ in stored_turns(store, session_id)]
    path = folder / f"{dialogue.id}.png"
    contact_sheet(images, [t.text for t in dialogue.turns][:len(images)]).save(path)
    return path


def summarize(rows: list[dict[str, Any]]) -> dict[str, Any]:
    def mean(key: str) -> float:
        return round(sum(r[key] for r in rows) / len(rows), 4) if rows else 0.0

    return {"dialogues": len(rows), "valid": mean("valid"), "in_bounds": mean("in_bounds"),
            "max_overlap": max((r["max_overlap"] for r in rows), default=0.0),
            "coverage": mean("coverage"), "consistency": mean("consistency"),
            "model_first_pass": mean("model_first_pass"), "repaired": mean("repaired")}


def run_eval(engine: Engine, store: Any, out: Path, *, config: StudioConfig | None = None,
             limit: int | None = None,
             on_item: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Run and score the first ``limit`` dialogues; contact sheets go to ``out``."""
    config = config or StudioConfig()
    rows = []
    for dialogue in load_dialogues()[:limit]:
        session_id = run_dialogue(engine, store, dialogue, config)
        row = score_session(store, session_id, dialogue)
        row["sheet"] = str(save_sheet(store, session_id, dialogue, out))
        rows.append(row)
        if on_item is not None:
            on_item(row)
    return {**summarize(rows), "config": config.model_dump(mode="json"), "rows": rows}


def results_table(summary: dict[str, Any]) -> Table:
    table = Table(title=f"AutoStudio eval ({summary['dialogues']} dialogues)")
    for column in ("dialogue", "kind", "valid", "in bounds", "max overlap", "coverage",
                   "consistency", "model 1st pass", "repaired"):
        table.add_column(column, justify="left" if column in ("dialogue", "kind") else "right")
    for row in [*summary["rows"], {**summary, "id": "mean", "kind": ""}]:
        table.add_row(row["id"], row["kind"], f"{row['valid']:.2f}", f"{row['in_bounds']:.2f}",
                      f"{row['max_overlap']:.2f}", f"{row['coverage']:.2f}",
                      f"{row['consistency']:.3f}", f"{row['model_first_pass']:.2f}",
                      f"{row['repaired']:.2f}")
    return table


def studio_command(
        limit: Annotated[int | None, typer.Option(help="the first N dialogues only")] = None,
        engine: Annotated[str | None, typer.Option(help="local | vllm | openai")] = None,
        model: Annotated[str | None, typer.Option(help="model name, folder or .gguf")] = None,
        out: Annotated[Path, typer.Option(help="folder for the contact sheets")]
        = Path("studio-eval"),
        json_out: Annotated[Path, typer.Option("--json", help="summary JSON")] = RESULTS,
        max_tokens: Annotated[int, typer.Option(help="per structured agent answer")] = 192,
        max_rounds: Annotated[int, typer.Option(help="supervisor rounds at most")] = 2,
        db: Annotated[str | None, typer.Option(help="store URL (default: the home store)")]
        = None) -> None:
    """Run the AutoStudio dialogues, print a table, store an eval run, write JSON and sheets."""
    from manyheads.models import make_engine
    from manyheads.storage import Store

    console = Console()
    config = StudioConfig(max_tokens=max_tokens, max_rounds=max_rounds)
    total = len(load_dialogues()[:limit])
    with console.status("starting the engine..."):
        llm = make_engine(engine, model)
    with llm, Store.open(db) as store, Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
            TimeElapsedColumn(), console=console) as progress:
        bar = progress.add_task("studio dialogues", total=total)
        summary = run_eval(llm, store, out, config=config, limit=limit,
                           on_item=lambda row: progress.advance(bar))
        summary |= {"model": llm.model_name, "engine": llm.name}
        store.record_eval_run("studio", room="studio", metrics=summary)
    json_out.parent.mkdir(parents=True, exist_ok=True)
    json_out.write_text(json.dumps(summary, indent=2) + "\n")
    console.print(results_table(summary))
    console.print(f"contact sheets in {out}/, summary in {json_out}")
