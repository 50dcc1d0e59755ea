"""The work ledger: exactly-once dataset items for many workers, as functions of a ``Session``.

Like ``repository``, the caller owns the transaction; run each call in ``Store.transaction()``
(a write transaction: ``BEGIN IMMEDIATE`` on SQLite).

- ``enqueue`` adds the items a job needs (idempotent; two drivers may call it at once).
- ``claim`` leases one item: a ``pending`` one, or a ``leased`` one whose lease expired because
  its worker died. PostgreSQL locks the row with ``SELECT ... FOR UPDATE SKIP LOCKED``, so
  workers on many machines claim different items without waiting on each other. SQLite has one
  writer at a time (``BEGIN IMMEDIATE``), which is the single-machine fallback.
- ``complete`` stores the dataset row and marks the item ``done`` in one transaction, and only
  while the caller still holds the lease: a worker whose lease was taken over stores nothing.
- ``renew`` is the heartbeat that keeps a long item's lease; ``fail`` gives the item back (or
  marks it ``failed`` after ``max_attempts``).

Lease times come from the workers' clocks: keep cluster clocks in sync (NTP) and leases long
compared with the skew.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, case, func, or_, select, update
from sqlalchemy import orm as sa_orm
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from manyheads.storage.models import DatasetItem, WorkItem, WorkStatus, utcnow


@dataclass(frozen=True)
class Claim:
    """A leased item: what to generate, and the stale session an earlier attempt left."""

    id: int
    key: str
    input: dict[str, Any]
    attempts: int
    stale_session_id: str | None


def enqueue(db: sa_orm.Session, dataset_id: int, items: list[tuple[str, dict[str, Any]]],
            *, done: set[str] | frozenset[str] = frozenset()) -> int:
    """Add the items not in the ledger yet (keys in ``done`` enter as done); returns how many."""
    if not items:
        return 0
    now = utcnow()
    rows = [{"dataset_id": dataset_id, "key": key, "input": value,
             "status": WorkStatus.DONE.value if key in done else WorkStatus.PENDING.value,
             "attempts": 0, "updated_at": now} for key, value in items]
    insert = pg_insert if db.get_bind().dialect.name == "postgresql" else sqlite_insert
    added = db.scalars(insert(WorkItem).values(rows).on_conflict_do_nothing(
        index_elements=["dataset_id", "key"]).returning(WorkItem.id)).all()
    return len(added)


def claim(db: sa_orm.Session, dataset_id: int, owner: str, *, lease_s: float,
          max_attempts: int, now: datetime | None = None) -> Claim | None:
    """Lease the next claimable item to ``owner``; None when nothing is claimable now.

    An expired lease that already had ``max_attempts`` tries is marked ``failed`` instead.
    """
    now = now or utcnow()
    claimable = and_(WorkItem.dataset_id == dataset_id, or_(
        WorkItem.status == WorkStatus.PENDING.value,
        and_(WorkItem.status == WorkStatus.LEASED.value, WorkItem.lease_expires_at < now)))
    while True:
        query = select(WorkItem).where(claimable).order_by(WorkItem.id).limit(1)
        if db.get_bind().dialect.name == "postgresql":
            query = query.with_for_update(skip_locked=True)
        item = db.scalars(query).one_or_none()
        if item is None:
            return None
        if item.attempts >= max_attempts:
            item.status = WorkStatus.FAILED.value
            item.lease_owner, item.lease_expires_at = None, None
            item.error = (item.error or f"lease expired after {item.attempts} attempts "
                          "(did its worker die?)")
            db.flush()
            continue
        stale = item.session_id
        item.status, item.lease_owner = WorkStatus.LEASED.value, owner
        item.lease_expires_at = now + timedelta(seconds=lease_s)
        item.attempts += 1
        item.session_id = None
        db.flush()
        return Claim(item.id, item.key, dict(item.input), item.attempts, stale)


def _held(db: sa_orm.Session, item_id: int, owner: str) -> WorkItem | None:
    """The item, row-locked, if ``owner`` still holds its lease."""
    query = select(WorkItem).where(WorkItem.id == item_id)
    if db.get_bind().dialect.name == "postgresql":
        query = query.with_for_update()
    item = db.scalars(query).one_or_none()
    if item is None or item.status != WorkStatus.LEASED.value or item.lease_owner != owner:
        return None
    return item


def attach_session(db: sa_orm.Session, item_id: int, owner: str, session_id: str) -> bool:
    """Record the session this attempt writes into (so a taker-over can delete it)."""
    item = _held(db, item_id, owner)
    if item is not None:
        item.session_id = session_id
    return item is not None


def renew(db: sa_orm.Session, item_id: int, owner: str, *, lease_s: float) -> bool:
    """Extend the lease; False when ``owner`` lost it (expired and taken over)."""
    result = db.execute(update(WorkItem).where(
        WorkItem.id == item_id, WorkItem.lease_owner == owner,
        WorkItem.status == WorkStatus.LEASED.value).values(
        lease_expires_at=utcnow() + timedelta(seconds=lease_s), updated_at=utcnow()))
    return result.rowcount == 1


def complete(db: sa_orm.Session, item_id: int, owner: str, *, worker: str, dataset_id: int,
             payload: dict[str, Any], session_id: str | None) -> bool:
    """Store the dataset row and mark the item done, atomically; False (nothing stored) when
    ``owner`` no longer holds the lease."""
    item = _held(db, item_id, owner)
    if item is None:
        return False
    db.add(DatasetItem(dataset_id=dataset_id, session_id=session_id, payload=payload))
    item.status, item.worker, item.error = WorkStatus.DONE.value, worker, None
    item.lease_owner, item.lease_expires_at = None, None
    db.flush()
    return True


def fail(db: sa_orm.Session, item_id: int, owner: str, *, error: str, max_attempts: int) -> bool:
    """Give the item back for another try, or mark it failed after ``max_attempts``."""
    item = _held(db, item_id, owner)
    if item is None:
        return False
    final = item.attempts >= max_attempts
    item.status = WorkStatus.FAILED.value if final else WorkStatus.PENDING.value
    item.lease_owner, item.lease_expires_at, item.error = None, None, error[:2000]
    db.flush()
    return True


def retry_failed(db: sa_orm.Session, dataset_id: int) -> int:
    """Put failed items back in the queue with fresh attempts (a rerun retries them)."""
    result = db.execute(update(WorkItem).where(
        WorkItem.dataset_id == dataset_id, WorkItem.status == WorkStatus.FAILED.value).values(
        status=WorkStatus.PENDING.value, attempts=0, updated_at=utcnow()))
    return max(result.rowcount, 0)


@dataclass(frozen=True)
class Progress:
    total: int
    done: int
    failed: int
    in_flight: int  # leased, lease not expired
    pending: int  # waiting, or leased by a worker whose lease expired
    workers: dict[str, int]  # done items per worker

    @property
    def finished(self) -> bool:
        return self.done + self.failed == self.total


def progress(db: sa_orm.Session, dataset_id: int, now: datetime | None = None) -> Progress:
    now = now or utcnow()
    lapsed = func.sum(case((WorkItem.lease_expires_at < now, 1), else_=0))
    rows = db.execute(select(WorkItem.status, func.count(), lapsed).where(
        WorkItem.dataset_id == dataset_id).group_by(WorkItem.status)).all()
    counts = {s.value: 0 for s in WorkStatus}
    expired = 0
    for status, n, late in rows:
        counts[status] += n
        if status == WorkStatus.LEASED.value:
            expired += int(late or 0)
    workers = dict(db.execute(select(WorkItem.worker, func.count()).where(
        WorkItem.dataset_id == dataset_id, WorkItem.status == WorkStatus.DONE.value,
        WorkItem.worker.is_not(None)).group_by(WorkItem.worker).order_by(WorkItem.worker)).all())
    return Progress(total=sum(counts.values()), done=counts["done"], failed=counts["failed"],
                    in_flight=counts["leased"] - expired,
                    pending=counts["pending"] + expired, workers=workers)
