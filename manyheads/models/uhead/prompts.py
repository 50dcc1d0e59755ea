"""Our prompts (package data ``prompts/uhead.yaml``), rendered with Jinja ``StrictUndefined``."""

from __future__ import annotations

from functools import cache
from importlib import resources
from typing import Any

import jinja2
import yaml

from manyheads.models.types import ChatMessage
from manyheads.models.uhead.errors import UHeadError

_ENV = jinja2.Environment(undefined=jinja2.StrictUndefined, autoescape=False)


@cache
def templates() -> dict[str, str]:
    path = resources.files("manyheads.models.uhead") / "prompts" / "uhead.yaml"
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
        raise UHeadError("uhead/prompts/uhead.yaml must map names to template strings")
    return data


def render(key: str, **variables: Any) -> str:
    try:
        return _ENV.from_string(templates()[key]).render(**variables).strip()
    except KeyError:
        raise UHeadError(f"uhead/prompts/uhead.yaml has no template {key!r}") from None
    except jinja2.UndefinedError as exc:
        raise UHeadError(f"uhead/prompts/uhead.yaml:{key}: {exc.message}") from None


def solver_conversation(problem: str) -> list[ChatMessage]:
    """System prompt, two worked examples in the step format, then the problem."""
    conversation = [{"role": "system", "content": render("solver_system")}]
    for n in (1, 2):
        conversation += [{"role": "user", "content": render(f"solver_example_{n}_user")},
                         {"role": "assistant", "content": render(f"solver_example_{n}_assistant")}]
    return conversation + [{"role": "user", "content": render("solver_user", problem=problem)}]
