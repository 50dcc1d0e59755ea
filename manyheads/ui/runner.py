"""Run one room turn on a worker thread and hand its events to the page as they happen.

Streamlit draws only from the script thread, and ``st.write_stream`` wants a generator; the room
reports through a ``Listener`` on the worker. A queue joins the two: the page pulls events in
order, streaming a speaker's token deltas and drawing each stored message as it lands.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from manyheads.storage.models import Message


@dataclass(frozen=True)
class Event:
    kind: str  # "status" | "message" | "delta" | "error" | "done"
    text: str = ""
    speaker: str = ""
    message: Message | None = None
    error: BaseException | None = None


class QueueListener:
    """A room ``Listener`` that forwards everything to a queue."""

    def __init__(self, events: queue.Queue[Event]) -> None:
        self.events = events

    def status(self, text: str) -> None:
        self.events.put(Event("status", text=text))

    def message(self, message: Message) -> None:
        self.events.put(Event("message", message=message))

    def delta(self, speaker: str, text: str) -> None:
        self.events.put(Event("delta", text=text, speaker=speaker))


class Turn:
    """One room turn running in the background; iterate ``events()`` on the script thread."""

    def __init__(self, work: Callable[[QueueListener], Any]) -> None:
        self._events: queue.Queue[Event] = queue.Queue()
        self._pending: Event | None = None
        self.result: Any = None
        self._thread = threading.Thread(target=self._run, args=(work,), daemon=True)
        self._thread.start()

    def _run(self, work: Callable[[QueueListener], Any]) -> None:
        try:
            self.result = work(QueueListener(self._events))
        except BaseException as exc:  # shown on the page; the room has stored what it said
            self._events.put(Event("error", error=exc))
        finally:
            self._events.put(Event("done"))

    def next(self) -> Event:
        if self._pending is not None:
            event, self._pending = self._pending, None
            return event
        return self._events.get()

    def deltas(self, first: Event) -> Iterator[str]:
        """``first`` and the deltas right after it from the same speaker (for write_stream)."""
        yield first.text
        while True:
            event = self.next()
            if event.kind != "delta" or event.speaker != first.speaker:
                self._pending = event
                return
            yield event.text
