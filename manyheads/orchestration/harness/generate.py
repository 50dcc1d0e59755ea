"""Batch generation for any chat room (SPP, the multiplex panel...): one session per prompt.

Each prompt runs through the room's ``converse`` into its own stored session; the dataset item
that points at it is written only when the session is complete. A job killed mid-prompt leaves a
``running`` session that the rerun deletes before generating that prompt again, so the dataset
never holds a partial or a duplicated item. Prompts run one after another: each room already
batches its own agents' turns on the engine.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlalchemy import select

from manyheads.agents.hygiene import QUALITY_NOTE, quality
from manyheads.agents.names import is_person_name, same_person
from manyheads.errors import ConfigError, StorageError
from manyheads.models import Engine
from manyheads.orchestration.contract import Room
from manyheads.orchestration.conversation import ChatOptions
from manyheads.orchestration.harness.files import tabular
from manyheads.storage import ledger
from manyheads.storage import repository as repo
from manyheads.storage.models import Dataset, DatasetItem, Message
from manyheads.storage.store import Store


def load_prompts(path: str | Path) -> list[str]:
    """A JSONL file of ``{"prompt": "..."}`` records (a ``question`` or ``task`` key also works)."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise ConfigError(f"cannot read prompts file {path}: {exc.strerror}") from None
    prompts = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{path}:{number}: not JSON ({exc.msg})") from None
        text = next((record[k] for k in ("prompt", "question", "task")
                     if isinstance(record, dict) and isinstance(record.get(k), str)), None)
        if not text or not text.strip():
            raise ConfigError(f"{path}:{number}: needs a non-empty \"prompt\" string")
        prompts.append(text.strip())
    if not prompts:
        raise ConfigError(f"{path} holds no prompts")
    return prompts


def open_dataset(store: Store, name: str, room: Room, prompts: list[str], options: ChatOptions,
                 engine: Engine) -> tuple[int, set[str]]:
    """The dataset's id and the keys already complete, creating it on first use."""
    return open_named_dataset(store, name, room, prompts, options, engine=engine.name,
                              model=engine.model_name)


def open_named_dataset(store: Store, name: str, room: Room, prompts: list[str],
                       options: ChatOptions, *, engine: str, model: str) -> tuple[int, set[str]]:
    """``open_dataset`` for a caller that names the engine rather than holding one.

    Two drivers creating the same dataset at once: the loser of the race reads the winner's.
    """
    blob = json.dumps({"room": room.name, "prompts": prompts,
                       "options": options.model_dump(mode="json")}, sort_keys=True)
    digest = hashlib.sha256(blob.encode()).hexdigest()
    for attempt in range(2):
        with store.reading() as db:
            dataset = db.scalars(select(Dataset).where(Dataset.name == name)).one_or_none()
            if dataset is not None:
                if dataset.room != room.name or dataset.config.get("fingerprint") != digest:
                    raise ConfigError(f"dataset {name!r} exists with other prompts or settings",
                                      hint="pass another --name, or the same prompts and options")
                payloads = db.scalars(select(DatasetItem.payload).where(
                    DatasetItem.dataset_id == dataset.id)).all()
                return dataset.id, {p["key"] for p in payloads}
        try:
            created = store.create_dataset(name, room=room.name, config={
                "fingerprint": digest, "n": len(prompts),
                "options": options.model_dump(mode="json"), "engine": engine, "model": model})
        except StorageError:
            if attempt:
                raise
            continue  # another driver created it first (unique name): read theirs
        return created.id, set()
    raise AssertionError("unreachable")


def drop_partial(store: Store, room: Room, name: str, done: set[str]) -> int:
    """Delete the dataset's sessions that never became an item (a killed, interrupted or failed
    job's), whatever their status; returns how many."""
    stale = [s.id for s in store.list_sessions(room=room.name)
             if s.config.get("dataset") == name and s.config.get("key") not in done]
    for session_id in stale:
        store.delete_session(session_id)
    return len(stale)


def payload(key: str, prompt: str, messages: list[Message], engine: Engine) -> dict[str, Any]:
    said = [{"speaker": m.participant, "role": m.role, "content": m.content,
             "visibility": m.visibility, "meta": m.meta, "step_scores": m.step_scores}
            for m in messages]
    public = [m for m in messages if m.role == "assistant" and m.visibility == "public"]
    return {"key": key, "prompt": prompt, "final": public[-1].content if public else "",
            "messages": said, "engine": engine.name, "model": engine.model_name}


def generate_chat(engine: Engine, store: Store, room: Room, prompts: list[str], *, name: str,
                  options: ChatOptions | None = None,
                  on_progress: Callable[[int], None] | None = None) -> dict[str, Any]:
    """Generate (or finish) dataset ``name``: one room session per prompt."""
    options = options or ChatOptions()
    dataset_id, done = open_dataset(store, name, room, prompts, options, engine)
    dropped = drop_partial(store, room, name, done)
    generated = 0
    for index, prompt in enumerate(prompts):
        key = f"{index:06d}"
        if key in done:
            continue
        session = store.create_session(room.name, title=prompt[:80],
                                       config={"dataset": name, "key": key})
        room.converse(engine, store, session.id, prompt, options=options)
        with store.transaction() as db:
            messages = list(db.scalars(select(Message).where(Message.session_id == session.id)
                                       .order_by(Message.seq)))
            repo.add_dataset_item(db, dataset_id, session_id=session.id,
                                  payload=payload(key, prompt, messages, engine))
            repo.set_status(db, session.id, "completed")
        generated += 1
        if on_progress is not None:
            on_progress(len(done) + generated)
    return {"dataset_id": dataset_id, "skipped": len(done), "generated": generated,
            "dropped_partial": dropped}


def export(store: Store, name: str, out: str | Path) -> dict[str, Any]:
    """JSONL, Parquet, a Hugging Face ``datasets`` folder and a dataset card."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    with store.reading() as db:
        dataset = db.scalars(select(Dataset).where(Dataset.name == name)).one_or_none()
        if dataset is None:
            raise ConfigError(f"no dataset named {name!r}")
        room, config = dataset.room, dict(dataset.config)
        payloads = sorted(db.scalars(select(DatasetItem.payload).where(
            DatasetItem.dataset_id == dataset.id)).all(), key=lambda p: p["key"])
        workers = ledger.progress(db, dataset.id).workers  # empty for single-process runs
    with (out / f"{room}.jsonl").open("w", encoding="utf-8") as handle:
        for item in payloads:
            handle.write(json.dumps(item, ensure_ascii=False) + "\n")
    formats = ["jsonl", *tabular(payloads, out, room)]
    metrics = {"sessions": len(payloads),
               "messages_mean": round(sum(len(p["messages"]) for p in payloads)
                                      / max(len(payloads), 1), 2),
               **chat_quality(payloads)}
    if workers:
        metrics["workers"] = workers
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")
    (out / "README.md").write_text(card(name, room, config, metrics, formats), encoding="utf-8")
    return {"metrics": metrics, "formats": formats, "path": str(out)}


def utterances(item: dict[str, Any]) -> list[tuple[str, list[str]]]:
    """A session's free-text agent turns with their hygiene flags: the public messages that went
    through the hygiene step (notices, JSON answers and restated finals carry no flags)."""
    return [(m["content"], m["meta"]["hygiene"]) for m in item["messages"]
            if m["role"] == "assistant" and m["visibility"] == "public"
            and "hygiene" in (m["meta"] or {})]


def names_valid(item: dict[str, Any]) -> bool | None:
    """Whether the names the session's agents wrote (``meta["names"]`` of a message) are
    people's names, all different; None when the room wrote no names."""
    written = [n for m in item["messages"] for n in (m["meta"] or {}).get("names", [])]
    if not written:
        return None
    return all(map(is_person_name, written)) and not any(
        same_person(a, b) for i, a in enumerate(written) for b in written[i + 1:])


def chat_quality(payloads: list[dict[str, Any]]) -> dict[str, Any]:
    """``hygiene.quality`` over every session's utterances (repeats counted across a session's
    turns), plus the invalid-name rate where the room writes names."""
    said = [utterances(p) for p in payloads]
    metrics = dict(quality([u for s in said for u in s],
                           dialogues=[[text for text, _ in s] for s in said]))
    named = [v for v in map(names_valid, payloads) if v is not None]
    if named:
        metrics["invalid_name_rate"] = round(sum(not v for v in named) / len(named), 4)
    return metrics


def card(name: str, room: str, config: dict[str, Any], metrics: dict[str, Any],
         formats: list[str]) -> str:
    return "\n".join([
        f"# {name}", "",
        f"Sessions of the manyheads `{room}` room, one per prompt: every agent message in",
        "speaking order (with visibility, step scores and room metadata) and the final answer.",
        "",
        f"- Engine: {config.get('engine')}, model: {config.get('model')}",
        f"- Sessions: {metrics['sessions']} of {config.get('n')}",
        f"- Files: {', '.join(formats)}", "",
        "## Settings", "", "```json", json.dumps(config.get("options", {}), indent=2), "```", "",
        "## Counts and quality", "", QUALITY_NOTE, "", "```json", json.dumps(metrics, indent=2),
        "```", ""])
