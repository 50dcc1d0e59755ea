"""The ``manyheads`` command: chat, models, serve, demo, ui, and the tool groups."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from manyheads.cli.db import db_app
from manyheads.cli.eval import eval_app
from manyheads.cli.generate import generate_app
from manyheads.cli.medusa import medusa_app
from manyheads.cli.uhead import uhead_app
from manyheads.errors import ManyheadsError
from manyheads.settings import get_settings

app = typer.Typer(help="manyheads: multi-agent LLM rooms on one engine.", no_args_is_help=True,
                  pretty_exceptions_enable=False)
app.add_typer(db_app, name="db")
app.add_typer(medusa_app, name="medusa")
app.add_typer(uhead_app, name="uhead")
app.add_typer(eval_app, name="eval")
app.add_typer(generate_app, name="generate")
console = Console()
err_console = Console(stderr=True)

EngineOpt = Annotated[str | None, typer.Option(
    "--engine", "-e", help="local | vllm | openai (default: MANYHEADS_ENGINE or vllm)")]
ModelOpt = Annotated[str | None, typer.Option(
    "--model", "-m", help="model name, folder or .gguf (default: the embedded SmolLM2)")]


@app.command()
def models() -> None:
    """Show the configured engine and model and where the converted weights live."""
    from manyheads.models.embedded import embedded_gguf, resolve_model

    settings = get_settings()
    table = Table(title="manyheads models", show_header=False)
    table.add_row("engine", settings.engine)
    table.add_row("model", settings.model)
    table.add_row("embedded GGUF", str(embedded_gguf()))
    table.add_row("converted to", str(resolve_model(settings.model)))
    table.add_row("cache (MANYHEADS_HOME)", str(settings.home))
    console.print(table)


@app.command()
def chat(prompt: Annotated[str | None, typer.Argument(help="one message; omit for a REPL")] = None,
         engine: EngineOpt = None, model: ModelOpt = None,
         max_tokens: int = 256, temperature: float = 0.0) -> None:
    """Chat with the model, streaming the answer."""
    from manyheads.models import SamplingParams, make_engine

    params = SamplingParams(max_tokens=max_tokens, temperature=temperature)
    history: list[dict[str, str]] = []
    with make_engine(engine, model) as llm:
        while True:
            text = prompt if prompt is not None else console.input("[bold]you> [/]")
            if not text.strip():
                if prompt is not None:
                    raise ManyheadsError("empty prompt")
                continue
            history.append({"role": "user", "content": text})
            reply = asyncio.run(_print_stream(llm, history, params))
            history.append({"role": "assistant", "content": reply})
            if prompt is not None:
                return


async def _print_stream(llm, history, params) -> str:
    parts = []
    async for delta in llm.stream(history, params):
        parts.append(delta)
        console.print(delta, end="", markup=False, highlight=False)
    console.print()
    return "".join(parts)


@app.command()
def serve(engine: EngineOpt = None, model: ModelOpt = None, host: str = "127.0.0.1",
          port: int = 8000,
          api_key: Annotated[str | None, typer.Option(
              help="clients must send Authorization: Bearer KEY (default: MANYHEADS_API_KEY)")]
          = None,
          insecure: Annotated[bool, typer.Option(
              help="allow a non-loopback --host without an API key")] = False) -> None:
    """Serve the model over an OpenAI-compatible HTTP API (vLLM's own server for vLLM)."""
    from manyheads.models.serve import serve_main

    settings = get_settings()
    serve_main((engine or settings.engine).lower(), model or settings.model, host, port,
               api_key=api_key, insecure=insecure)


@app.command()
def demo(engine: EngineOpt = None, model: ModelOpt = None,
         room: Annotated[str, typer.Option(help="a room name, or 'all' for every room")] = "all",
         message: Annotated[str | None, typer.Option(help="the first message (default: the "
                                                          "room's example)")] = None,
         resume: Annotated[str | None, typer.Option(help="finish a session's interrupted turn, "
                                                         "by session id")] = None,
         config: Annotated[list[str] | None, typer.Option(
             "--set", help="room config override, KEY=VALUE (repeatable)")] = None,
         decoder: Annotated[str | None, typer.Option(
             help="local engine decode step: draft, vanilla, medusa or hydra "
                  "(default: MANYHEADS_DECODER, else the fastest measured)")] = None) -> None:
    """Run every room once on its example (or one room), printing and storing the transcripts."""
    from manyheads.cli.generate import parse_settings
    from manyheads.models import make_engine
    from manyheads.models.local.decoders import label as decoder_label
    from manyheads.orchestration.conversation import ChatOptions
    from manyheads.orchestration.registry import get_room, room_errors, rooms
    from manyheads.storage import Store

    for problem in room_errors():
        err_console.print(f"[yellow]skipped[/] {problem.source}: {problem.message}")
    options = ChatOptions(config=parse_settings(config or []))
    if resume is not None:
        with Store.open() as store:
            room = store.get_session(resume).room
    chosen = list(rooms().values()) if room == "all" else [get_room(room)]
    with Store.open() as store:
        settings = get_settings(**({"decoder": decoder} if decoder else {}))
        with console.status("starting the engine..."):
            llm = make_engine(engine, model, settings=settings)
        if llm.name == "local":
            console.print(f"[dim]decoder {decoder_label(settings.decoder)}[/]")
        with llm:
            for each in chosen:
                console.rule(f"[bold]{each.name}[/]: {each.description}")
                if resume is not None:
                    session_id = each.resume(llm, store, resume, listener=PrintingListener(),
                                             options=options)
                else:
                    text = message or each.example
                    _say("you", text)
                    session_id = each.converse(llm, store, None, text,
                                               listener=PrintingListener(), options=options)
                console.print(f"\nstored as session [bold]{session_id}[/]")


def _say(speaker: str, content: str, observer: bool = False) -> None:
    style = "dim" if observer else "bold cyan"
    tag = escape(" [observer]") if observer else ""
    console.print(f"[{style}]{escape(speaker)}{tag}:[/] {escape(content)}", highlight=False)


class PrintingListener:
    """A room listener for the terminal: stored messages as lines, progress dimmed."""

    def status(self, text: str) -> None:
        console.print(f"[dim]… {escape(text)}[/]", highlight=False)

    def message(self, message) -> None:
        if message.participant != "you":
            _say(message.participant or message.role, message.content,
                 message.visibility != "public")

    def delta(self, speaker: str, text: str) -> None:
        pass  # the whole turn is printed once it is stored


@app.command()
def ui(host: str = "127.0.0.1", port: int = 8501) -> None:
    """The chat app: Streamlit on localhost (open the printed URL)."""
    page = Path(__file__).parent.parent / "ui" / "app.py"
    argv = [sys.executable, "-m", "streamlit", "run", str(page), "--server.address", host,
            "--server.port", str(port), "--server.headless", "true",
            "--browser.gatherUsageStats", "false",
            # The file watcher walks transformers' lazy modules and floods the terminal with
            # tracebacks; the app needs no reload on edit. The toolbar keeps what a user needs.
            "--server.fileWatcherType", "none", "--client.toolbarMode", "minimal"]
    console.print(f"manyheads chat on http://{host}:{port}")
    os.execv(argv[0], argv)


def main() -> None:
    """Entry point: user errors print one clear line instead of a traceback."""
    try:
        app()
    except ManyheadsError as exc:
        err_console.print(f"[bold red]error:[/] {exc}", highlight=False)
        sys.exit(2)


if __name__ == "__main__":
    main()
