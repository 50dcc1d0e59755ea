"""Persuasion scenarios: CToMPersu records read into checked models, or drafted by an agent.

A scenario carries the persuadee's hidden mental state (a preventive and a generative action,
each with one belief and one desire). Bad records are refused up front with the file and the
record number, because a batch that fails on record 412 after an hour is worse than no batch.
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from manyheads.agents.names import choose_name, valid_pair
from manyheads.agents.prompts import Prompts
from manyheads.errors import ConfigError, StructuredOutputError
from manyheads.models import Engine, SamplingParams

PROMPTS = Prompts(__package__)

FALLBACK_NAMES = ("Alex", "Sam")  # when the scenario agent cannot name two people
PACKAGE_SCENARIOS = "ctompersu_dev60.jsonl"


class MentalAction(BaseModel):
    """An action the persuadee might take and the belief and desire behind it ("none" if none)."""

    model_config = ConfigDict(extra="forbid")

    content: str = Field(min_length=1, max_length=400)
    belief: str = Field(min_length=1, max_length=400)
    desire: str = Field(min_length=1, max_length=400)

    @property
    def is_none(self) -> bool:
        return self.content.strip().rstrip(".").lower() in ("none", "")


class Scenario(BaseModel):
    """One CToMPersu scenario: the public setting plus the persuadee's hidden actions."""

    model_config = ConfigDict(extra="ignore")

    tag: str = Field("", max_length=300)
    background: str = Field(min_length=1, max_length=2000)
    persuader: str = Field(min_length=1, max_length=64)
    persuadee: str = Field(min_length=1, max_length=64)
    goal: str = Field(min_length=1, max_length=500)
    domain: list[str] = Field(default_factory=list, max_length=20)
    preventive: MentalAction  # what the persuadee wants to do now (hidden)
    generative: MentalAction  # what the persuader wants it to do (hidden belief and desire)
    # Names written by the model (validated, with fallbacks), not by the dataset's authors,
    # whose parties may be groups ("Council members"): only these count as invalid names.
    drafted: bool = False

    @field_validator("persuadee")
    @classmethod
    def _distinct_names(cls, value: str, info) -> str:
        if value == info.data.get("persuader"):
            raise ValueError("persuader and persuadee must have different names")
        return value


class ScenarioRecord(BaseModel):
    """A file record: the scenario and, optionally, a reference dialogue."""

    model_config = ConfigDict(extra="ignore")

    scenario: Scenario
    # Lines are "persuader: ..." / "persuadee: ..."; the source data has a few continuation
    # lines without a prefix, so only the type and non-emptiness are checked.
    dialog: list[str] | None = Field(None, min_length=1)


def package_scenarios() -> Path:
    """The CToMPersu dev scenarios shipped with the package."""
    folder = resources.files("manyheads.orchestration.rooms.persuasion.data")
    return Path(str(folder / PACKAGE_SCENARIOS))


def load_scenarios(path: str | Path) -> list[ScenarioRecord]:
    """Records of a JSON (a list) or JSONL file; ``ConfigError`` names the record and field."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read scenario file {path}: {exc.strerror}") from None
    raw = _raw_records(path, text)
    if not raw:
        raise ConfigError(f"{path}: no scenario records")
    return [_check(path, number, record) for number, record in raw]


def _raw_records(path: Path, text: str) -> list[tuple[int, Any]]:
    """(record number from 1, parsed JSON) pairs; JSONL unless the file is one JSON list."""
    stripped = text.lstrip()
    if stripped.startswith("["):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{path}: not valid JSON: {exc}") from None
        return list(enumerate(data, start=1))
    records = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            records.append((number, json.loads(line)))
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{path}: record {number}: not valid JSON: {exc.msg}") from None
    return records


def _check(path: Path, number: int, record: Any) -> ScenarioRecord:
    try:
        return ScenarioRecord.model_validate(record)
    except ValidationError as exc:
        error = exc.errors()[0]
        field = ".".join(str(part) for part in error["loc"]) or "(record)"
        raise ConfigError(f"{path}: record {number}: field {field}: {error['msg']}",
                          hint="each record needs scenario.{background, persuader, persuadee, "
                               "goal, preventive, generative} and a non-empty dialog if given"
                          ) from None


class ScenarioDraft(BaseModel):
    """What the scenario agent writes; every string is bounded for a small model."""

    background: str = Field(max_length=240)
    persuader: str = Field(max_length=24)
    persuadee: str = Field(max_length=24)
    goal: str = Field(max_length=120)
    preventive_action: str = Field(max_length=80)
    preventive_belief: str = Field(max_length=100)
    preventive_desire: str = Field(max_length=100)
    generative_belief: str = Field(max_length=100)
    generative_desire: str = Field(max_length=100)


def draft_scenarios(engine: Engine, domain: str, n: int, *, max_tokens: int = 320,
                    attempts: int = 3) -> list[ScenarioRecord]:
    """``n`` new scenarios in ``domain`` written by a scenario agent, in one batch per attempt.

    Drafts that fail to parse or to validate are retried a bounded number of times; so are
    drafts whose names are not a person's name (1-3 capitalised words, not "Creating a lifestyle
    of:") or name one person twice. On the last attempt such names give way to the fallback
    names ``FALLBACK_NAMES`` instead. Fewer than ``n`` valid drafts is a ``ConfigError``, not a
    short dataset.
    """
    if not 1 <= n <= 1000:
        raise ConfigError(f"draft between 1 and 1000 scenarios, not {n}")
    system = PROMPTS.render("scenario_system")
    records: list[ScenarioRecord] = []
    for attempt in range(attempts):
        missing = n - len(records)
        conversations = [[{"role": "system", "content": system},
                          {"role": "user", "content": PROMPTS.render("scenario_request",
                                                             domain=domain, number=i + 1)}]
                         for i in range(len(records), len(records) + missing)]
        params = [SamplingParams(max_tokens=max_tokens, temperature=0.9, seed=attempt * 1000 + i)
                  for i in range(missing)]
        for completion in engine.chat(conversations, params, response_model=ScenarioDraft):
            try:
                records.append(_from_draft(completion.value(), domain,
                                           strict_names=attempt < attempts - 1))
            except (StructuredOutputError, ValidationError, ValueError):
                continue
        if len(records) >= n:
            return records[:n]
    raise ConfigError(f"the scenario agent wrote {len(records)} valid scenarios of {n} "
                      f"for domain {domain!r}", hint="use a stronger model or --scenarios FILE")


def _from_draft(draft: ScenarioDraft, domain: str, *, strict_names: bool) -> ScenarioRecord:
    goal = draft.goal.strip()
    persuader = choose_name([draft.persuader], FALLBACK_NAMES[0])
    persuadee = choose_name([draft.persuadee], FALLBACK_NAMES[1], avoid=[persuader])
    if strict_names and not valid_pair(draft.persuader, draft.persuadee):
        raise ValueError(f"not two people's names: {draft.persuader!r}, {draft.persuadee!r}")
    scenario = Scenario(
        tag=domain, background=draft.background.strip(), persuader=persuader,
        persuadee=persuadee, goal=goal, domain=[domain], drafted=True,
        preventive=MentalAction(content=draft.preventive_action.strip() or "none",
                                belief=draft.preventive_belief.strip() or "none",
                                desire=draft.preventive_desire.strip() or "none"),
        generative=MentalAction(content=goal, belief=draft.generative_belief.strip() or "none",
                                desire=draft.generative_desire.strip() or "none"))
    return ScenarioRecord(scenario=scenario)
