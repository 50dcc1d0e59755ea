"""Sixteen writers at once (8 threads, 8 processes): every message stored once, seqs gapless."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import storage_fixtures
from storage_fixtures import start_worker
from storage_workers import append_many

from manyheads.storage import Store

# Bound by assignment, not import: see test_storage_resume.py.
db_url = storage_fixtures.db_url

COUNT = 25
THREADS = [f"thread{i}" for i in range(8)]
PROCESSES = [f"process{i}" for i in range(8)]


def test_concurrent_writers_never_lose_repeat_or_skip(db_url: str, tmp_path: Path) -> None:
    with Store.open(db_url) as store:
        shared = store.create_session("crowd").id
        own = {w: store.create_session("solo", title=w).id for w in THREADS + PROCESSES}

        children = {
            w: start_worker("append", db_url, w, str(COUNT), shared, own[w], str(tmp_path))
            for w in PROCESSES
        }
        deadline = time.monotonic() + 60
        while not all((tmp_path / f"ready-{w}").exists() for w in PROCESSES):
            for w, child in children.items():
                assert child.poll() is None, f"{w} died:\n{child.communicate()[1]}"
            assert time.monotonic() < deadline, "writer processes did not start in time"
            time.sleep(0.02)

        with ThreadPoolExecutor(len(THREADS)) as pool:
            (tmp_path / "go").touch()
            futures = [pool.submit(append_many, store, w, COUNT, shared, own[w]) for w in THREADS]
            for future in futures:
                future.result()
        for w, child in children.items():
            _, stderr = child.communicate(timeout=120)
            assert child.returncode == 0, f"{w} failed:\n{stderr}"

        everyone = store.load(shared).messages
        solos = {w: store.load(own[w]).messages for w in own}

    writers = THREADS + PROCESSES
    assert [m.seq for m in everyone] == list(range(1, COUNT * len(writers) + 1))
    assert sorted((m.meta["writer"], m.meta["i"]) for m in everyone) == sorted(
        (w, i) for w in writers for i in range(COUNT)
    )
    for w in writers:
        # One writer appends in order, so its messages keep their order among everyone's.
        assert [m.meta["i"] for m in everyone if m.participant == w] == list(range(COUNT))
        assert [(m.seq, m.meta["i"]) for m in solos[w]] == [(i + 1, i) for i in range(COUNT)]
