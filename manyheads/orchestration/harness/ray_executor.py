"""Batch generation past one machine: room sessions on a Ray cluster, exactly once per item.

The SQL store is the ledger (``manyheads.storage.ledger``): every prompt is a work item, and a
worker claims one with a lease, runs it through the room's ``converse`` into its own session,
and stores the dataset row in the same transaction that marks the item done, only while it
still holds the lease. A worker that dies (``kill -9``, a lost node) stops renewing its lease;
when it expires another worker takes the item over and deletes the half-written session. So
nothing is lost, nothing is stored twice, two drivers on one dataset share the work, and
rerunning the command resumes.

Why Ray Core actors and not Ray Data: an item is not a row to transform but a stateful,
multi-minute conversation that writes to the store as it goes and must be claimed and committed
through the ledger. Ray Data's ``map_batches`` with an actor pool would also keep one engine per
actor, but it owns the dataset's partitioning and retries: a retried block reruns items whose
sessions are already half written, and its streaming executor wants a source it can split, not a
queue that two drivers share. With actors, Ray does what it is good at (placement on nodes with
free GPUs, ``max_restarts`` when a worker process dies, ``max_task_retries`` to rerun the loop on
the restarted actor) and the ledger decides what each worker does next. We write no RPC, no
scheduler and no process manager: the driver only starts N actors and watches the ledger.

Each actor builds its own engine (in-process vLLM on its GPU, the embedded local model, or an
``OpenAIEngine`` pointed at a shared vLLM endpoint) from the engine name and the ``MANYHEADS_*``
settings the driver hands it, so continuous batching still happens inside each worker.
"""

from __future__ import annotations

import os
import socket
import threading
import time
import traceback
import uuid
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import ray
from ray.exceptions import RayActorError, RayTaskError
from sqlalchemy import select

from manyheads.errors import ConfigError, EngineError, StorageError
from manyheads.orchestration.conversation import ChatOptions
from manyheads.orchestration.harness.generate import open_named_dataset, payload
from manyheads.settings import get_settings
from manyheads.storage import ledger
from manyheads.storage import repository as repo
from manyheads.storage.models import Message
from manyheads.storage.repository import NotFoundError
from manyheads.storage.store import Store

DEFAULT_LEASE_S = 120.0
ProgressCallback = Callable[[ledger.Progress, float], None]


@dataclass
class ItemLoop:
    """One worker's loop over the ledger: claim an item, converse, commit it done.

    Plain Python (the Ray actor below only hosts it), so the bench can time the ledger alone.
    ``owner`` is unique per process incarnation; ``label`` (worker-0...) survives restarts and is
    what the per-worker tally counts.
    """

    store: Store
    room: Any  # a Room
    engine: Any  # an Engine
    dataset: str
    dataset_id: int
    options: ChatOptions
    label: str
    lease_s: float = DEFAULT_LEASE_S
    max_attempts: int = 3
    owner: str = ""
    tally: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.owner = self.owner or (f"{self.label}@{socket.gethostname()}:{os.getpid()}/"
                                    f"{uuid.uuid4().hex[:8]}")
        self.tally = {"worker": self.label, "owner": self.owner, "done": 0, "failed": 0,
                      "lost_leases": 0, "busy_s": 0.0}

    def run(self, *, poll_s: float | None = None) -> dict[str, Any]:
        """Work until every item is done or failed; returns this incarnation's tally."""
        poll_s = poll_s if poll_s is not None else min(2.0, self.lease_s / 4)
        while True:
            claim = self._claim()
            if claim is not None:
                self.one(claim)
                continue
            with self.store.reading() as db:
                state = ledger.progress(db, self.dataset_id)
            if state.pending == 0 and state.in_flight == 0:
                return self.tally
            time.sleep(poll_s)  # others hold leases: wait, to take over if their worker dies

    def _claim(self) -> ledger.Claim | None:
        """Claim with retries, so the database going away for a moment is ridden out."""
        for attempt in range(8):
            try:
                with self.store.transaction() as db:
                    return ledger.claim(db, self.dataset_id, self.owner, lease_s=self.lease_s,
                                        max_attempts=self.max_attempts)
            except StorageError:
                if attempt == 7:
                    raise
                time.sleep(min(0.25 * 2**attempt, 10.0))
        raise AssertionError("unreachable")

    def one(self, claim: ledger.Claim) -> bool:
        """Generate one claimed item; True when it was committed done by us."""
        started = time.perf_counter()
        prompt = claim.input["prompt"]
        if claim.stale_session_id:  # an earlier attempt's worker died mid-item
            try:
                self.store.delete_session(claim.stale_session_id)
            except NotFoundError:
                pass
        with self.store.transaction() as db:  # one commit: a kill between the two would
            # leave a "running" session that no ledger item points at, so no rerun deletes it
            session = repo.create_session(db, room=self.room.name, title=prompt[:80],
                                          config={"dataset": self.dataset, "key": claim.key})
            ledger.attach_session(db, claim.id, self.owner, session.id)
        stop = threading.Event()
        beat = threading.Thread(target=self._heartbeat, args=(claim.id, stop), daemon=True)
        beat.start()
        try:
            self.room.converse(self.engine, self.store, session.id, prompt, options=self.options)
            with self.store.transaction() as db:
                messages = list(db.scalars(select(Message).where(
                    Message.session_id == session.id).order_by(Message.seq)))
                ok = ledger.complete(db, claim.id, self.owner, worker=self.label,
                                     dataset_id=self.dataset_id, session_id=session.id,
                                     payload=payload(claim.key, prompt, messages, self.engine))
                if ok:
                    repo.set_status(db, session.id, "completed")
        except Exception as exc:  # the item fails, the worker carries on
            stop.set()
            error = f"{type(exc).__name__}: {exc}"
            with self.store.transaction() as db:
                ledger.fail(db, claim.id, self.owner, error=error,
                            max_attempts=self.max_attempts)
            self.tally["failed"] += 1
            self.tally["last_error"] = traceback.format_exc(limit=3)[-2000:]
            return False
        finally:
            stop.set()
            beat.join()
            self.tally["busy_s"] += time.perf_counter() - started
        if not ok:  # our lease lapsed and another worker took the item over
            self.tally["lost_leases"] += 1
            return False
        self.tally["done"] += 1
        return True

    def _heartbeat(self, item_id: int, stop: threading.Event) -> None:
        while not stop.wait(self.lease_s / 3):
            try:
                with self.store.transaction() as db:
                    if not ledger.renew(db, item_id, self.owner, lease_s=self.lease_s):
                        return
            except StorageError:
                continue  # the database is away for a moment; the lease has slack


@ray.remote
class RayWorker:
    """A Ray actor that owns one engine and runs ``ItemLoop`` until the ledger is drained."""

    def __init__(self, spec: dict[str, Any]) -> None:
        os.environ.update(spec["env"])
        from manyheads.models import make_engine
        from manyheads.orchestration.registry import get_room

        self.store = Store.open(spec["database_url"])
        try:
            self.engine = make_engine(spec["engine"], spec["model"])
        except Exception as exc:
            raise EngineError(f"{spec['label']} on {socket.gethostname()} cannot build engine "
                              f"{spec['engine']!r}: {exc}") from exc
        self.loop = ItemLoop(store=self.store, room=get_room(spec["room"]), engine=self.engine,
                             dataset=spec["dataset"], dataset_id=spec["dataset_id"],
                             options=ChatOptions.model_validate(spec["options"]),
                             label=spec["label"], lease_s=spec["lease_s"],
                             max_attempts=spec["max_attempts"])

    def run(self) -> dict[str, Any]:
        tally = self.loop.run()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            tally["restarted"] = ray.get_runtime_context().was_current_actor_reconstructed
        return tally


def check_address(address: str | None, timeout_s: float = 5.0) -> None:
    """Fail fast, with a clear message, when a Ray head is not listening at ``address``."""
    if address in (None, "", "auto", "local"):
        return
    hostport = address.split("://", 1)[-1]
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit():
        raise ConfigError(f"Ray address {address!r} is not host:port",
                          hint="e.g. --ray-address 10.0.0.1:6379 (printed by `ray start --head`)")
    try:
        socket.create_connection((host, int(port)), timeout=timeout_s).close()
    except OSError as exc:
        raise ConfigError(f"cannot reach the Ray cluster at {address}: {exc.strerror or exc}",
                          hint="start its head with `ray start --head --port 6379`, or omit "
                               "--ray-address to start a local cluster") from None


def connect(address: str | None, **init: Any) -> bool:
    """Join (or start) a Ray cluster; False when the caller had already initialised Ray."""
    if ray.is_initialized():
        return False
    check_address(address)
    try:
        ray.init(address=address, **init)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise ConfigError(f"cannot connect to the Ray cluster at {address or 'local'}: {exc}",
                          hint="check `ray status` on the head node") from None
    return True


def generate_on_ray(room: Any, prompts: list[str], *, name: str,
                    options: ChatOptions | None = None, engine: str | None = None,
                    model: str | None = None, database_url: str | None = None,
                    address: str | None = None, workers: int = 2, gpus_per_worker: float = 0,
                    cpus_per_worker: float = 1, lease_s: float = DEFAULT_LEASE_S,
                    max_attempts: int = 3, max_restarts: int = 3,
                    on_progress: ProgressCallback | None = None,
                    init: dict[str, Any] | None = None) -> dict[str, Any]:
    """Generate (or finish) dataset ``name`` with ``workers`` Ray actors sharing the ledger.

    ``database_url`` must be reachable from every node (PostgreSQL for a real cluster; a SQLite
    file only works when all workers run on this machine). ``on_progress(progress, elapsed_s)``
    is called about once a second from this thread.
    """
    if workers < 1:
        raise ConfigError("--workers must be at least 1")
    if not ray.is_initialized():
        check_address(address)  # before touching the store
    options = options or ChatOptions()
    settings = get_settings()
    engine_name, model_name = (engine or settings.engine), (model or settings.model)
    with Store.open(database_url) as store:
        url = store.url.render_as_string(hide_password=False)
        if store.url.get_backend_name() == "sqlite" and address not in (None, "local"):
            url_note = "SQLite works only when every worker runs on this machine"
        else:
            url_note = ""
        dataset_id, stored = open_named_dataset(store, name, room, prompts, options,
                                                engine=engine_name, model=model_name)
        items = [(f"{i:06d}", {"prompt": p}) for i, p in enumerate(prompts)]
        with store.transaction() as db:
            ledger.enqueue(db, dataset_id, items, done=stored)
            retried = ledger.retry_failed(db, dataset_id)
        with store.reading() as db:
            before = ledger.progress(db, dataset_id)
        # worker logs (model loading bars) would tear the driver's progress bar: Ray keeps
        # them in its session logs; errors come back as exceptions
        owned = connect(address, **{"log_to_driver": False, "include_dashboard": False,
                                    **(init or {})})
        env = {k: v for k, v in os.environ.items()
               if k.startswith("MANYHEADS_") and k != "MANYHEADS_DATABASE_URL"}
        actors = [RayWorker.options(num_cpus=cpus_per_worker, num_gpus=gpus_per_worker,
                                    max_restarts=max_restarts, max_task_retries=max_restarts)
                  .remote({"env": env, "database_url": url, "engine": engine_name,
                           "model": model, "room": room.name, "dataset": name,
                           "dataset_id": dataset_id, "options": options.model_dump(mode="json"),
                           "label": f"worker-{i}", "lease_s": lease_s,
                           "max_attempts": max_attempts})
                  for i in range(workers)]
        started = time.perf_counter()
        tallies, errors = [], []
        try:
            refs = {actor.run.remote(): f"worker-{i}" for i, actor in enumerate(actors)}
            waiting = list(refs)
            while waiting:
                ready, waiting = ray.wait(waiting, num_returns=len(waiting), timeout=1.0)
                for ref in ready:
                    try:
                        tallies.append(ray.get(ref))
                    except (RayActorError, RayTaskError) as exc:
                        errors.append(f"{refs[ref]}: {_cause(exc)}")
                if on_progress is not None:
                    with store.reading() as db:
                        on_progress(ledger.progress(db, dataset_id), time.perf_counter() - started)
        finally:
            for actor in actors:
                ray.kill(actor)
            if owned:
                ray.shutdown()
        elapsed = time.perf_counter() - started
        with store.reading() as db:
            after = ledger.progress(db, dataset_id)
    if errors and len(errors) == workers and not after.finished:
        raise EngineError("every Ray worker failed: " + "; ".join(errors))
    generated = after.done - before.done
    return {"dataset_id": dataset_id, "total": after.total, "skipped": before.done,
            "generated": generated, "done": after.done, "failed": after.failed,
            "requeued_failed": retried, "workers": after.workers, "tallies": tallies,
            "errors": errors, "elapsed_s": round(elapsed, 2),
            "dialogues_per_hour": round(generated / elapsed * 3600, 1) if elapsed else 0.0,
            "note": url_note}


def _cause(exc: BaseException) -> str:
    """The first line of what actually went wrong inside a Ray actor or task."""
    cause = getattr(exc, "cause", None) or exc
    text = str(cause).strip()
    lines = [line for line in text.splitlines() if line.strip()]
    for line in reversed(lines):
        if "Error" in line and ":" in line:
            return line.strip()[:500]
    return (lines[-1] if lines else type(cause).__name__)[:500]
