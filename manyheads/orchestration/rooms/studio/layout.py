"""AutoStudio's data and the supervisor's arithmetic: subjects, boxes, layouts, checks, repair.

Boxes are stored normalised (``x0, y0, x1, y1`` in [0, 1]) so one layout serves any canvas; the
agents speak percent ``x, y, w, h`` (small integers a small model writes reliably), converted
with the same pixel-xywh functions as any image canvas. Everything here is pure and deterministic:
the supervisor's checks, the final repair that always yields a valid layout, and the layout
metrics the evaluation reports.
"""

from __future__ import annotations

import re
from itertools import combinations

from PIL import ImageColor
from pydantic import BaseModel, Field, model_validator

MAX_SUBJECTS = 8
# Colour words a subject may carry ("a red kite"); the drawer paints them, the agents keep them.
COLOURS = {name: ImageColor.getrgb(name) for name in (
    "red", "orange", "yellow", "green", "blue", "purple", "pink", "brown", "black", "white",
    "grey", "gray", "gold", "silver", "teal", "navy", "violet")}
MIN_SIDE = 0.08  # a box narrower than this cannot show a subject
OVERLAP_LIMIT = 0.3  # intersection over the smaller box; parts may overlap their parent
SMALL_WORDS = ("small", "tiny", "little", "mini", "baby", "distant", "far")
LARGE_WORDS = ("big", "large", "huge", "giant", "tall", "enormous", "wide")
# "small" at most, "large" at least (share of the canvas); 0.08 still fits a 3 x 3 grid cell
SMALL_AREA, LARGE_AREA = 0.12, 0.08


class Box(BaseModel):
    """A normalised box ``(x0, y0)``-``(x1, y1)``; values outside [0, 1] are kept so they can be
    reported as out of bounds instead of being silently clipped."""

    x0: float
    y0: float
    x1: float
    y1: float

    @model_validator(mode="after")
    def _ordered(self) -> Box:
        if self.x1 < self.x0 or self.y1 < self.y0:
            raise ValueError("a box needs x0 <= x1 and y0 <= y1")
        return self

    @classmethod
    def from_xywh(cls, x: float, y: float, w: float, h: float, width: float, height: float
                  ) -> Box:
        """From pixel ``x, y, w, h`` on a ``width`` x ``height`` canvas."""
        return cls(x0=x / width, y0=y / height, x1=(x + max(w, 0)) / width,
                   y1=(y + max(h, 0)) / height)

    def to_xywh(self, width: float, height: float) -> tuple[float, float, float, float]:
        """Pixel ``x, y, w, h`` on a ``width`` x ``height`` canvas."""
        return (self.x0 * width, self.y0 * height, (self.x1 - self.x0) * width,
                (self.y1 - self.y0) * height)

    def pixels(self, width: int, height: int) -> tuple[int, int, int, int]:
        """Integer pixel corners, clipped to the canvas (for drawing and cropping).

        The size is rounded, not each corner, so a box moved at the same size keeps its exact
        pixel size (and a subject's crop its exact pixels)."""
        clip = self.clipped()
        x0, y0 = round(clip.x0 * width), round(clip.y0 * height)
        return (x0, y0, min(x0 + round((clip.x1 - clip.x0) * width), width),
                min(y0 + round((clip.y1 - clip.y0) * height), height))

    @property
    def area(self) -> float:
        return (self.x1 - self.x0) * (self.y1 - self.y0)

    def in_bounds(self) -> bool:
        return 0.0 <= self.x0 and 0.0 <= self.y0 and self.x1 <= 1.0 and self.y1 <= 1.0

    def clipped(self) -> Box:
        def c(v: float) -> float:
            return min(max(v, 0.0), 1.0)
        return Box(x0=c(self.x0), y0=c(self.y0), x1=c(self.x1), y1=c(self.y1))

    def intersection(self, other: Box) -> float:
        w = min(self.x1, other.x1) - max(self.x0, other.x0)
        h = min(self.y1, other.y1) - max(self.y0, other.y0)
        return max(w, 0.0) * max(h, 0.0)

    def overlap(self, other: Box) -> float:
        """Intersection over the smaller area: 1.0 when one box hides inside the other."""
        smaller = min(self.area, other.area)
        return self.intersection(other) / smaller if smaller > 0 else 0.0

    def contains(self, other: Box, slack: float = 1e-9) -> bool:
        """``other`` lies inside this box (up to float rounding of the box arithmetic)."""
        return (self.x0 - slack <= other.x0 and self.y0 - slack <= other.y0
                and other.x1 <= self.x1 + slack and other.y1 <= self.y1 + slack)

    def as_list(self) -> list[float]:
        return [round(v, 4) for v in (self.x0, self.y0, self.x1, self.y1)]


class Subject(BaseModel):
    """One entry of the subject database; ``id`` never changes, so neither does its look."""

    id: str = Field(min_length=1, max_length=16)
    name: str = Field(min_length=1, max_length=40)
    description: str = Field("", max_length=160)
    parent_id: str | None = None  # set for a part ("the dog's hat" is part of the dog)
    reference: int | None = None  # the turn whose picture first showed the subject


class Layout(BaseModel):
    boxes: dict[str, Box] = Field(default_factory=dict)  # subject id -> box
    background: str = Field("", max_length=120)
    caption: str = Field("", max_length=200)


# -- names ------------------------------------------------------------------------------------
def normal_name(text: str) -> str:
    """Lower case, letters only, a trailing plural "s" dropped: "Dogs!" and "dog" are one name."""
    words = re.findall(r"[a-z]+", text.lower())
    return " ".join(singular(w) for w in words
                    if w not in ("the", "a", "an", "my", "our", "that", "this"))


def singular(word: str) -> str:
    """"sandwiches" -> "sandwich", "dogs" -> "dog"; "glass" and "bus" stay."""
    if len(word) > 4 and word.endswith(("ches", "shes", "xes", "sses")):
        return word[:-2]
    if len(word) > 3 and word.endswith("s") and not word.endswith(("ss", "us")):
        return word[:-1]
    return word


def find_subject(subjects: list[Subject], name: str) -> Subject | None:
    """The subject a name refers to: the same name, else one whose head noun matches."""
    key = normal_name(name)
    if not key:
        return None
    for subject in subjects:
        if normal_name(subject.name) == key:
            return subject
    head = key.split()[-1]
    for subject in subjects:
        if normal_name(subject.name).split()[-1:] == [head]:
            return subject
    return None


# -- the supervisor's checks ----------------------------------------------------------------
def size_issue(subject: Subject, box: Box) -> str | None:
    """A size that contradicts the words: a "small" thing filling the frame, a thin sliver."""
    words = set(re.findall(r"[a-z]+", f"{subject.name} {subject.description}".lower()))
    if min(box.x1 - box.x0, box.y1 - box.y0) < MIN_SIDE:
        return f"{subject.name} is too thin to be seen"
    if subject.parent_id is not None:  # a part's size follows its parent, not its adjectives
        return None
    if words & set(SMALL_WORDS) and box.area > SMALL_AREA:
        return f"{subject.name} is described as small but its box is large"
    if words & set(LARGE_WORDS) and box.area < LARGE_AREA:
        return f"{subject.name} is described as large but its box is small"
    return None


def related(a: Subject, b: Subject) -> bool:
    """A part and its whole may overlap: the hat sits on the dog."""
    return a.parent_id == b.id or b.parent_id == a.id


def layout_issues(layout: Layout, subjects: list[Subject], overlap_limit: float = OVERLAP_LIMIT
                  ) -> list[str]:
    """Everything the supervisor objects to, in words the layout generator can act on."""
    by_id = {s.id: s for s in subjects}
    issues = [f"{by_id[i].name} is missing" for i in by_id if i not in layout.boxes]
    issues += [f"box {i} belongs to no subject" for i in layout.boxes if i not in by_id]
    placed = [(by_id[i], b) for i, b in layout.boxes.items() if i in by_id]
    for subject, box in placed:
        if not box.in_bounds():
            issues.append(f"{subject.name} is outside the picture")
        issue = size_issue(subject, box)
        if issue:
            issues.append(issue)
        parent = layout.boxes.get(subject.parent_id or "")
        if parent is not None and not parent.clipped().contains(box.clipped()):
            issues.append(f"{subject.name} should sit inside {by_id[subject.parent_id].name}")
    for (a, box_a), (b, box_b) in combinations(placed, 2):
        if not related(a, b) and box_a.overlap(box_b) > overlap_limit:
            issues.append(f"{a.name} and {b.name} overlap too much")
    return issues


# -- the deterministic repair -----------------------------------------------------------------
def free_spot(size: tuple[float, float], taken: list[Box], overlap_limit: float) -> Box | None:
    """The first place where a box of ``size`` fits, on a 20-step grid scanned left to right in
    rows from the middle of the picture outwards (where a person expects the subject)."""
    w, h = size
    steps = [i / 20 for i in range(21)]
    for y in sorted(steps, key=lambda v: abs(v + h / 2 - 0.55)):
        for x in steps:
            box = Box(x0=x, y0=y, x1=x + w, y1=y + h)
            if box.in_bounds() and all(box.overlap(t) <= overlap_limit for t in taken):
                return box
    return None


def grid_boxes(count: int) -> list[Box]:
    """``count`` disjoint cells filling the canvas: the layout of last resort."""
    cols = max(1, round(count ** 0.5 + 0.49))
    rows = -(-count // cols)
    pad = 0.02
    return [Box(x0=c / cols + pad, y0=r / rows + pad, x1=(c + 1) / cols - pad,
                y1=(r + 1) / rows - pad)
            for r in range(rows) for c in range(cols)][:count]


def part_box(parent: Box, index: int) -> Box:
    """The ``index``-th part's place inside its parent: two per row, rows a third high."""
    w, h = (parent.x1 - parent.x0) / 2, (parent.y1 - parent.y0) / 3
    x0, y0 = parent.x0 + (index % 2) * w, parent.y0 + (index // 2 % 3) * h
    return Box(x0=x0, y0=y0, x1=x0 + w, y1=y0 + h)


def sibling_index(part: Subject, parts: list[Subject]) -> int:
    return [p.id for p in parts if p.parent_id == part.parent_id].index(part.id)


def fit_size(subject: Subject, box: Box) -> Box:
    """Shrink a "small" box or grow a "large" or sliver one around its centre."""
    cx, cy = (box.x0 + box.x1) / 2, (box.y0 + box.y1) / 2
    w, h = max(box.x1 - box.x0, MIN_SIDE), max(box.y1 - box.y0, MIN_SIDE)
    words = set(re.findall(r"[a-z]+", f"{subject.name} {subject.description}".lower()))
    if words & set(LARGE_WORDS) and w * h < LARGE_AREA:
        grow = (LARGE_AREA / (w * h)) ** 0.5 + 0.01
        w, h = min(w * grow, 1.0), min(h * grow, 1.0)
    elif words & set(SMALL_WORDS) and w * h > SMALL_AREA:
        w = h = SMALL_AREA ** 0.5 - 0.01
    x0, y0 = min(max(cx - w / 2, 0.0), 1.0 - w), min(max(cy - h / 2, 0.0), 1.0 - h)
    return Box(x0=x0, y0=y0, x1=x0 + w, y1=y0 + h)


def repair(layout: Layout, subjects: list[Subject], overlap_limit: float = OVERLAP_LIMIT
           ) -> Layout:
    """A valid layout close to ``layout``: clip, resize, then move whatever still collides.

    Wholes keep their boxes in order while they fit; a box that collides moves to the first free
    spot of its size, and if none is left every whole goes on a grid. Parts sit inside their
    parent. For a database whose parts hang off wholes (the subject manager never nests them),
    ``layout_issues`` of the result is always empty.
    """
    wholes = [s for s in subjects if s.parent_id is None or s.parent_id not in
              {x.id for x in subjects}]
    boxes: dict[str, Box] = {}
    for subject in wholes:
        old = layout.boxes.get(subject.id)
        if old is not None and old.clipped().area < 0.5 * old.area:
            old = None  # mostly off the canvas: place it afresh rather than squash it at an edge
        box = fit_size(subject, old.clipped() if old else Box(x0=0, y0=0, x1=0.32, y1=0.32))
        taken = list(boxes.values())
        if old is None or any(box.overlap(t) > overlap_limit for t in taken):
            size = (box.x1 - box.x0, box.y1 - box.y0)
            box = free_spot(size, taken, 0.0) or free_spot(size, taken, overlap_limit)
        if box is None:
            boxes = grid_layout(wholes, [])
            break
        boxes[subject.id] = box
    parts = [s for s in subjects if s not in wholes]
    for subject in parts:
        parent = boxes[subject.parent_id]
        old = layout.boxes.get(subject.id)
        fits = old is not None and parent.contains(old) and not size_issue(subject, old)
        boxes[subject.id] = old if fits else part_box(parent, sibling_index(subject, parts))
    result = layout.model_copy(update={"boxes": boxes})
    if layout_issues(result, subjects, overlap_limit):
        result = layout.model_copy(update={"boxes": grid_layout(wholes, parts)})
    return result


def grid_layout(wholes: list[Subject], parts: list[Subject]) -> dict[str, Box]:
    """Every whole in its own grid cell (resized to its words inside the cell), parts inside."""
    boxes = {s.id: fit_size(s, cell) for s, cell in zip(wholes, grid_boxes(len(wholes)),
                                                        strict=True)}
    for part in parts:
        boxes[part.id] = part_box(boxes[part.parent_id], sibling_index(part, parts))
    return boxes


# -- metrics ----------------------------------------------------------------------------------
def layout_metrics(layout: Layout, subjects: list[Subject]) -> dict[str, float]:
    """In-bounds share, the worst overlap between unrelated boxes, and validity (0 or 1)."""
    by_id = {s.id: s for s in subjects}
    boxes = [(by_id[i], b) for i, b in layout.boxes.items() if i in by_id]
    worst = max((a_box.overlap(b_box) for (a, a_box), (b, b_box) in combinations(boxes, 2)
                 if not related(a, b)), default=0.0)
    inside = sum(b.in_bounds() for _, b in boxes) / len(boxes) if boxes else 1.0
    return {"in_bounds": inside, "max_overlap": round(worst, 4),
            "valid": float(not layout_issues(layout, subjects))}


def coverage(layout: Layout, subjects: list[Subject], named: list[str]) -> float:
    """Share of the names the user used that resolve to a subject with a box."""
    if not named:
        return 1.0
    hits = 0
    for name in named:
        subject = find_subject(subjects, name)
        hits += subject is not None and subject.id in layout.boxes
    return hits / len(named)
