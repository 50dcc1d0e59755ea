"""The work ledger: leases, takeover of a dead worker's item, exactly-once commits."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

from sqlalchemy import func, select
from storage_fixtures import db_url, store  # noqa: F401 - pytest fixtures

from manyheads.storage import Store, ledger
from manyheads.storage.models import DatasetItem, utcnow

ITEMS = [(f"{i:06d}", {"prompt": f"p{i}"}) for i in range(6)]


def _dataset(store: Store) -> int:  # noqa: F811
    dataset_id = store.create_dataset("d", room="demo").id
    with store.transaction() as db:
        assert ledger.enqueue(db, dataset_id, ITEMS, done={"000005"}) == 6
        assert ledger.enqueue(db, dataset_id, ITEMS) == 0  # idempotent: a second driver
    return dataset_id


def _claim(store: Store, dataset_id: int, owner: str, **kw) -> ledger.Claim | None:  # noqa: F811
    with store.transaction() as db:
        return ledger.claim(db, dataset_id, owner, lease_s=30, max_attempts=2, **kw)


def _complete(store: Store, dataset_id: int, claim: ledger.Claim, owner: str) -> bool:  # noqa: F811
    with store.transaction() as db:
        return ledger.complete(db, claim.id, owner, worker=owner, dataset_id=dataset_id,
                               payload={"key": claim.key}, session_id=None)


def test_an_expired_lease_is_taken_over_and_the_dead_owner_commits_nothing(store):  # noqa: F811
    dataset_id = _dataset(store)
    first = _claim(store, dataset_id, "a")
    assert first is not None and first.key == "000000" and first.attempts == 1
    second = _claim(store, dataset_id, "b")
    assert second is not None and second.key == "000001"  # a's live lease is not claimable
    with store.transaction() as db:
        assert ledger.attach_session(db, first.id, "a", store.create_session("demo").id)
    later = utcnow() + timedelta(seconds=31)  # a's lease has lapsed (a died)
    taken = _claim(store, dataset_id, "c", now=later)
    assert taken is not None and taken.key == "000000" and taken.attempts == 2
    assert taken.stale_session_id is not None  # c deletes what a half-wrote
    assert not _complete(store, dataset_id, first, "a")  # a comes back too late
    with store.transaction() as db:
        assert not ledger.renew(db, first.id, "a", lease_s=30)
    assert _complete(store, dataset_id, taken, "c")
    assert _complete(store, dataset_id, second, "b")
    assert not _complete(store, dataset_id, taken, "c")  # done is done
    with store.reading() as db:
        state = ledger.progress(db, dataset_id)
        rows = db.scalar(select(func.count()).select_from(DatasetItem))
    assert (state.done, state.pending, state.in_flight, rows) == (3, 3, 0, 2)
    assert state.workers == {"b": 1, "c": 1}


def test_failures_retry_then_fail_and_a_rerun_requeues_them(store):  # noqa: F811
    dataset_id = _dataset(store)
    for attempt in (1, 2):
        claim = _claim(store, dataset_id, "w")
        assert claim is not None and claim.key == "000000" and claim.attempts == attempt
        with store.transaction() as db:
            assert ledger.fail(db, claim.id, "w", error="boom", max_attempts=2)
    with store.reading() as db:
        assert ledger.progress(db, dataset_id).failed == 1
    # a lease that lapses on its last attempt is marked failed, not claimed a third time
    last = _claim(store, dataset_id, "w")
    assert last is not None and last.key == "000001"
    _claim(store, dataset_id, "x", now=utcnow() + timedelta(seconds=31))
    again = _claim(store, dataset_id, "y", now=utcnow() + timedelta(seconds=62))
    assert again is not None and again.key != "000001"
    with store.transaction() as db:
        assert ledger.retry_failed(db, dataset_id) >= 1
    with store.reading() as db:
        assert ledger.progress(db, dataset_id).failed == 0


def test_concurrent_claimers_never_get_the_same_item(db_url):  # noqa: F811
    with Store.open(db_url) as setup:
        dataset_id = setup.create_dataset("d", room="demo").id
        with setup.transaction() as db:
            ledger.enqueue(db, dataset_id, [(f"{i:06d}", {}) for i in range(40)])

    def drain(owner: str) -> list[str]:
        got = []
        with Store.open(db_url) as mine:
            while (claim := _claim(mine, dataset_id, owner)) is not None:
                assert _complete(mine, dataset_id, claim, owner)
                got.append(claim.key)
        return got

    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(drain, ["a", "b", "c", "d"]))
    keys = [k for got in results for k in got]
    assert sorted(keys) == [f"{i:06d}" for i in range(40)]  # every item once, none twice
    with Store.open(db_url) as check, check.reading() as db:
        assert db.scalar(select(func.count()).select_from(DatasetItem)) == 40
