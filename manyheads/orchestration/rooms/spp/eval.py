"""The SPP paper's four tasks, its metrics, and one harness that runs SPP and the baselines alike.

Every method answers a task item through the same ``ask(prompt) -> text`` call, so the methods
differ only in how they answer, never in how the item is put or scored. Runs are resumable: one
JSON line per finished item (input, raw output, parsed answer, score), and items already in the
file are skipped, so an interrupted run (a crash, a killed laptop) loses at most one item.

Metrics follow the paper (see ``data/spp/PROVENANCE.md``): trivia counts questions with any
alias as a case-insensitive substring of the story; codenames counts target words among the
guesser's comma-separated guesses; a logic grid answer is right when it names the target house
(digit or word) and no other house.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

from manyheads.agents.prompts import Prompts
from manyheads.errors import ConfigError
from manyheads.models import Engine, SamplingParams
from manyheads.orchestration.harness.files import read_jsonl
from manyheads.orchestration.rooms.spp.graph import SppConfig, solve

PROMPTS = Prompts(__package__)

METHODS = ("standard", "cot", "self_refine", "spp")
MODES = ("single", "multi")
NUMBER_WORDS = {"1": "one", "2": "two", "3": "three", "4": "four", "5": "five", "6": "six"}
Ask = Callable[[str], str]


# -- metrics ------------------------------------------------------------------------------------
def trivia_score(story: str, answers: list[list[str]]) -> float:
    """Share of questions whose answer (any alias) appears in the story, ignoring case."""
    text = story.lower()
    hits = sum(any(alias.lower() in text for alias in aliases) for aliases in answers)
    return hits / len(answers)


def codenames_guesses(text: str) -> list[str]:
    """The guesser's words: after the last "Guesses:" label if there is one, comma-separated."""
    labelled = re.split(r"guess(?:es)?\s*:", text, flags=re.IGNORECASE)[-1]
    words = (re.sub(r"[^a-z' -]", " ", part.lower()) for part in re.split(r"[,\n]", labelled))
    return [w for w in (" ".join(part.split()).strip(" '-") for part in words) if w]


def codenames_score(text: str, targets: list[str]) -> float:
    """Share of target words among the guesses (whole guesses, so "kissing" is not "kiss")."""
    guesses = set(codenames_guesses(text))
    return sum(t.lower() in guesses for t in targets) / len(targets)


def final_answer(text: str) -> str:
    """What follows the last "answer:"/"answer is" in the text, else the whole text."""
    parts = re.split(r"answer\s*(?::|is\b)", text, flags=re.IGNORECASE)
    return parts[-1].strip() if len(parts) > 1 else text.strip()


def houses_named(text: str, houses: list[str]) -> list[str]:
    """Which house numbers the text names, as a digit or a word ("2" or "two")."""
    return [h for h in houses if re.search(rf"\b(?:{h}|{NUMBER_WORDS.get(h, h)})\b", text,
                                           flags=re.IGNORECASE)]


def logic_grid_score(text: str, target: str, houses: list[str]) -> float:
    """1.0 when the final answer names the target house and no other house number, else 0.0."""
    named = houses_named(final_answer(text), houses)
    return float(named == [target])


# -- tasks ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Task:
    name: str
    file: str
    max_tokens: int  # for one answer; the story tasks need room to weave in every answer


TASKS = {task.name: task for task in (
    Task("trivia_n5", "trivia_creative_writing_100_n_5.jsonl", 160),
    Task("trivia_n10", "trivia_creative_writing_100_n_10.jsonl", 160),
    Task("codenames", "codenames_50.jsonl", 48),
    Task("logic_grid", "logic_grid_puzzle_200.jsonl", 96),
)}


def get_task(name: str) -> Task:
    if name not in TASKS:
        raise ConfigError(f"unknown task {name!r}: choose one of {', '.join(TASKS)}")
    return TASKS[name]


@cache
def load_items(task: str) -> tuple[dict[str, Any], ...]:
    """The task's items in file order; trivia rows have no ``idx``, so the line number is it."""
    path = resources.files("manyheads.orchestration.rooms.spp.data") / get_task(task).file
    lines = path.read_text(encoding="utf-8").splitlines()
    return tuple({"idx": i, **json.loads(line)} for i, line in enumerate(lines) if line.strip())


def item_prompt(task: str, item: dict[str, Any]) -> str:
    if task.startswith("trivia"):
        return PROMPTS.render("trivia", topic=item["topic"], questions=item["questions"])
    if task == "logic_grid":
        return PROMPTS.render("logic_grid", puzzle=item["inputs"])
    return PROMPTS.render("codenames_spymaster", words=item["word_list"],
                  targets=item["target_words"])


def clue_word(text: str, board: list[str]) -> str:
    """The spymaster's clue: the word after the last "Clue:", else its first non-board word."""
    labelled = re.split(r"clue\s*:", text, flags=re.IGNORECASE)[-1]
    words = [w for w in re.findall(r"[A-Za-z]+", labelled) if w.lower() not in board]
    return words[0].lower() if words else "link"


def parse_output(task: str, output: str) -> Any:
    """The part of an output that the metric reads, stored beside the score for inspection."""
    if task == "codenames":
        return codenames_guesses(output)
    if task == "logic_grid":
        return final_answer(output)
    return output.strip()


def score_output(task: str, item: dict[str, Any], output: str) -> float:
    if task.startswith("trivia"):
        return trivia_score(output, item["answers"])
    if task == "codenames":
        return codenames_score(output, item["target_words"])
    houses = item.get("multiple_choice_targets") or list(NUMBER_WORDS)
    return logic_grid_score(output, item["targets"][0], houses)


def run_item(task: str, item: dict[str, Any], ask: Ask) -> dict[str, Any]:
    """Put one item to a method; codenames takes a spymaster call, then a guesser call."""
    prompt = item_prompt(task, item)
    trace: dict[str, Any] = {}
    if task == "codenames":
        spymaster = ask(prompt)
        clue = clue_word(spymaster, item["word_list"])
        trace = {"spymaster_input": prompt, "spymaster": spymaster, "clue": clue}
        prompt = PROMPTS.render("codenames_guesser", words=item["word_list"], clue=clue,
                        count=len(item["target_words"]))
    output = ask(prompt)
    return {"idx": item["idx"], "input": prompt, "output": output,
            "parsed": parse_output(task, output), "score": score_output(task, item, output),
            **({"trace": trace} if trace else {})}


# -- methods ----------------------------------------------------------------------------------
def check_method(method: str, mode: str = "multi") -> None:
    if method not in METHODS:
        raise ConfigError(f"unknown method {method!r}: choose one of {', '.join(METHODS)}")
    if mode not in MODES:
        raise ConfigError(f"unknown mode {mode!r}: choose one of {', '.join(MODES)}")


def make_ask(engine: Engine, method: str, *, mode: str = "multi", max_tokens: int = 160,
             spp_config: SppConfig | None = None) -> Ask:
    """``ask(prompt) -> answer`` for one method; self-refine does one feedback round."""
    check_method(method, mode)
    params = SamplingParams(max_tokens=max_tokens)

    def once(key: str, **variables: str) -> str:
        message = {"role": "user", "content": PROMPTS.render(key, **variables)}
        return engine.chat([[message]], params)[0].text.strip()

    def ask(prompt: str) -> str:
        if method == "spp":
            config = spp_config or SppConfig(mode=mode, max_tokens=max_tokens)
            return solve(engine, prompt, config).final
        if method == "self_refine":
            answer = once("standard", task=prompt)
            feedback = once("self_refine_feedback", task=prompt, answer=answer)
            return once("self_refine_revise", task=prompt, answer=answer, feedback=feedback)
        return once(method, task=prompt)

    return ask


# -- runs -------------------------------------------------------------------------------------

def check_row(path: Path, task: str, row: dict[str, Any]) -> dict[str, Any]:
    """The task item a row answers; an unknown idx or a non-text output names the line."""
    items = {item["idx"]: item for item in load_items(task)}
    where = f"{path}:{row['_line']}"
    if not isinstance(row["idx"], int) or row["idx"] not in items:
        raise ConfigError(f"{where}: idx {row['idx']!r} is not an item of task {task!r}")
    if not isinstance(row["output"], str):
        raise ConfigError(f"{where}: output must be a string")
    return items[row["idx"]]


def summarize(task: str, method: str, mode: str | None, rows: list[dict[str, Any]]
              ) -> dict[str, Any]:
    """Mean score in percent over the rows, with what produced it and the time it took."""
    score = 100 * sum(r["score"] for r in rows) / len(rows) if rows else 0.0
    return {"task": task, "method": method, "mode": mode, "items": len(rows),
            "score": round(score, 1),
            "elapsed_s": round(sum(r.get("elapsed_s", 0.0) for r in rows), 1)}


def run_eval(engine: Engine, task: str, method: str, out: Path, *, mode: str = "multi",
             limit: int | None = None, max_tokens: int | None = None,
             on_item: Callable[[dict[str, Any], bool], None] | None = None) -> dict[str, Any]:
    """Answer those of the first ``limit`` items that ``out`` lacks, and summarize them all.

    ``on_item(row, fresh)`` is called once per item, ``fresh`` False for one found in ``out``.
    """
    spec = get_task(task)
    mode_used = mode if method == "spp" else None
    ask = make_ask(engine, method, mode=mode, max_tokens=max_tokens or spec.max_tokens)
    done: dict[int, dict[str, Any]] = {}
    if out.exists():
        for row in read_jsonl(out, ("idx", "task", "method", "output", "score")):
            if (row["task"], row["method"], row.get("mode")) != (task, method, mode_used):
                raise ConfigError(f"{out}:{row['_line']}: a row of {row['task']}/{row['method']}"
                                  f"; this run is {task}/{method}", hint="use another --out")
            check_row(out, task, row)
            done[row["idx"]] = {k: v for k, v in row.items() if k != "_line"}
    items = load_items(task)[:limit]
    out.parent.mkdir(parents=True, exist_ok=True)
    for item in items:
        if item["idx"] in done:
            if on_item is not None:
                on_item(done[item["idx"]], False)
            continue
        started = time.perf_counter()
        row = {"task": task, "method": method, "mode": mode_used,
               **run_item(task, item, ask), "elapsed_s": round(time.perf_counter() - started, 2)}
        with out.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(row) + "\n")
        done[item["idx"]] = row
        if on_item is not None:
            on_item(row, True)
    wanted = {item["idx"] for item in items}
    return summarize(task, method, mode_used, [r for i, r in done.items() if i in wanted])


def score_file(task: str, outputs: Path, method: str = "external") -> dict[str, Any]:
    """Score outputs produced elsewhere: one ``{"idx": ..., "output": "..."}`` per line."""
    get_task(task)
    rows = []
    for row in read_jsonl(outputs, ("idx", "output")):
        item = check_row(outputs, task, row)
        rows.append({"idx": row["idx"], "score": score_output(task, item, row["output"])})
    return summarize(task, method, None, rows)
