"""``--data-engine`` of the training CLIs: which engine writes the text that heads train on.

The features (hidden states, attention, probabilities) always come from the local model; the
text comes from that same model (``local``) or from vLLM on its weights (``vllm``), which
generates batches far faster.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from typing import Annotated

import typer

DATA_ENGINES = ("local", "vllm")


def check_data_engine(value: str) -> str:
    if value not in DATA_ENGINES:
        raise typer.BadParameter(f"{value!r}: choose one of {', '.join(DATA_ENGINES)}",
                                 param_hint="--data-engine")
    return value


DataEngineOpt = Annotated[str, typer.Option(
    "--data-engine", callback=check_data_engine,
    help="engine that writes the text: local | vllm (features always come from the local "
         "model)")]


def text_engine(data_engine: str, local_engine) -> AbstractContextManager:
    """The engine that writes the text: ``local_engine`` itself (left open on exit), or a vLLM
    engine on its weights (started now, closed on exit)."""
    if check_data_engine(data_engine) == "local":
        return nullcontext(local_engine)
    from manyheads.models import make_engine

    return make_engine("vllm", model=str(local_engine.path))
