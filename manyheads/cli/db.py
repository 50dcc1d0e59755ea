"""``manyheads db``: migrate the store and look into it from the shell.

Every command takes ``--url``; without it the store is the one ``MANYHEADS_DATABASE_URL`` or
``MANYHEADS_HOME`` points at, the same one the rooms write to.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Annotated, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from manyheads.errors import ManyheadsError
from manyheads.storage import migrate
from manyheads.storage.repository import TranscriptFormat
from manyheads.storage.store import Store

db_app = typer.Typer(
    help="Migrate and inspect the session database (SQLite file or PostgreSQL).",
    no_args_is_help=True,
)
console = Console()
errors = Console(stderr=True)
T = TypeVar("T")

UrlOption = Annotated[
    str | None,
    typer.Option("--url", help="Database URL; default: MANYHEADS_DATABASE_URL or the home file."),
]


@contextmanager
def _reporting_errors() -> Iterator[None]:
    """Show a ``ManyheadsError`` as one red line and exit 1, instead of a traceback."""
    try:
        yield
    except ManyheadsError as exc:
        errors.print(f"[red]error:[/red] {escape(str(exc))}", highlight=False)
        raise typer.Exit(1) from None


def _with_store(url: str | None, work: Callable[[Store], T]) -> T:
    with _reporting_errors(), Store.open(url) as store:
        return work(store)


@db_app.command()
def upgrade(
    url: UrlOption = None,
    revision: Annotated[str, typer.Option(help="Target revision.")] = "head",
) -> None:
    """Migrate the database schema up to the newest revision (or --revision)."""
    with _reporting_errors():
        migrate.upgrade(url, revision)
        console.print(f"schema at revision {migrate.current_revision(url)}")


@db_app.command()
def downgrade(
    revision: Annotated[str, typer.Argument(help="Target revision; 'base' drops all tables.")],
    url: UrlOption = None,
) -> None:
    """Migrate the database schema down to REVISION."""
    with _reporting_errors():
        migrate.downgrade(url, revision)
        console.print(f"schema at revision {migrate.current_revision(url) or 'base'}")


@db_app.command()
def current(url: UrlOption = None) -> None:
    """Show the schema revision of the database and the newest one this version knows."""
    with _reporting_errors():
        revision = migrate.current_revision(url) or "base (empty)"
        console.print(f"current: {revision}\nhead:    {migrate.head_revision()}")


@db_app.command()
def sessions(
    room: Annotated[str | None, typer.Option(help="Only this room's sessions.")] = None,
    status: Annotated[str | None, typer.Option(help="Only sessions with this status.")] = None,
    limit: Annotated[int, typer.Option(help="At most this many, newest first.")] = 50,
    url: UrlOption = None,
) -> None:
    """List stored sessions, newest first."""
    rows = _with_store(url, lambda s: s.list_sessions(room=room, status=status, limit=limit))
    table = Table()
    table.add_column("id", no_wrap=True)  # whole, so it can be pasted into `export`
    table.add_column("room")
    table.add_column("title")
    table.add_column("status", no_wrap=True)
    table.add_column("updated (UTC)", no_wrap=True)
    for row in rows:
        table.add_row(row.id, row.room, row.title, row.status, f"{row.updated_at:%Y-%m-%d %H:%M}")
    console.print(table)


@db_app.command()
def export(
    session_id: Annotated[str, typer.Argument(help="Session id, as `manyheads db sessions`.")],
    format: Annotated[TranscriptFormat, typer.Option(help="Output format.")] = "json",
    url: UrlOption = None,
) -> None:
    """Print a session's full transcript."""
    # Plain print: a transcript is data to redirect into a file, not text to colour.
    print(_with_store(url, lambda s: s.export_transcript(session_id, format)).rstrip("\n"))


@db_app.command()
def search(
    query: Annotated[str, typer.Argument(help="Words that must all appear (stemmed).")],
    room: Annotated[str | None, typer.Option(help="Only this room's messages.")] = None,
    limit: Annotated[int, typer.Option(help="At most this many, best match first.")] = 20,
    url: UrlOption = None,
) -> None:
    """Full-text search over every stored message."""
    hits = _with_store(url, lambda s: s.search_messages(query, room=room, limit=limit))
    table = Table()
    table.add_column("session", no_wrap=True)
    table.add_column("room")
    table.add_column("seq", justify="right")
    table.add_column("speaker")
    table.add_column("message")
    for m in hits:
        speaker = m.participant or "system"
        table.add_row(m.session_id, m.session.room, str(m.seq), speaker, m.content)
    console.print(table)
