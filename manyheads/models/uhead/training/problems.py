"""A generator of small multi-step problems with exact answers, for self-supervised labels.

Each problem records the numbers it states and the constants its kind allows (60 minutes in an
hour...), so the checker can tell a grounded operand from an invented one. Problems are a pure
function of (seed, index): the held-out split is by problem, never by sample.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from fractions import Fraction

NAMES = ["Ana", "Ben", "Chloe", "Dev", "Emma", "Farid", "Gina", "Hugo", "Iris", "Jon", "Kemal",
         "Lena", "Milo", "Nora", "Omar", "Pia"]
ITEMS = ["apples", "stickers", "marbles", "books", "coins", "shells", "cards", "pencils"]


@dataclass(frozen=True)
class Problem:
    """One problem: its text, exact answer, stated numbers and allowed constants."""

    id: str
    kind: str
    text: str
    answer: Fraction
    numbers: frozenset[Fraction]
    constants: frozenset[Fraction] = field(default_factory=frozenset)
    solution: tuple[str, ...] = ()  # a correct solution in the step format (for tests, demos)


def _f(*values: int) -> frozenset[Fraction]:
    return frozenset(Fraction(v) for v in values)


def _add_sub(r: random.Random, pid: str) -> Problem:
    name, item = r.choice(NAMES), r.choice(ITEMS)
    a, b = r.randint(5, 40), r.randint(3, 30)
    c = r.randint(2, a + b - 1)
    text = (f"{name} has {a} {item}. {name} gets {b} more {item} and then gives away {c}. "
            f"How many {item} does {name} have now?")
    steps = (f"After getting more = {a} + {b} = {a + b}", f"After giving away = {a + b} - {c} = "
             f"{a + b - c}")
    return Problem(pid, "add_sub", text, Fraction(a + b - c), _f(a, b, c), solution=steps)


def _groups(r: random.Random, pid: str) -> Problem:
    name, item = r.choice(NAMES), r.choice(ITEMS)
    a, b = r.randint(2, 9), r.randint(2, 9)
    c = r.randint(1, a * b - 1)
    text = (f"A bag holds {a} {item}. {name} buys {b} bags and loses {c} {item}. "
            f"How many {item} are left?")
    steps = (f"Bought = {a} * {b} = {a * b}", f"Left = {a * b} - {c} = {a * b - c}")
    return Problem(pid, "groups", text, Fraction(a * b - c), _f(a, b, c), solution=steps)


def _share(r: random.Random, pid: str) -> Problem:
    name, item = r.choice(NAMES), r.choice(ITEMS)
    per, kids = r.randint(2, 9), r.randint(2, 6)
    extra = r.randint(1, 20)
    total = per * kids
    text = (f"{name} shares {total} {item} equally among {kids} friends, then each friend "
            f"finds {extra} more. How many {item} does each friend have?")
    steps = (f"Each friend first gets {total} / {kids} = {per}",
             f"Each friend then has {per} + {extra} = {per + extra}")
    return Problem(pid, "share", text, Fraction(per + extra), _f(total, kids, extra),
                   solution=steps)


def _time(r: random.Random, pid: str) -> Problem:
    h, m = r.randint(2, 9), r.randint(5, 55)
    text = f"How many minutes are in {h} hours and {m} minutes?"
    steps = (f"Minutes in {h} hours = {h} * 60 = {h * 60}",
             f"Total = {h * 60} + {m} = {h * 60 + m}")
    return Problem(pid, "time", text, Fraction(h * 60 + m), _f(h, m), _f(60), steps)


def _length(r: random.Random, pid: str) -> Problem:
    meters, cm = r.randint(2, 9), r.randint(5, 95)
    text = f"A ribbon is {meters} meters and {cm} centimeters long. How long is it in centimeters?"
    steps = (f"Meters in centimeters = {meters} * 100 = {meters * 100}",
             f"Total = {meters * 100} + {cm} = {meters * 100 + cm}")
    return Problem(pid, "length", text, Fraction(meters * 100 + cm), _f(meters, cm), _f(100),
                   steps)


def _weight(r: random.Random, pid: str) -> Problem:
    kg, bags = r.randint(2, 9), r.randint(2, 5)
    text = f"Each bag of rice weighs {kg} kilograms. How many grams do {bags} bags weigh?"
    steps = (f"Kilograms = {kg} * {bags} = {kg * bags}",
             f"Grams = {kg * bags} * 1000 = {kg * bags * 1000}")
    return Problem(pid, "weight", text, Fraction(kg * bags * 1000), _f(kg, bags), _f(1000),
                   steps)


def _compare(r: random.Random, pid: str) -> Problem:
    """Simple logic: derive two amounts, compare them, answer with the larger."""
    p, q = r.sample(NAMES, 2)
    item = r.choice(ITEMS)
    a, b, c = r.randint(5, 30), r.randint(2, 15), r.randint(2, 4)
    pa, qa = a + b, a * c
    if pa == qa:
        b += 1
        pa = a + b
    text = (f"{NAMES[(NAMES.index(p) + 1) % len(NAMES)]} has {a} {item}. {p} has {b} more "
            f"{item} than that, and {q} has {c} times as many. Whoever of {p} and {q} has more "
            f"gives them all to charity. How many {item} go to charity?")
    top = max(pa, qa)
    sign = ">" if pa > qa else "<"
    steps = (f"{p} has {a} + {b} = {pa}", f"{q} has {a} * {c} = {qa}",
             f"{pa} {sign} {qa}, so {top} go to charity")
    return Problem(pid, "compare", text, Fraction(top), _f(a, b, c), solution=steps)


KINDS = {"add_sub": _add_sub, "groups": _groups, "share": _share, "time": _time,
         "length": _length, "weight": _weight, "compare": _compare}


def make_problem(seed: int, index: int) -> Problem:
    """Problem ``index`` of the stream ``seed`` (kinds rotate so every slice is balanced)."""
    r = random.Random(seed * 1_000_003 + index)
    kind = list(KINDS)[index % len(KINDS)]
    return KINDS[kind](r, f"{seed}-{index}")


def make_problems(seed: int, count: int, start: int = 0) -> list[Problem]:
    return [make_problem(seed, i) for i in range(start, start + count)]
