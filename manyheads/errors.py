"""One root error class for everything a user can cause or fix.

Every error names what was wrong and where; ``as_dict`` gives the UI and CLI a stable shape.
``assert`` stays reserved for internal invariants.
"""

from __future__ import annotations


class ManyheadsError(Exception):
    """Root of all user-facing errors."""

    hint: str | None = None

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        if hint is not None:
            self.hint = hint

    def as_dict(self) -> dict[str, str | None]:
        return {"type": type(self).__name__, "message": str(self), "hint": self.hint}

    def __str__(self) -> str:
        message = super().__str__()
        return f"{message} (hint: {self.hint})" if self.hint else message


class ConfigError(ManyheadsError):
    """A setting, config file or scenario file is malformed."""


class ModelNotFoundError(ManyheadsError):
    """A model name or path does not resolve to usable weights."""


class EngineError(ManyheadsError):
    """The inference engine failed or was asked for something it cannot do."""


class EngineUnavailableError(EngineError):
    """A remote engine could not be reached."""


class PromptError(EngineError):
    """A prompt is empty or longer than the model's context."""


class StructuredOutputError(EngineError):
    """The model's output did not parse or validate against the requested schema."""

    def __init__(self, message: str, *, raw: str = "", hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.raw = raw


class StorageError(ManyheadsError):
    """The session store is unreachable, locked, or at the wrong schema version."""
