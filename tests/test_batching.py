"""Continuous batching in LocalEngine: callers on many threads share one running batch, and a
request's greedy tokens are the same alone or in company."""

from __future__ import annotations

import asyncio
import threading

import torch
from transformers import DynamicCache

from manyheads.models import SamplingParams
from manyheads.models.local.batching import join, leave
from manyheads.models.local.decode import Batch, Row

PROMPTS = [
    "Hi!",
    "Explain in one sentence how a bicycle stays upright.",
    "List two fruits.",
    "Write the number seven as a word, then spell it backwards.",
    "Tell me a short story about a lighthouse keeper.",
    "What is the capital of France? Answer in a full sentence.",
]
CONVERSATIONS = [[{"role": "user", "content": p}] for p in PROMPTS]


def _tokens(completion) -> list[str]:
    return [t.token for t in completion.logprobs]


def _in_threads(engine, conversations, params):
    """Every conversation from its own thread, released together."""
    results: list = [None] * len(conversations)
    barrier = threading.Barrier(len(conversations))

    def client(i: int) -> None:
        barrier.wait()
        results[i] = engine.chat([conversations[i]], params)[0]

    threads = [threading.Thread(target=client, args=(i,)) for i in range(len(conversations))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


def test_concurrent_callers_share_a_batch_with_the_tokens_they_get_alone(local_engine):
    params = SamplingParams(max_tokens=24, logprobs=0)
    alone = [local_engine.chat([c], params)[0] for c in CONVERSATIONS]
    before = local_engine.tally
    steps, rows = before.decode_steps, before.step_rows
    together = _in_threads(local_engine, CONVERSATIONS, params)
    assert [_tokens(c) for c in together] == [_tokens(c) for c in alone]
    assert [c.text for c in together] == [c.text for c in alone]
    assert [c.usage for c in together] == [c.usage for c in alone]
    tally = local_engine.tally
    assert tally.step_rows - rows > tally.decode_steps - steps  # some step carried > 1 row
    assert tally.max_batch_size > 1


def test_sampled_rows_with_seeds_are_reproducible_in_a_batch(local_engine):
    params = [SamplingParams(temperature=0.9, top_p=0.95, max_tokens=16, seed=7 + i)
              for i in range(3)]
    alone = [local_engine.chat([CONVERSATIONS[i]], params[i])[0].text for i in range(3)]
    batched = [c.text for c in local_engine.chat(CONVERSATIONS[:3], params)]
    assert batched == alone


def test_a_stream_that_stops_early_leaves_the_batch(local_engine):
    long = SamplingParams(max_tokens=48)
    cancelled = local_engine.tally.cancelled

    async def main() -> tuple[str, str]:
        async def first_chunks() -> str:
            parts = []
            async for delta in local_engine.stream(CONVERSATIONS[4], long):
                parts.append(delta)
                if len(parts) == 2:
                    break  # the consumer goes away
            return "".join(parts)

        async def whole() -> str:
            return "".join([d async for d in local_engine.stream(CONVERSATIONS[1], long)])

        return tuple(await asyncio.gather(first_chunks(), whole()))

    partial, full = asyncio.run(main())
    assert partial and full == local_engine.chat([CONVERSATIONS[1]], long)[0].text
    assert local_engine.tally.cancelled == cancelled + 1


def test_structured_and_plain_requests_share_a_batch(local_engine):
    from pydantic import BaseModel

    class City(BaseModel):
        name: str
        country: str

    params = SamplingParams(max_tokens=40)
    results: dict = {}

    def structured() -> None:
        results["city"] = local_engine.structured(
            [{"role": "user", "content": "Paris as JSON with name and country"}], City, params)

    def plain() -> None:
        results["text"] = local_engine.chat([CONVERSATIONS[2]], params)[0].text

    threads = [threading.Thread(target=structured), threading.Thread(target=plain)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert isinstance(results["city"], City)
    assert results["text"] == local_engine.chat([CONVERSATIONS[2]], params)[0].text


def test_observers_run_their_callers_requests_alone(local_engine):
    """An observer sees exactly one caller's rows (request indices 0..n-1), as before."""
    seen: list[list[int]] = []

    class Rows:
        wants_attentions = False

        def on_forward(self, input_ids, outputs, rows):
            seen.append(rows)

    local_engine.observers.append(Rows())
    try:
        assert not local_engine.batched
        local_engine.chat(CONVERSATIONS[:2], SamplingParams(max_tokens=4))
    finally:
        local_engine.observers.clear()
    assert seen and all(rows == [0, 1] for rows in seen)
    assert local_engine.batched


# -- the cache operations, on tiny tensors -----------------------------------------------------
def _batch(width: int, fill: float, rows: int = 1) -> Batch:
    """A fake prefilled batch: one layer, keys/values [rows, 1 head, width, 2] full of ``fill``."""
    keys = torch.full((rows, 1, width, 2), fill)
    cache = DynamicCache([(keys, keys.clone())])
    return Batch(model=None, rows=[Row(prompt_len=width, params=SamplingParams())] * rows,
                 cache=cache, attention_mask=torch.ones(rows, width, dtype=torch.long),
                 next_logits=torch.full((rows, 3), fill), last_hidden=torch.full((rows, 2), fill),
                 observers=[], eos_ids=frozenset(), pad_id=0)


def test_join_pads_the_narrower_side_on_the_left():
    batch, newcomer = _batch(2, 1.0), _batch(4, 2.0)
    join(batch, newcomer)
    assert batch.attention_mask.tolist() == [[0, 0, 1, 1], [1, 1, 1, 1]]
    keys = batch.cache.layers[0].keys  # [2, 1, 4, 2]
    assert keys[0, 0, :, 0].tolist() == [0.0, 0.0, 1.0, 1.0]
    assert keys[1, 0, :, 0].tolist() == [2.0, 2.0, 2.0, 2.0]
    assert batch.next_logits[:, 0].tolist() == [1.0, 2.0] and len(batch.rows) == 2


def test_leave_drops_rows_and_the_padding_only_they_needed():
    batch = _batch(2, 1.0)
    join(batch, _batch(4, 2.0))
    leave(batch, [0])  # the long row leaves: its two extra columns go with it
    assert batch.attention_mask.tolist() == [[1, 1]]
    assert batch.cache.layers[0].keys.shape == (1, 1, 2, 2)
    assert batch.last_hidden.tolist() == [[1.0, 1.0]] and len(batch.rows) == 1
