"""The local engine's decode steps by name, and the speed-up each was measured to give here.

``bench/medusa.py`` measures every decoder against vanilla on this machine and writes the
summary to ``speeds.json`` beside this module; the chat app and the CLI show it next to the
choice, and the default decoder is the fastest lossless one it measured.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from manyheads.errors import ConfigError

DecoderName = Literal["draft", "draft-hydra", "vanilla", "medusa", "hydra"]
DECODERS: dict[str, str] = {
    "draft": "grammar jump-forward + n-gram drafts",
    "draft-hydra": "grammar jump-forward + n-gram drafts, in a Hydra tree for free text",
    "vanilla": "one token per pass",
    "medusa": "Medusa heads, a fixed tree",
    "hydra": "Hydra heads, a tree drawn per step from their confidence",
}
SPEEDS = Path(__file__).with_name("speeds.json")


def make_step(engine: Any, name: str) -> Any:
    """The decode step (a ``StepFn``) called ``name`` for ``engine`` (a ``LocalEngine``).
    Imported lazily: the chat app reads the labels without loading torch."""
    from manyheads.models.local.decode import vanilla_step
    from manyheads.models.local.speculate import DraftStep

    if name == "draft":
        return DraftStep(engine.encode)
    if name == "draft-hydra":
        from manyheads.models.medusa.heads import default_heads_dir
        from manyheads.models.medusa.step import MedusaStep, heads_for

        # Hydra heads draw their tree per step (``MedusaStep._drawn_tree``)
        return DraftStep(engine.encode,
                         medusa=MedusaStep(heads_for(engine, default_heads_dir(sequential=True))))
    if name == "vanilla":
        return vanilla_step
    if name in ("medusa", "hydra"):
        from manyheads.models.medusa.heads import default_heads_dir
        from manyheads.models.medusa.step import enable_medusa

        return enable_medusa(engine, default_heads_dir(sequential=name == "hydra"))
    raise ConfigError(f"unknown decoder {name!r}", hint=f"choose one of {', '.join(DECODERS)}")


def measured() -> dict[str, Any]:
    """What ``bench/medusa.py`` last measured here: ``{"decoders": {name: {workload: x}},
    "settings": ...}``; empty when it never ran."""
    try:
        return json.loads(SPEEDS.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def label(name: str) -> str:
    """``name``, what it does, and its measured speed-up on generic and room prompts."""
    speeds = measured().get("decoders", {}).get(name)
    text = f"{name}: {DECODERS[name]}"
    if speeds:
        text += " (" + ", ".join(f"{x:.2f}x {w}" for w, x in speeds.items()) + " vs vanilla here)"
    return text
