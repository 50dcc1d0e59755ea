"""AutoStudio's two language agents: the subject manager and the layout generator.

Both answer against bounded JSON schemas. The embedded model is small, so neither is trusted
alone: the subject manager's edits are merged with a deterministic reading of the turn (names
of known subjects, "a/an ..." phrases for new ones, removal words), and a removal is only
applied when the user's words ask for one. A layout that does not parse falls back to the last
drawn positions; the supervisor (``studio_layout``) then checks and repairs whatever comes out.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, Field

from manyheads.agents import Agent, AgentSpec
from manyheads.agents.prompts import Prompts
from manyheads.errors import StructuredOutputError
from manyheads.models import Engine, SamplingParams
from manyheads.orchestration.rooms.studio.layout import (
    COLOURS,
    MAX_SUBJECTS,
    Box,
    Layout,
    Subject,
    find_subject,
    normal_name,
    repair,
)

PROMPTS = Prompts(__package__)

REMOVE_WORDS = ("remove", "delete", "take away", "get rid of", "erase", "without", "no more",
                "take out", "disappear")
RECOLOUR_WORDS = ("make", "turn", "paint", "colour", "color", "change", "now", "recolor")
PART_WORDS = ("wearing", "wears", "holding", "holds", "with")
STOP_WORDS = {"with", "on", "in", "at", "next", "near", "to", "from", "under", "over", "behind",
              "beside", "that", "who", "which", "is", "are", "and", "by", "into", "onto", "of",
              "now", "wearing", "holding", "sitting", "standing", "flying", "running", "lying",
              "sits", "stands", "runs", "plays", "sleeps", "flies", "swims", "jumps", "looks",
              "walks", "waits", "rests", "chases", "eats", "reads", "watches", "appears", "lies",
              "sit", "stand", "play", "sleep", "fly", "swim", "jump", "walk", "wait", "there",
              "here", "left", "right", "top", "bottom", "middle", "center", "corner", "too",
              "instead", "again", "as", "for", "above", "below", "beneath", "between"}
META_NOUNS = {"picture", "image", "scene", "drawing", "photo", "background", "view", "bit",
              "lot", "story", "day", "time", "sunny", "while"}
ARTICLES = {"a", "an", "one", "another", "some", "two", "three"}
LINKS = {"a", "an", "the", "on", "in", "at", "over", "past", "next", "near", "to", "from", "by",
         "with", "up", "down", "across", "through", "around", "toward", "towards", "into",
         "beside", "behind", "above", "below", "under", "onto", "off", "away"}
SCENE_NOUNS = {"beach", "street", "ocean", "sea", "field", "park", "garden", "sky", "lake",
               "river", "road", "trail", "grass", "snow", "room", "kitchen", "forest", "desert",
               "market", "station", "lab", "classroom", "city", "mountains", "mountain", "night",
               "space", "pond", "meadow", "hill"}
PLACE_WORDS = {"in", "at", "inside", "into", "across", "through"}


class SubjectEdit(BaseModel):
    action: Literal["add", "update", "remove", "keep"]
    name: str = Field(min_length=1, max_length=40)
    description: str = Field("", max_length=120)
    part_of: str = Field("", max_length=40)


class SubjectPlan(BaseModel):
    edits: list[SubjectEdit] = Field(default_factory=list, max_length=6)


class BoxPlan(BaseModel):
    subject: str = Field(min_length=1, max_length=40)
    x: int = Field(ge=0, le=100)
    y: int = Field(ge=0, le=100)
    w: int = Field(ge=1, le=100)
    h: int = Field(ge=1, le=100)


class LayoutPlan(BaseModel):
    background: str = Field("", max_length=60)
    caption: str = Field("", max_length=120)
    boxes: list[BoxPlan] = Field(min_length=1, max_length=MAX_SUBJECTS)


# -- the deterministic reading of a turn -----------------------------------------------------
def clauses(text: str) -> list[str]:
    """The turn cut at punctuation and joining words, lower case."""
    parts = re.split(r"[,.;:!?]|\band\b|\bthen\b|\bbut\b", text.lower())
    return [p.strip() for p in parts if p.strip()]


def verb_like(word: str, following: str) -> bool:
    """"builds a", "sails on", "floats next": an -s word before a link word is a verb here."""
    return word.endswith("s") and not word.endswith("ss") and following in LINKS


def new_phrases(clause: str) -> list[tuple[str, str]]:
    """"a dog wearing a red hat in a park" -> [("dog", ""), ("red hat", "wearing")]: an article,
    then words up to a stop word, with the word before the article; places ("in a park") are the
    background, not subjects."""
    words = re.findall(r"[a-z']+", clause)
    found = []
    for index, word in enumerate(words):
        if word not in ARTICLES or (index and words[index - 1] in PLACE_WORDS):
            continue
        phrase: list[str] = []
        for at, follower in enumerate(words[index + 1:index + 5], index + 1):
            if follower in STOP_WORDS or follower in ARTICLES or (phrase and verb_like(
                    follower, words[at + 1] if at + 1 < len(words) else "")):
                break
            phrase.append(follower)
        if phrase and phrase[-1] not in META_NOUNS | SCENE_NOUNS:
            found.append((" ".join(phrase), words[index - 1] if index else ""))
    return found


def recolour(description: str, clause: str) -> str:
    """The description with its colour word replaced by the clause's last colour word."""
    new = [w for w in re.findall(r"[a-z]+", clause) if w in COLOURS]
    if not new:
        return description
    words = [w for w in description.split() if w.lower() not in COLOURS]
    return " ".join([new[-1], *words])


def read_turn(turn: str, subjects: list[Subject]) -> list[SubjectEdit]:
    """Edits a careful reader takes from the words alone: the fallback and the safety net."""
    edits: list[SubjectEdit] = []
    previous = ""  # the last subject named, the whole a "wearing a hat" part belongs to
    for clause in clauses(turn):
        removing = any(w in clause for w in REMOVE_WORDS)
        phrases = new_phrases(clause)
        # "make the dog blue" recolours the dog; "give the dog a red hat" colours the hat
        recolouring = not phrases and any(re.search(rf"\b{w}", clause) for w in RECOLOUR_WORDS)
        for subject in subjects:
            if re.search(rf"\b{re.escape(normal_name(subject.name).split()[-1])}", clause):
                if removing:
                    edits.append(SubjectEdit(action="remove", name=subject.name))
                else:
                    description = subject.description
                    if recolouring:
                        description = recolour(subject.description or subject.name, clause)
                    action = "update" if description != subject.description else "keep"
                    edits.append(SubjectEdit(action=action, name=subject.name,
                                             description=description))
                previous = subject.name
        if removing:
            continue
        for phrase, before in phrases:
            name = normal_name(phrase.split()[-1])
            # "wearing a hat", "give the cat a scarf": a piece of the subject just named
            joined = previous and (before in PART_WORDS or before == previous.split()[-1])
            part_of = previous if joined else ""
            edits.append(SubjectEdit(action="add", name=name, description=phrase,
                                     part_of=part_of))
            previous = name
    return edits


def place_of(turn: str) -> str:
    """The place a turn sets the scene in ("... in a sunny park" -> "sunny park"), if any."""
    for clause in clauses(turn):
        words = re.findall(r"[a-z']+", clause)
        for index, word in enumerate(words[:-2]):
            if word in PLACE_WORDS and words[index + 1] in ARTICLES | {"the"}:
                place = [w for w in words[index + 2:index + 5] if w not in STOP_WORDS]
                return " ".join(place)
    return ""


# -- applying edits -------------------------------------------------------------------------
def wants_removal(turn: str) -> bool:
    return any(w in turn.lower() for w in REMOVE_WORDS)


def apply_edits(subjects: list[Subject], edits: list[SubjectEdit], turn: str, next_id: int
                ) -> tuple[list[Subject], int]:
    """The subject database after the edits, and the next free id number.

    A name that matches a known subject is that subject ("the dog from before" is the dog), so
    an "add" of a known name updates it instead of cloning it; removals need removal words.
    """
    subjects = list(subjects)
    for edit in edits:
        known = find_subject(subjects, edit.name)
        description = " ".join(edit.description.split())
        if edit.action == "remove":
            if known is not None and wants_removal(turn):
                gone = {known.id} | {s.id for s in subjects if s.parent_id == known.id}
                subjects = [s for s in subjects if s.id not in gone]
        elif known is not None:  # "add" of a known name is a reference back: keep it as it is
            if edit.action == "update" and description:
                index = subjects.index(known)
                subjects[index] = known.model_copy(update={"description": description[:160]})
        elif edit.action == "add" and len(subjects) < MAX_SUBJECTS:
            parent = find_subject(subjects, edit.part_of) if edit.part_of else None
            if parent is not None and parent.parent_id is not None:  # a hat's bow: the dog's
                parent = next(s for s in subjects if s.id == parent.parent_id)
            subjects.append(Subject(id=f"s{next_id}", name=" ".join(edit.name.split())[:40],
                                    description=description[:160] or edit.name,
                                    parent_id=parent.id if parent else None))
            next_id += 1
    return subjects, next_id


def manage_subjects(engine: Engine, turn: str, subjects: list[Subject], next_id: int,
                    max_tokens: int) -> tuple[list[Subject], int]:
    """The subject manager's turn: model edits first, then what the words alone add."""
    agent = Agent(AgentSpec(name="Subject manager", role="subjects",
                            system_prompt=PROMPTS.render("manager_system")), engine)
    instruction = PROMPTS.render("manager", turn=turn,
                         subjects=[s.model_dump() for s in subjects])
    try:
        plan = agent.decide([], SubjectPlan, instruction, SamplingParams(max_tokens=max_tokens))
        edits = list(plan.edits)
    except StructuredOutputError:
        edits = []
    subjects, next_id = apply_edits(subjects, edits, turn, next_id)
    return apply_edits(subjects, read_turn(turn, subjects), turn, next_id)


def changes(before: list[Subject], after: list[Subject]) -> str:
    """What a turn did to the subject database, in one line for the person."""
    old = {s.id: s for s in before}
    new_ids = {s.id for s in after}
    added = [s.name for s in after if s.id not in old]
    changed = [s.name for s in after if s.id in old and s.description != old[s.id].description]
    removed = [s.name for s in before if s.id not in new_ids]
    parts = [f"{label}: {', '.join(names)}" for label, names in
             (("added", added), ("changed", changed), ("removed", removed)) if names]
    return "; ".join(parts).capitalize() + "." if parts else "No changes to the subjects."


# -- the layout generator ---------------------------------------------------------------------
def to_percent(layout: Layout, subjects: list[Subject]) -> list[dict[str, object]]:
    """Boxes as the agent reads them: percent x, y, w, h by subject name."""
    names = {s.id: s.name for s in subjects}
    rows = []
    for subject_id, box in layout.boxes.items():
        if subject_id in names:
            x, y, w, h = (round(v) for v in box.to_xywh(100, 100))
            rows.append({"subject": names[subject_id], "x": x, "y": y, "w": w, "h": h})
    return rows


def from_plan(plan: LayoutPlan, subjects: list[Subject]) -> Layout:
    """The plan's boxes keyed by subject id; a box naming no known subject is dropped."""
    boxes = {}
    for row in plan.boxes:
        subject = find_subject(subjects, row.subject)
        if subject is not None and subject.id not in boxes:
            boxes[subject.id] = Box.from_xywh(row.x, row.y, row.w, row.h, 100, 100)
    return Layout(boxes=boxes, background=plan.background.strip(), caption=plan.caption.strip())


def generate_layout(engine: Engine, turn: str, subjects: list[Subject], previous: Layout | None,
                    issues: list[str], max_tokens: int) -> Layout | None:
    """One layout from the model, or None when its answer does not parse."""
    agent = Agent(AgentSpec(name="Layout generator", role="layout",
                            system_prompt=PROMPTS.render("layout_system")), engine)
    names = {s.id: s.name for s in subjects}
    rows = [{"name": s.name, "description": s.description,
             "part_of": names.get(s.parent_id or "", "")} for s in subjects]
    # A valid starting point (the last picture's boxes, new subjects in free space) turns the
    # small model's job into editing numbers rather than inventing all of them.
    start = repair(previous or Layout(), subjects)
    instruction = PROMPTS.render("layout", turn=turn, subjects=rows, issues=issues,
                         previous=to_percent(start, subjects), background=start.background)
    try:
        plan = agent.decide([], LayoutPlan, instruction, SamplingParams(max_tokens=max_tokens))
    except StructuredOutputError:
        return None
    layout = from_plan(plan, subjects)
    # A subject the answer left out keeps its suggested box; the supervisor judges the rest.
    return layout.model_copy(update={"boxes": start.boxes | layout.boxes})
