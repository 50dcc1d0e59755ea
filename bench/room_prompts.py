"""Record the requests real room turns send to the engine, as a decoding workload.

Every built-in room answers its packaged example and one follow-up on the embedded model; each
request (conversation, JSON schema if any, max_tokens) is written to
``bench/data/room_prompts.jsonl``. ``bench/medusa.py`` replays them: free-text requests are the
"room transcripts" workload, schema requests the "structured" one.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from rich.progress import track

from manyheads import ChatOptions, Store, get_room, make_engine
from manyheads.models.engine import Engine

OUT = Path(__file__).parent / "data" / "room_prompts.jsonl"
ROOMS = ("demo", "spp", "multiplex", "persuasion", "studio")
FOLLOW_UP = "Say more about the strongest point, briefly."


class Recorder(Engine):
    """The real engine, keeping each request it is sent."""

    def __init__(self, inner: Engine, room: str) -> None:
        self.inner, self.room, self.requests = inner, room, []
        self.name, self.model_name = inner.name, inner.model_name

    def _keep(self, request) -> None:
        self.requests.append({"room": self.room, "prompt": request.prompt,
                              "schema": request.schema,
                              "max_tokens": request.params.max_tokens})

    def _run(self, requests):
        for request in requests:
            self._keep(request)
        return self.inner._run(requests)

    def _stream(self, request):
        self._keep(request)
        return self.inner._stream(request)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rooms", nargs="*", default=list(ROOMS))
    args = parser.parse_args()
    rows: list[dict] = []
    with make_engine() as engine, tempfile.TemporaryDirectory() as tmp, \
            Store.open(f"sqlite:///{tmp}/db.sqlite") as store:
        for name in track(args.rooms, description="recording room turns"):
            room = get_room(name)
            recorder = Recorder(engine, name)
            session = room.converse(recorder, store, None, room.example, options=ChatOptions())
            room.converse(recorder, store, session, FOLLOW_UP, options=ChatOptions())
            rows += recorder.requests
    OUT.parent.mkdir(exist_ok=True)
    OUT.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    print(f"{len(rows)} requests ({sum(r['schema'] is not None for r in rows)} structured) "
          f"-> {OUT}")


if __name__ == "__main__":
    main()
