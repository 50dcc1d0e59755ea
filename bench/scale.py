"""Batch generation on Ray: exactly-once under a worker kill, throughput, ledger overhead.

Three Ray runs of the same ``--n`` demo-room dialogues on the embedded model (a local cluster,
``ray.init(num_cpus=2)``): 1 worker, 2 workers, and 2 workers where worker 0's process is killed
with SIGKILL while it holds an item. Each run gets a fresh SQLite database. Writes items,
``duplicates`` and ``lost`` (over all runs: must be 0), ``worker_kills`` survived, dialogues/hour
(end to end, incl. worker start-up, and per worker while busy) for 1 and 2 workers, and the
ledger's own cost per item (claim + attach + complete, no model) to ``bench/results/scale.json``.

On a 2-core machine two workers share the same two cores: the 2-worker figure shows the
overhead of splitting the work, not scaling.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import tempfile
import time
from collections import Counter
from pathlib import Path

import ray
from sqlalchemy import select

from manyheads.orchestration.conversation import ChatOptions
from manyheads.orchestration.harness.ray_executor import generate_on_ray
from manyheads.orchestration.registry import get_room
from manyheads.storage import Store, ledger
from manyheads.storage.models import DatasetItem, WorkItem

RESULTS = Path(__file__).parent / "results" / "scale.json"
TOPICS = ["tea", "rain", "maps", "bees", "salt", "jazz", "moss", "kites", "owls", "clay",
          "wind", "figs", "ink", "snow", "reed", "opal"]


def ledger_overhead_ms(url: str, n: int = 300) -> float:
    """Milliseconds per item for claim + attach_session + complete (the ledger alone)."""
    with Store.open(url) as store:
        dataset_id = store.create_dataset("overhead", room="demo").id
        with store.transaction() as db:
            ledger.enqueue(db, dataset_id, [(f"{i:06d}", {"prompt": "x"}) for i in range(n)])
        session = store.create_session("demo").id
        started = time.perf_counter()
        while True:
            with store.transaction() as db:
                claim = ledger.claim(db, dataset_id, "w", lease_s=60, max_attempts=3)
            if claim is None:
                break
            with store.transaction() as db:
                ledger.attach_session(db, claim.id, "w", session)
            with store.transaction() as db:
                ledger.complete(db, claim.id, "w", worker="w", dataset_id=dataset_id,
                                payload={"key": claim.key}, session_id=session)
        return (time.perf_counter() - started) / n * 1000


def run(folder: Path, label: str, n: int, workers: int, kill: bool,
        options: ChatOptions) -> dict:
    url = f"sqlite:///{folder / label}.db"
    killed: list[int] = []

    def watch(state: ledger.Progress, elapsed: float) -> None:
        if not kill or killed or not state.in_flight:
            return
        with Store.open(url) as store, store.reading() as db:
            owners = db.scalars(select(WorkItem.lease_owner).where(
                WorkItem.status == "leased", WorkItem.lease_owner.like("worker-0@%"))).all()
        if owners:
            pid = int(owners[0].split(":", 1)[1].split("/")[0])
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)

    prompts = [f"topic {i}: {TOPICS[i % len(TOPICS)]}" for i in range(n)]
    result = generate_on_ray(get_room("demo"), prompts, name=label, options=options,
                             engine="local", database_url=url, workers=workers, lease_s=6,
                             on_progress=watch)
    with Store.open(url) as store, store.reading() as db:
        keys = Counter(p["key"] for p in db.scalars(select(DatasetItem.payload)))
    expected = {f"{i:06d}" for i in range(n)}
    busy = [t["done"] / t["busy_s"] * 3600 for t in result["tallies"] if t["busy_s"]]
    return {"workers": workers, "items": n, "done": result["done"],
            "failed": result["failed"],
            "duplicates": sum(c - 1 for c in keys.values() if c > 1),
            "lost": len(expected - set(keys)), "worker_kills": len(killed),
            "elapsed_s": result["elapsed_s"],
            "dialogues_per_hour": result["dialogues_per_hour"],
            "per_worker_busy_dialogues_per_hour": [round(b, 1) for b in busy],
            "per_worker_done": result["workers"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=12)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    options = ChatOptions(config={"turns": 1, "max_tokens": 12})
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        overhead = ledger_overhead_ms(f"sqlite:///{folder}/overhead.db")
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
        try:
            runs = {label: run(folder, label, args.n, workers, kill, options)
                    for label, workers, kill in (("one", 1, False), ("two", 2, False),
                                                 ("two_kill", 2, True))}
        finally:
            ray.shutdown()
    result = {
        "machine": f"{os.cpu_count()} CPU cores, embedded model, local engine",
        "room": "demo", "settings": options.config,
        "items": sum(r["items"] for r in runs.values()),
        "duplicates": sum(r["duplicates"] for r in runs.values()),
        "lost": sum(r["lost"] for r in runs.values()),
        "worker_kills": runs["two_kill"]["worker_kills"],
        "worker_kills_survived": int(runs["two_kill"]["worker_kills"] > 0
                                     and runs["two_kill"]["lost"] == 0
                                     and runs["two_kill"]["duplicates"] == 0),
        "dialogues_per_hour": {"1": runs["one"]["dialogues_per_hour"],
                               "2": runs["two"]["dialogues_per_hour"]},
        "ratio_2_over_1": round(runs["two"]["dialogues_per_hour"]
                                / max(runs["one"]["dialogues_per_hour"], 1e-9), 2),
        "ledger_overhead_ms_per_item_sqlite": round(overhead, 2),
        "runs": runs,
    }
    if os.environ.get("MANYHEADS_TEST_POSTGRES_URL"):
        from sqlalchemy import create_engine, make_url, text

        admin = create_engine(os.environ["MANYHEADS_TEST_POSTGRES_URL"],
                              isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text('DROP DATABASE IF EXISTS "manyheads_scale_bench" WITH (FORCE)'))
            conn.execute(text('CREATE DATABASE "manyheads_scale_bench"'))
        url = make_url(os.environ["MANYHEADS_TEST_POSTGRES_URL"]).set(
            database="manyheads_scale_bench").render_as_string(hide_password=False)
        result["ledger_overhead_ms_per_item_postgresql"] = round(ledger_overhead_ms(url), 2)
        with admin.connect() as conn:
            conn.execute(text('DROP DATABASE "manyheads_scale_bench" WITH (FORCE)'))
        admin.dispose()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "runs"}, indent=2))


if __name__ == "__main__":
    main()
