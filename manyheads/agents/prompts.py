"""Prompts are package data: a YAML file of Jinja templates beside the code that uses them.

Each room keeps its words in its own package (``rooms/<name>/prompts.yaml``), and a user's room
keeps them in the user's package: ``Prompts(__package__)`` finds them either way. Rendering uses
``StrictUndefined`` so a missing variable is an error, not a silent blank.

Few-shot exchanges live beside them in ``examples.yaml``: a role's list of ``{ask, answer}``
templates, rendered with the same variables (``Prompts.examples``).
"""

from __future__ import annotations

from functools import cache
from importlib import resources
from typing import Any

import jinja2
import yaml
from pydantic import ValidationError

from manyheads.agents.agent import Example
from manyheads.errors import ConfigError

_ENV = jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=False,
                          autoescape=False)


def _where(package: str, name: str) -> str:
    """How an error names the file: ``my/room/prompts.yaml``."""
    return f"{package.replace('.', '/')}/{name}.yaml"


@cache
def load_prompts(package: str, name: str = "prompts") -> dict[str, str]:
    """The templates of ``<package>/<name>.yaml`` by key."""
    where = _where(package, name)
    try:
        path = resources.files(package) / f"{name}.yaml"
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (FileNotFoundError, ModuleNotFoundError):
        raise ConfigError(f"no prompt file {where}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{where} is not valid YAML: {exc}") from None
    if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
        raise ConfigError(f"{where} must map names to template strings")
    return data


@cache
def load_examples(package: str, name: str = "examples") -> dict[str, list[dict[str, str]]]:
    """The few-shot templates of ``<package>/<name>.yaml`` by role ({} when there is no file)."""
    where = _where(package, name)
    path = resources.files(package) / f"{name}.yaml"
    if not path.is_file():
        return {}
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError(f"{where} is not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{where} must map roles to lists of {{ask, answer}}")
    for role, items in data.items():
        try:
            [Example.model_validate(item) for item in items or []]
        except (ValidationError, TypeError) as exc:
            raise ConfigError(f"{where}:{role}: each example needs an ask and an answer "
                              f"({exc})") from None
    return data


class Prompts:
    """The prompt templates of one package: ``PROMPTS = Prompts(__package__)``."""

    def __init__(self, package: str, name: str = "prompts") -> None:
        self.package, self.name = package, name

    def render(self, key: str, **variables: Any) -> str:
        templates = load_prompts(self.package, self.name)
        where = _where(self.package, self.name)
        if key not in templates:
            raise ConfigError(f"{where} has no template {key!r}")
        try:
            return _ENV.from_string(templates[key]).render(**variables).strip()
        except jinja2.UndefinedError as exc:
            raise ConfigError(f"{where}:{key}: {exc.message}") from None

    def examples(self, role: str, **variables: Any) -> list[Example]:
        """The few-shot exchanges for ``role``, rendered ([] when the package has none)."""
        items = load_examples(self.package).get(role) or []
        where = _where(self.package, "examples")
        try:
            return [Example(ask=_ENV.from_string(item["ask"]).render(**variables).strip(),
                            answer=_ENV.from_string(item["answer"]).render(**variables).strip())
                    for item in items]
        except jinja2.UndefinedError as exc:
            raise ConfigError(f"{where}:{role}: {exc.message}") from None
