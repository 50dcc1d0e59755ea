"""Continuous batching for ``LocalEngine``: requests from any thread share one running batch.

One scheduler thread owns the model. Between two decode steps it lets finished and cancelled
sequences leave the batch and new ones join it: a newcomer's prompt is prefilled alone (so it
sees exactly the forward pass it would see alone), then its KV cache is left-padded to the
batch's width and stacked onto the batch cache; every row's attention mask hides its padding and
its positions count real tokens only, so a row's tokens do not depend on who else is in the batch
(up to float rounding in batched matrix products, which did not change a greedy token in our
tests). Leaving is an ``index_select`` on the batch axis, then the columns that only padding still
uses are dropped.

Work that wants the whole model to itself (draft-head steps and observers expect a batch of one
caller's requests) runs ``exclusive``: between two steps, in the same thread, while the running
batch waits.

The pure pieces (``pad_cache_left``, ``join``, ``leave``) take and return tensors with shape
comments; ``Scheduler`` is the control flow around them.
"""

from __future__ import annotations

import atexit
import collections
import queue
import threading
import time
import weakref
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

import torch
from transformers import DynamicCache

from manyheads.errors import EngineError
from manyheads.models.local.decode import (
    Batch,
    Row,
    StepFn,
    accept,
    left_pad,
    positions,
    vanilla_step,
)
from manyheads.models.local.text import TextTracker
from manyheads.models.types import Completion


@dataclass
class Job:
    """One request on its way through the running batch."""

    prompt: list[int]
    row: Row
    tracker: TextTracker
    future: Future = field(default_factory=Future)  # resolves to the Completion
    on_delta: Callable[[str], None] | None = None  # called in the scheduler thread
    submitted: float = field(default_factory=time.perf_counter)
    cancelled: bool = False

    def cancel(self) -> None:
        """Leave the batch before the next step (a client went away)."""
        self.cancelled = True


# -- pure cache operations ---------------------------------------------------------------------
def pad_cache_left(cache: DynamicCache, width: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Per layer (keys, values) [B, heads, width, d], zeros added on the left of the seq axis."""
    layers = []
    for layer in cache.layers:
        extra = width - layer.keys.shape[-2]
        keys, values = layer.keys, layer.values  # [B, heads, S, d]
        if extra > 0:
            keys = torch.nn.functional.pad(keys, (0, 0, extra, 0))
            values = torch.nn.functional.pad(values, (0, 0, extra, 0))
        layers.append((keys, values))
    return layers


def pad_mask_left(mask: torch.Tensor, width: int) -> torch.Tensor:
    """mask [B, S] -> [B, width] with zeros (padding) on the left."""
    return torch.nn.functional.pad(mask, (width - mask.shape[1], 0))


def join(batch: Batch, newcomer: Batch) -> None:
    """Append the rows of ``newcomer`` (already prefilled) to ``batch``, in place."""
    width = max(batch.attention_mask.shape[1], newcomer.attention_mask.shape[1])
    old, new = pad_cache_left(batch.cache, width), pad_cache_left(newcomer.cache, width)
    batch.cache = DynamicCache([(torch.cat([ok, nk]), torch.cat([ov, nv]))
                                for (ok, ov), (nk, nv) in zip(old, new, strict=True)])
    batch.attention_mask = torch.cat([pad_mask_left(batch.attention_mask, width),
                                      pad_mask_left(newcomer.attention_mask, width)])  # [B', W]
    batch.next_logits = torch.cat([batch.next_logits, newcomer.next_logits])  # [B', V]
    batch.last_hidden = torch.cat([batch.last_hidden, newcomer.last_hidden])  # [B', H]
    batch.rows = batch.rows + newcomer.rows


def leave(batch: Batch, keep: list[int]) -> None:
    """Keep only rows ``keep`` (indices into the batch), then trim all-padding columns."""
    index = torch.tensor(keep, dtype=torch.long)
    mask = batch.attention_mask.index_select(0, index)  # [B', S]
    used = mask.any(0).nonzero()
    start = int(used[0]) if len(used) else mask.shape[1]
    batch.attention_mask = mask[:, start:]
    batch.cache = DynamicCache([
        (layer.keys.index_select(0, index)[..., start:, :],
         layer.values.index_select(0, index)[..., start:, :]) for layer in batch.cache.layers])
    batch.next_logits = batch.next_logits.index_select(0, index)
    batch.last_hidden = batch.last_hidden.index_select(0, index)
    batch.rows = [batch.rows[i] for i in keep]


# -- the scheduler -----------------------------------------------------------------------------
@dataclass
class _Exclusive:
    work: Callable[[], Any]
    future: Future = field(default_factory=Future)


_STOP = object()


def _close_at_exit(ref: weakref.ref) -> None:
    """Stop the thread before the interpreter tears torch down under it."""
    scheduler = ref()
    if scheduler is not None:
        scheduler.close()


class Scheduler:
    """Runs sequences from any thread in one batch; one daemon thread, started on first use.

    ``complete(seq, elapsed)`` turns a finished sequence into its ``Completion``;
    ``stats`` (an engine ``Tally``) gets the batch sizes of every step.
    """

    def __init__(self, model: Any, *, eos_ids: set[int], pad_id: int,
                 complete: Callable[[Job, float], Completion], stats: Any,
                 max_batch: int = 32) -> None:
        if max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        self.model = model
        self.eos_ids = frozenset(eos_ids)
        self.pad_id = pad_id
        self.complete = complete
        self.stats = stats
        self.max_batch = max_batch
        self.step: StepFn = vanilla_step  # the engine sets it to its decoder when that can batch
        self._inbox: queue.SimpleQueue = queue.SimpleQueue()
        self._waiting: collections.deque[Job] = collections.deque()
        self._seqs: list[Job] = []  # one per batch row, same order
        self._batch: Batch | None = None
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()
        self._closed = False

    # -- callers' side (any thread) ------------------------------------------------------------
    def submit(self, seq: Job) -> Future:
        self._ensure_running()
        self._inbox.put(seq)
        return seq.future

    def exclusive(self, work: Callable[[], Any]) -> Future:
        """Run ``work()`` in the scheduler thread with the model to itself, between two steps
        of the running batch; the future resolves to what it returns."""
        item = _Exclusive(work)
        self._ensure_running()
        self._inbox.put(item)
        return item.future

    @property
    def in_flight(self) -> int:
        """Sequences running or waiting (approximate: read without a lock)."""
        return len(self._seqs) + len(self._waiting) + self._inbox.qsize()

    def close(self) -> None:
        """Fail whatever is queued or running with ``EngineError``; stop the thread."""
        with self._start_lock:
            self._closed = True
            thread = self._thread
        if thread is not None:
            self._inbox.put(_STOP)
            thread.join()
        self._fail_all(EngineError("the engine was closed"))

    def _ensure_running(self) -> None:
        with self._start_lock:
            if self._closed:
                raise EngineError("the engine is closed")
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, daemon=True,
                                                name="manyheads-local-batch")
                self._thread.start()
                atexit.register(_close_at_exit, weakref.ref(self))

    # -- the scheduler thread ------------------------------------------------------------------
    def _loop(self) -> None:
        with torch.inference_mode():
            while True:
                if not self._take_inbox(block=not self._seqs and not self._waiting):
                    return
                try:
                    self._admit()
                    self._drop_cancelled()
                    if self._seqs:
                        self._step()
                except Exception as exc:  # a failed forward fails its batch, not the server
                    self._fail_running(EngineError(f"local decoding failed: {exc}"))

    def _take_inbox(self, block: bool) -> bool:
        """Move new items to the waiting line (running exclusive work at once); False = stop."""
        while True:
            try:
                item = self._inbox.get(block=block, timeout=None)
            except queue.Empty:
                return True
            block = False
            if item is _STOP:
                return False
            if isinstance(item, _Exclusive):
                self._run_exclusive(item)
            elif item.cancelled:
                item.future.cancel()
            else:
                self._waiting.append(item)

    def _run_exclusive(self, item: _Exclusive) -> None:
        if not item.future.set_running_or_notify_cancel():
            return
        try:
            item.future.set_result(item.work())
        except BaseException as exc:  # handed to the caller
            item.future.set_exception(exc)

    def _admit(self) -> None:
        """Prefill waiting sequences alone and join them to the batch, up to ``max_batch``."""
        while self._waiting and len(self._seqs) < self.max_batch:
            seq = self._waiting.popleft()
            if seq.cancelled:
                seq.future.cancel()
                continue
            if not seq.future.set_running_or_notify_cancel():
                continue  # the caller cancelled its future
            try:
                newcomer = self._prefill(seq)
            except Exception as exc:
                seq.future.set_exception(EngineError(f"local prefill failed: {exc}"))
                continue
            if self._batch is None:
                self._batch = newcomer
            else:
                join(self._batch, newcomer)
            self._seqs.append(seq)

    def _prefill(self, seq: Job) -> Batch:
        """The newcomer's prompt alone, in one pass: [1, T] -> a one-row batch."""
        input_ids, mask = left_pad([seq.prompt], self.pad_id)  # [1, T]
        batch = Batch(model=self.model, rows=[seq.row], cache=DynamicCache(),
                      attention_mask=mask, next_logits=torch.empty(0), last_hidden=None,
                      observers=[], eos_ids=self.eos_ids, pad_id=self.pad_id)
        outputs = self.model(input_ids=input_ids, attention_mask=mask,
                             position_ids=positions(mask, input_ids.shape[1]),
                             past_key_values=batch.cache, use_cache=True,
                             output_hidden_states=True, logits_to_keep=1)
        batch.next_logits = outputs.logits[:, -1, :].float()  # [1, V]
        batch.last_hidden = outputs.hidden_states[-1][:, -1, :]  # [1, H]
        return batch

    def _drop_cancelled(self) -> None:
        gone = [i for i, seq in enumerate(self._seqs) if seq.cancelled]
        if gone:
            self.stats.cancelled += len(gone)
            for i in gone:
                self._seqs[i].future.set_exception(EngineError("the request was cancelled"))
            self._keep([i for i, seq in enumerate(self._seqs) if not seq.cancelled])

    def _step(self) -> None:
        """One decode step of every row; deliver text; finished rows leave."""
        batch = self._batch
        size = len(batch.rows)
        self.stats.decode_steps += 1
        self.stats.step_rows += size
        self.stats.max_batch_size = max(self.stats.max_batch_size, size)
        proposed = self.step(batch)
        finished = []
        for i, (seq, tokens) in enumerate(zip(self._seqs, proposed, strict=True)):
            new = accept(batch, i, tokens)
            row, tracker = seq.row, seq.tracker
            final = row.finish_reason is not None
            delta = tracker.update(row.tokens, final) if new or final else ""
            if tracker.stopped and row.finish_reason is None:
                row.finish_reason = "stop"
            if delta and seq.on_delta is not None:
                try:
                    seq.on_delta(delta)
                except Exception:  # the consumer is gone (its event loop closed)
                    seq.cancel()
            if row.finish_reason is not None:
                finished.append(i)
        for i in finished:
            seq = self._seqs[i]
            try:
                seq.future.set_result(self.complete(seq, time.perf_counter() - seq.submitted))
            except Exception as exc:
                seq.future.set_exception(exc)
        if finished:
            self._keep([i for i in range(size) if i not in set(finished)])

    def _keep(self, keep: list[int]) -> None:
        if not keep:
            self._batch, self._seqs = None, []
            return
        leave(self._batch, keep)
        self._seqs = [self._seqs[i] for i in keep]

    def _fail_running(self, exc: BaseException) -> None:
        for seq in self._seqs:
            if not seq.future.done():
                seq.future.set_exception(exc)
        self._batch, self._seqs = None, []

    def _fail_all(self, exc: BaseException) -> None:
        self._fail_running(exc)
        while True:
            try:
                item = self._inbox.get_nowait()
            except queue.Empty:
                break
            if item is not _STOP:
                self._waiting.append(item)
        while self._waiting:
            item = self._waiting.popleft()
            if not item.future.done():
                item.future.set_exception(exc)
