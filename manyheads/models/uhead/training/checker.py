"""Programmatic step labels: is the equation in a step right, and are its operands grounded?

A step is *incorrect* (label 1) when the values it states disagree (``17 - 8 = 22``), a stated
comparison is false, or it uses an operand that is neither in the problem, nor an allowed
constant, nor a value stated by an earlier step. Steps without a checkable relation get ``None``
(unlabelled) rather than a guess. Exact arithmetic with ``Fraction``.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from fractions import Fraction

from manyheads.models.uhead.steps import answer_number, split_steps
from manyheads.models.uhead.training.problems import Problem

_TOKEN = re.compile(r"\d+(?:\.\d+)?|[-+*/()]")
_COMPARE = re.compile(r"(\d+(?:\.\d+)?)\s*(>=|<=|>|<)\s*(\d+(?:\.\d+)?)")
_WORD_OPS = [(r"\bdivided by\b", "/"), (r"\btimes\b", "*"), (r"\bplus\b", "+"),
             (r"\bminus\b", "-"), (r"(?<=\d)\s*[x×X]\s*(?=\d)", " * "), ("÷", "/"), ("−", "-")]


@dataclass(frozen=True)
class StepCheck:
    label: int | None  # 1 incorrect, 0 correct, None not checkable
    values: tuple[Fraction, ...]
    reason: str


def normalize(text: str) -> str:
    text = re.sub(r"(?<=\d),(?=\d{3})", "", text)
    for pattern, replacement in _WORD_OPS:
        text = re.sub(pattern, replacement, text)
    return text


def _runs(part: str) -> list[list[str]]:
    """Maximal well-formed runs "num op num ..." of the tokens in a part of an equation."""
    runs: list[list[str]] = []
    current: list[str] = []
    for token in _TOKEN.findall(part):
        is_num = token[0].isdigit()
        prev_num = bool(current) and (current[-1][0].isdigit() or current[-1] == ")")
        if is_num and prev_num:  # two numbers with no operator between: a new run
            runs.append(current)
            current = []
        current.append(token)
    runs.append(current)
    return [r for r in (_trim(r) for r in runs) if r]


def _trim(run: list[str]) -> list[str]:
    while run and run[0] in "+*/)":
        run = run[1:]
    while run and run[-1] in "+-*/(":
        run = run[:-1]
    if run.count("(") != run.count(")"):
        run = [t for t in run if t not in "()"]
    return run


def evaluate(tokens: list[str]) -> Fraction | None:
    """Exact value of an arithmetic token run, or None if it does not parse."""
    try:
        tree = ast.parse(" ".join(tokens), mode="eval").body
        return _eval(tree)
    except (SyntaxError, ZeroDivisionError, ValueError):
        return None


def _eval(node: ast.AST) -> Fraction:
    if isinstance(node, ast.Constant) and isinstance(node.value, int | float):
        return Fraction(str(node.value))
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        return -_eval(node.operand)
    if isinstance(node, ast.BinOp):
        left, right = _eval(node.left), _eval(node.right)
        ops = {ast.Add: lambda: left + right, ast.Sub: lambda: left - right,
               ast.Mult: lambda: left * right, ast.Div: lambda: left / right}
        if type(node.op) in ops:
            return ops[type(node.op)]()
    raise ValueError("unsupported expression")


def _numbers(tokens: list[str]) -> list[Fraction]:
    return [Fraction(t) for t in tokens if t[0].isdigit()]


def check_step(text: str, available: set[Fraction]) -> StepCheck:
    """Check one step's text (without its "Step k:" label) against the numbers available."""
    text = normalize(text)
    comparisons = _COMPARE.findall(text)
    parts = text.split("=")
    exprs: list[list[str]] = []
    for i, part in enumerate(parts):
        runs = _runs(part)
        if not runs:
            continue
        if i == 0:
            run = runs[-1]
            if len(parts) > 1 and len(run) == 1 and not re.fullmatch(r"[\s\d.]*", part):
                continue  # a label such as "Pens in 4 boxes =": not a value
        else:
            run = runs[0]
        exprs.append(run)
    values = [evaluate(e) for e in exprs]
    if any(v is None for v in values):
        return StepCheck(None, (), "an expression does not parse")
    operands = [n for e in exprs[:-1] for n in _numbers(e)]
    if exprs and len(exprs[-1]) > 1:
        operands += _numbers(exprs[-1])
    for a, _op, b in comparisons:
        operands += [Fraction(a), Fraction(b)]
    if len(values) < 2 and not comparisons:
        return StepCheck(None, tuple(values), "no equation or comparison")
    for op_value in operands:
        if op_value not in available:
            return StepCheck(1, tuple(values), f"operand {op_value} is not grounded")
    if any(v != values[0] for v in values[1:]):
        return StepCheck(1, tuple(values), "the two sides differ")
    for a, op, b in comparisons:
        x, y = Fraction(a), Fraction(b)
        truth = {">": x > y, "<": x < y, ">=": x >= y, "<=": x <= y}[op]
        if not truth:
            return StepCheck(1, tuple(values), f"{a} {op} {b} is false")
    return StepCheck(0, tuple(values), "ok")


def label_steps(problem: Problem, steps: list[str]) -> list[StepCheck]:
    """Check steps in order; every value a step states becomes available to later steps."""
    available = set(problem.numbers) | set(problem.constants) | {Fraction(1)}
    checks = []
    for text in steps:
        check = check_step(text, available)
        available.update(check.values)
        checks.append(check)
    return checks


def label_response(problem: Problem, response: str) -> list[StepCheck]:
    return label_steps(problem, [s.text for s in split_steps(response)])


def is_correct(problem: Problem, response: str) -> bool:
    """Whether the response's final answer equals the problem's exact answer."""
    value = answer_number(response)
    return value is not None and abs(Fraction(str(value)) - problem.answer) < Fraction(1, 10**6)
