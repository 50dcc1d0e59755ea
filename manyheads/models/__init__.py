"""Engines, the embedded model, and the heads (Medusa draft heads, uncertainty heads).

Nothing here knows about LangGraph or SQL.
"""

from manyheads.models.embedded import resolve_model
from manyheads.models.engine import Engine, Request
from manyheads.models.factory import make_engine
from manyheads.models.types import ChatMessage, Completion, SamplingParams, TokenLogprob, Usage

__all__ = ["ChatMessage", "Completion", "Engine", "Request", "SamplingParams", "TokenLogprob",
           "Usage", "make_engine", "resolve_model"]
