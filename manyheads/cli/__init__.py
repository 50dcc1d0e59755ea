"""Every `manyheads` command: `main` is the console script's entry point."""

from manyheads.cli.main import app, main

__all__ = ["app", "main"]
