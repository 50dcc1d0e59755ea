"""The one error class of the uhead package (a ``ManyheadsError``, so the CLI shows it)."""

from __future__ import annotations

from manyheads.errors import ManyheadsError


class UHeadError(ManyheadsError):
    """A UHead checkpoint, dataset or configuration cannot be used."""
