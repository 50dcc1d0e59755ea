"""One room turn in a fresh interpreter, to be killed mid-turn by a test.

``python room_worker.py DB_URL ROOM MESSAGE CONFIG_JSON``: runs ``ROOM.converse`` on the local
engine; prints ``started`` once the engine is up (the test starts its clock there).
"""

from __future__ import annotations

import json
import sys

import torch

from manyheads import ChatOptions, Store, get_room
from manyheads.models.local.engine import LocalEngine


def main() -> None:
    url, name, message, config = sys.argv[1:5]
    torch.set_num_threads(1)
    engine = LocalEngine()
    print("started", flush=True)
    with Store.open(url) as store:
        get_room(name).converse(engine, store, None, message,
                                options=ChatOptions(config=json.loads(config)))
    print("finished", flush=True)


if __name__ == "__main__":
    main()
