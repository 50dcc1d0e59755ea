"""A run killed with SIGKILL resumes from its last checkpoint without losing or repeating."""

from __future__ import annotations

import json
import signal
import time

import storage_fixtures
from storage_fixtures import run_worker, start_worker

from manyheads.storage import Store

# Bound by assignment, not import: pytest finds fixtures by name in the module, and linters
# then do not read each test's parameter as a redefinition of an unused import.
db_url = storage_fixtures.db_url

STEPS = 8
PAUSE_S = "0.3"
KILL_AFTER = 3


def test_killed_run_resumes_from_checkpoint_with_each_message_once(db_url: str) -> None:
    with Store.open(db_url) as store:
        session_id = store.create_session("story", title="crash and resume").id

        child = start_worker("graph", db_url, session_id, "start", str(STEPS), PAUSE_S)
        deadline = time.monotonic() + 60
        while len(store.load(session_id).messages) < KILL_AFTER:
            assert child.poll() is None, f"run ended before the kill:\n{child.communicate()[1]}"
            assert time.monotonic() < deadline, "run stored no messages in time"
            time.sleep(0.02)
        child.send_signal(signal.SIGKILL)
        child.communicate()
        before = [(m.seq, m.content) for m in store.load(session_id).messages]
        assert KILL_AFTER <= len(before) < STEPS

        resumed = run_worker("graph", db_url, session_id, "resume", str(STEPS), PAUSE_S)
        executed = json.loads(resumed.stdout.splitlines()[-1])

        after = store.load(session_id).messages
    assert [m.seq for m in after] == list(range(1, STEPS + 1))
    assert [m.meta["step"] for m in after] == list(range(STEPS))
    assert [(m.seq, m.content) for m in after][: len(before)] == before
    # Resumed from the checkpoint, not from scratch: at most the interrupted step ran again.
    assert executed[0] in (len(before) - 1, len(before))
    assert executed == list(range(executed[0], STEPS))
