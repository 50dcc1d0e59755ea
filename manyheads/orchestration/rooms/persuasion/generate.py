"""Batch generation of a persuasion dialogue dataset: resumable in SQL, exported as files.

Every finished dialogue is written in ONE transaction (its session, messages and dataset item),
so a job killed at any moment leaves each dialogue either wholly stored or not at all. A rerun
with the same dataset name skips the stored keys and generates the rest; a rerun with other
scenarios or settings under the same name is refused rather than mixed in.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlalchemy import select

from manyheads.agents.hygiene import QUALITY_NOTE
from manyheads.agents.names import valid_pair
from manyheads.errors import ConfigError
from manyheads.models import Engine
from manyheads.orchestration.harness.files import tabular
from manyheads.orchestration.rooms.persuasion.graph import (
    DialogueState,
    PersuasionConfig,
    run_batch,
)
from manyheads.orchestration.rooms.persuasion.metrics import (
    leaks,
    public_texts,
    summarise,
    tom_accuracy,
    tom_scores,
)
from manyheads.orchestration.rooms.persuasion.scenarios import ScenarioRecord
from manyheads.storage import repository as repo
from manyheads.storage.models import Dataset, DatasetItem
from manyheads.storage.store import Store

ROOM = "persuasion"
JSONL = "persuasion.jsonl"


def fingerprint(records: list[ScenarioRecord], config: PersuasionConfig, n: int) -> str:
    """What must match for a rerun to continue a dataset: the scenarios, settings and size."""
    blob = json.dumps({"scenarios": [r.scenario.model_dump(mode="json") for r in records],
                       "config": config.model_dump(mode="json"), "n": n}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def open_dataset(store: Store, name: str, records: list[ScenarioRecord],
                 config: PersuasionConfig, n: int, engine: Engine) -> tuple[int, set[str]]:
    """The dataset's id and the keys already stored, creating it on first use."""
    digest = fingerprint(records, config, n)
    with store.reading() as db:
        dataset = db.scalars(select(Dataset).where(Dataset.name == name)).one_or_none()
        if dataset is not None:
            if dataset.room != ROOM or dataset.config.get("fingerprint") != digest:
                raise ConfigError(f"dataset {name!r} exists with other scenarios or settings",
                                  hint="pass another --name, or the same scenarios and options")
            keys = db.scalars(select(DatasetItem.payload).where(
                DatasetItem.dataset_id == dataset.id)).all()
            return dataset.id, {payload["key"] for payload in keys}
    created = store.create_dataset(name, room=ROOM, config={
        "fingerprint": digest, "n": n, "scenarios": len(records),
        "persuasion": config.model_dump(mode="json"), "double_blind": config.double_blind,
        "engine": engine.name, "model": engine.model_name})
    return created.id, set()


def payload(state: DialogueState, config: PersuasionConfig, scenario_index: int,
            engine: Engine) -> dict[str, Any]:
    """A CToMPersu record (scenario + dialog) plus per-turn ToM, strategies and checks."""
    scenario = state.scenario
    public = public_texts(state.turns, state.tom)
    scores = [tom_scores(estimate, scenario) for estimate in state.tom]
    return {
        "key": state.key,
        "scenario_index": scenario_index,
        "scenario": scenario.model_dump(mode="json"),
        "dialog": [f"{'persuader' if t.speaker == scenario.persuader else 'persuadee'}: "
                   f"{t.content}" for t in state.public_turns],
        "outcome": state.outcome,
        "decisions": state.decisions,
        "persuader_turns": state.persuader_turns,
        "tom": [estimate.model_dump(mode="json") for estimate in state.tom],
        "strategies": [{"turn": i, "target": e.target, "method": e.method}
                       for i, e in enumerate(state.tom)],
        "tom_scores": scores,
        "tom_accuracy": [tom_accuracy(s) for s in scores],
        "tom_fallbacks": state.tom_fallbacks,
        "leaks": sum(len(leaks(prompt, scenario, public)) for prompt in state.persuader_prompts),
        "double_blind": config.double_blind,
        "hygiene": state.hygiene,
        "names_valid": valid_pair(scenario.persuader, scenario.persuadee)
        if scenario.drafted else None,
        "engine": engine.name,
        "model": engine.model_name,
    }


def save(store: Store, dataset_id: int, state: DialogueState, item: dict[str, Any]) -> None:
    """Session, messages and dataset item in one transaction: all of a dialogue or none."""
    scenario = state.scenario
    with store.transaction() as db:
        session = repo.create_session(db, room=ROOM, title=scenario.tag or scenario.goal,
                                      config={"key": state.key, "dataset_id": dataset_id},
                                      status="completed")
        repo.add_participant(db, session.id, name=scenario.persuader, role="persuader")
        repo.add_participant(db, session.id, name=scenario.persuadee, role="persuadee",
                             spec={"hidden": {"preventive": scenario.preventive.model_dump(),
                                              "generative": scenario.generative.model_dump()}})
        estimates = iter(enumerate(state.tom))
        for turn in state.turns:
            if turn.speaker == scenario.persuader:
                index, estimate = next(estimates)
                repo.append_message(db, session.id, role="assistant", participant=turn.speaker,
                                    content=estimate.model_dump_json(), visibility="private",
                                    visible_to=turn.speaker, meta={"kind": "tom", "turn": index})
            repo.append_message(db, session.id, role="assistant", participant=turn.speaker,
                                content=turn.content, visibility=turn.visibility)
        repo.add_dataset_item(db, dataset_id, payload=item, session_id=session.id)


def generate_persuasion(engine: Engine, store: Store, records: list[ScenarioRecord], *,
                        name: str, n: int, config: PersuasionConfig, concurrency: int = 8,
                        on_progress: Callable[[int], None] | None = None) -> dict[str, Any]:
    """Generate (or finish) dataset ``name``: ``n`` dialogues cycling over ``records``.

    Returns ``{"dataset_id", "skipped", "generated"}``; ``on_progress`` gets each new count.
    """
    if n < 1:
        raise ConfigError(f"--n must be at least 1, not {n}")
    dataset_id, done = open_dataset(store, name, records, config, n, engine)
    todo = [(f"{i:06d}", records[i % len(records)].scenario) for i in range(n)
            if f"{i:06d}" not in done]
    generated = 0
    if on_progress is not None:
        on_progress(len(done))

    def finished(state: DialogueState) -> None:
        nonlocal generated
        index = int(state.key) % len(records)
        save(store, dataset_id, state, payload(state, config, index, engine))
        generated += 1
        if on_progress is not None:
            on_progress(len(done) + generated)

    run_batch(engine, todo, config, concurrency=concurrency, on_done=finished)
    return {"dataset_id": dataset_id, "skipped": len(done), "generated": generated}


def dataset_items(store: Store, name: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """A dataset's config and its payloads in key order."""
    with store.reading() as db:
        dataset = db.scalars(select(Dataset).where(Dataset.name == name)).one_or_none()
        if dataset is None:
            raise ConfigError(f"no dataset named {name!r}")
        payloads = db.scalars(select(DatasetItem.payload).where(
            DatasetItem.dataset_id == dataset.id)).all()
        return dict(dataset.config), sorted(payloads, key=lambda p: p["key"])


def export(store: Store, name: str, out: str | Path) -> dict[str, Any]:
    """Write JSONL, Parquet, an HF ``datasets`` folder, metrics.json and the README card."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    config, payloads = dataset_items(store, name)
    with (out / JSONL).open("w", encoding="utf-8") as handle:
        for item in payloads:
            handle.write(json.dumps(item, ensure_ascii=False) + "\n")
    metrics = summarise(payloads)
    formats = ["jsonl", *tabular(payloads, out, ROOM)]
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")
    (out / "README.md").write_text(card(name, config, metrics, formats), encoding="utf-8")
    return {"metrics": metrics, "formats": formats, "path": str(out)}



def card(name: str, config: dict[str, Any], metrics: dict[str, Any], formats: list[str]) -> str:
    """The dataset card: where the data came from, how it was made, what it measures."""
    blind = "yes" if config.get("double_blind", True) else (
        "NO: the persuader saw the observer's scores of its guesses (feedback mode)")
    lines = [
        f"# {name}",
        "",
        "Persuasion dialogues generated by the manyheads `persuasion` room. A persuader infers",
        "the persuadee's hidden beliefs and desires (Theory of Mind) from the dialogue alone,",
        "picks a target and method each turn, and argues; the persuadee answers from its hidden",
        "mental state and agrees, continues or refuses. Scenarios follow the CToMPersu format",
        "(DingyiZhang/ToMMA-CToMPersu, Apache-2.0).",
        "",
        f"- Double-blind: {blind}",
        f"- Engine: {config.get('engine')}, model: {config.get('model')}",
        f"- Dialogues: {metrics.get('dialogues', 0)} of {config.get('n')} "
        f"over {config.get('scenarios')} scenarios",
        f"- Files: {', '.join(formats)} (load the folder with `datasets.load_from_disk`)",
        "",
        "## Settings",
        "",
        "```json",
        json.dumps(config.get("persuasion", {}), indent=2),
        "```",
        "",
        "## Metrics",
        "",
        "ToM accuracy is the MiniLM cosine of each guessed belief/desire with the hidden one",
        "(\"unknown\" scores 0; hidden \"none\" fields are not scored). Leaks count hidden",
        "belief/desire text found in persuader prompts outside the public dialogue.",
        "",
        QUALITY_NOTE,
        "",
        "```json",
        json.dumps(metrics, indent=2),
        "```",
        "",
    ]
    return "\n".join(lines)
