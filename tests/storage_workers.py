"""Work the storage tests run in separate processes (and, for ``append_many``, threads).

Usage:
    python storage_workers.py append URL WRITER COUNT SHARED_ID OWN_ID GATE_DIR
    python storage_workers.py graph URL SESSION_ID start|resume STEPS PAUSE_S

``append`` opens the store, reports ready by creating ``GATE_DIR/ready-WRITER``, waits for
``GATE_DIR/go`` so that all writers start together, then appends. ``graph`` runs (or resumes)
a checkpointed LangGraph loop and prints the steps this process executed as JSON.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import TypedDict

from manyheads.storage import Store


def append_many(store: Store, writer: str, count: int, shared_id: str, own_id: str) -> None:
    """Alternate between the session everyone writes to and this writer's own session."""
    for i in range(count):
        for session_id in (shared_id, own_id):
            store.append_message(
                session_id,
                role="user",
                participant=writer,
                content=f"{writer} says {i}",
                meta={"writer": writer, "i": i},
            )


class StepState(TypedDict):
    step: int


def run_graph(url: str, session_id: str, *, resume: bool, steps: int, pause_s: float) -> list[int]:
    """Run a loop of ``steps`` nodes, each storing one message, checkpointed per step.

    Why the message append is keyed by step: LangGraph checkpoints a step only after its node
    has returned. A process killed between the node's commit to the store and that checkpoint
    resumes from the previous checkpoint and runs the same step again. The idempotency key
    (unique per session in the database) turns that second append into a lookup of the first,
    so the transcript holds each step's message exactly once, with gapless ``seq``.

    ``durability="sync"``, as the rooms run (``orchestration/contract.py``): LangGraph's default
    writes a step's checkpoint while the next step already runs, so on a loaded machine a kill
    could land two steps past the last saved checkpoint, and the resume would run both again.
    """
    from langgraph.graph import END, START, StateGraph  # only this command pays for the import

    executed: list[int] = []
    with Store.open(url) as store, store.checkpointer() as checkpointer:

        def speak(state: StepState) -> StepState:
            step = state["step"]
            executed.append(step)
            store.append_message(
                session_id,
                role="assistant",
                participant="narrator",
                content=f"step {step} of the story",
                meta={"step": step},
                idempotency_key=f"step-{step}",
            )
            time.sleep(pause_s)  # the window in which the test kills us
            return {"step": step + 1}

        builder = StateGraph(StepState)
        builder.add_node("speak", speak)
        builder.add_edge(START, "speak")
        builder.add_conditional_edges("speak", lambda s: "speak" if s["step"] < steps else END)
        graph = builder.compile(checkpointer=checkpointer)
        config = {"configurable": {"thread_id": session_id}}
        graph.invoke(None if resume else {"step": 0}, config, durability="sync")
    return executed


def main(argv: list[str]) -> None:
    command, url, *rest = argv
    if command == "append":
        writer, count, shared_id, own_id, gate_dir = rest
        gate = Path(gate_dir)
        with Store.open(url) as store:
            (gate / f"ready-{writer}").touch()
            while not (gate / "go").exists():
                time.sleep(0.01)
            append_many(store, writer, int(count), shared_id, own_id)
    elif command == "graph":
        session_id, mode, steps, pause_s = rest
        executed = run_graph(
            url, session_id, resume=mode == "resume", steps=int(steps), pause_s=float(pause_s)
        )
        print(json.dumps(executed))
    else:
        raise SystemExit(f"unknown command {command!r}")


if __name__ == "__main__":
    main(sys.argv[1:])
