"""JSON-schema constrained output from a pydantic model, and the check that closes the loop.

Engines constrain decoding with the schema; this module turns the text back into a validated
object or a ``StructuredOutputError`` that says what was wrong, never a half-parsed dict.
"""

from __future__ import annotations

import json

from pydantic import BaseModel, ValidationError

from manyheads.errors import StructuredOutputError


def json_schema(response_model: type[BaseModel]) -> dict:
    return response_model.model_json_schema()


def parse(text: str, response_model: type[BaseModel], finish_reason: str,
          max_tokens: int) -> tuple[BaseModel | None, StructuredOutputError | None]:
    """Validate ``text`` against ``response_model``: ``(object, None)`` or ``(None, error)``."""
    name = response_model.__name__
    if finish_reason == "length":
        return None, StructuredOutputError(
            f"{name}: output was cut at max_tokens={max_tokens} before the JSON was complete",
            raw=text, hint="raise max_tokens or simplify the schema")
    try:
        return response_model.model_validate_json(text), None
    except ValidationError as exc:
        try:
            json.loads(text)
            what = "does not match the schema"
        except json.JSONDecodeError:
            what = "is not valid JSON"
        return None, StructuredOutputError(
            f"{name}: model output {what}: {exc.errors()[0]['msg']} "
            f"(first 200 chars: {text[:200]!r})", raw=text)
