"""Prompts are package data: YAML files of Jinja templates under ``agents/prompts/``.

Rendering uses ``StrictUndefined`` so a missing variable is an error, not a silent blank.
"""

from __future__ import annotations

from functools import cache
from importlib import resources
from typing import Any

import jinja2
import yaml

from manyheads.errors import ConfigError

_ENV = jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=False,
                          autoescape=False)


@cache
def load_prompts(name: str) -> dict[str, str]:
    """The templates of ``prompts/<name>.yaml`` by key."""
    path = resources.files("manyheads.agents") / "prompts" / f"{name}.yaml"
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"no prompt file named {name!r} in manyheads/agents/prompts") from None
    if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
        raise ConfigError(f"prompts/{name}.yaml must map names to template strings")
    return data


def render(name: str, key: str, **variables: Any) -> str:
    """Render template ``key`` of prompt file ``name``."""
    templates = load_prompts(name)
    if key not in templates:
        raise ConfigError(f"prompts/{name}.yaml has no template {key!r}")
    try:
        return _ENV.from_string(templates[key]).render(**variables).strip()
    except jinja2.UndefinedError as exc:
        raise ConfigError(f"prompts/{name}.yaml:{key}: {exc.message}") from None
