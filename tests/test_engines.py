"""Behaviour every engine must share, run on each real engine with the embedded model."""

from __future__ import annotations

import asyncio

import pytest
from pydantic import BaseModel

from manyheads.errors import PromptError
from manyheads.models import SamplingParams
from manyheads.models.engine import Request

QUESTIONS = [
    [{"role": "user", "content": "What is the capital of France?"}],
    [{"role": "user", "content": "Name three colours of the rainbow."}],
    [{"role": "system", "content": "You are a terse assistant."},
     {"role": "user", "content": "Why is the sky blue?"}],
]
GREEDY = SamplingParams(max_tokens=24)


def test_greedy_is_deterministic(any_engine):
    first = any_engine.chat(QUESTIONS, GREEDY)
    second = any_engine.chat(QUESTIONS, GREEDY)
    assert [c.text for c in first] == [c.text for c in second]
    assert all(c.text.strip() for c in first)


def test_usage_and_timing_are_reported(any_engine):
    completion = any_engine.chat(QUESTIONS[:1], GREEDY)[0]
    assert completion.usage.prompt_tokens > 5
    assert 0 < completion.usage.completion_tokens <= GREEDY.max_tokens + 1
    assert completion.elapsed_s > 0


def test_max_tokens_gives_length_finish(any_engine):
    completion = any_engine.chat(QUESTIONS[1:2], SamplingParams(max_tokens=3))[0]
    assert completion.finish_reason == "length"


def test_streaming_deltas_join_to_the_full_text(any_engine):
    async def collect() -> list[str]:
        return [delta async for delta in any_engine.stream(QUESTIONS[2], GREEDY)]

    deltas = asyncio.run(collect())
    assert len(deltas) > 1
    assert "".join(deltas) == any_engine.chat(QUESTIONS[2:], GREEDY)[0].text


def test_stop_string_cuts_the_output(any_engine):
    full = any_engine.chat(QUESTIONS[:1], GREEDY)[0].text
    word = full.split()[2]
    cut = any_engine.chat(QUESTIONS[:1], SamplingParams(max_tokens=24, stop=(word,)))[0]
    assert cut.text == full[:full.index(word)]
    assert cut.finish_reason == "stop"


def test_completions_carry_the_token_ids_the_model_chose(any_engine):
    """``token_ids``: what the model chose, EOS left out, free text and JSON alike. Under a
    schema they are not the tokenizer's split of the text (the embedded model writes `"` `:`
    where the tokenizer has `":`), which is why training data keeps them."""
    schema = {"type": "object", "properties": {"colour": {"type": "string", "maxLength": 20}},
              "required": ["colour"]}
    free, shaped = any_engine.run([Request(QUESTIONS[0], GREEDY),
                                   Request(QUESTIONS[1], SamplingParams(max_tokens=32), schema)])
    if any_engine.name == "openai":  # an OpenAI-style server answers with text only
        assert free.token_ids is None and shaped.token_ids is None
        return
    tokenizer = any_engine.tokenizer
    for completion in (free, shaped):
        assert completion.finish_reason == "stop"
        assert tokenizer.decode(completion.token_ids, skip_special_tokens=True) == completion.text
        assert not set(completion.token_ids) & {tokenizer.eos_token_id}
    assert shaped.token_ids != tokenizer(shaped.text, add_special_tokens=False)["input_ids"]


def test_seeded_sampling_repeats(any_engine):
    params = SamplingParams(max_tokens=12, temperature=0.9, seed=1234)
    first = any_engine.chat(QUESTIONS[1:2], params)[0].text
    assert any_engine.chat(QUESTIONS[1:2], params)[0].text == first


def test_vllm_seeded_batch_longer_than_one_scheduler_step(vllm_engine):
    """Seeded prompts filling more than one step's token budget: with chunked prefill the
    split prompt crashed the CPU worker; each sample must also not depend on its batch."""
    passage = " ".join(f"item {i} is on shelf {i % 7}." for i in range(40))  # ~300 tokens
    conversations = [[{"role": "user", "content": f"{passage} Where is item {i}?"}]
                     for i in range(10)]
    params = [SamplingParams(max_tokens=6, temperature=0.9, seed=i) for i in range(10)]
    batch = vllm_engine.chat(conversations, params)
    assert sum(c.usage.prompt_tokens for c in batch) > vllm_engine.context_len
    assert vllm_engine.chat(conversations[7:8], params[7:8])[0].text == batch[7].text


def test_raw_prompt_generation(any_engine):
    completion = any_engine.generate(["The first three letters of the alphabet are"],
                                     SamplingParams(max_tokens=8))[0]
    assert completion.text.strip()


def test_logprobs_on_request(any_engine):
    completion = any_engine.chat(QUESTIONS[:1], SamplingParams(max_tokens=5, logprobs=2))[0]
    assert completion.logprobs is not None and len(completion.logprobs) >= 1
    first = completion.logprobs[0]
    assert first.logprob <= 0.0 and len(first.top) >= 1


@pytest.mark.parametrize("prompt", ["", "   ", []])
def test_empty_prompt_is_refused(any_engine, prompt):
    with pytest.raises(PromptError):
        if isinstance(prompt, str):
            any_engine.generate([prompt])
        else:
            any_engine.chat([prompt])


def test_prompt_longer_than_context_is_refused(local_engine, vllm_engine):
    for engine in (local_engine, vllm_engine):
        too_long = "word " * (engine.context_len + 10)
        with pytest.raises(PromptError, match="context"):
            engine.generate([too_long])


class Count(BaseModel):
    count: int


def _asker(engine, questions):
    """A program of several dependent requests: each question quotes the previous answer."""
    answers = []
    for question in questions:
        prompt = [{"role": "user", "content": f"{question} (earlier: {answers[-1:]})"}]
        completion = yield Request(prompt, SamplingParams(max_tokens=12))
        answers.append(completion.text)
    last = yield Request([{"role": "user", "content": "How many answers so far? JSON."}],
                         SamplingParams(max_tokens=16), response_model=Count)
    return answers, last


def test_drive_runs_dependent_programs_to_the_end(any_engine):
    before = any_engine.tally.requests
    lengths = [1, 3, 2, 1, 2]
    programs = [_asker(any_engine, [q[-1]["content"] for q in QUESTIONS[:n]]) for n in lengths]
    results = list(any_engine.drive(programs, concurrency=3))
    assert sorted(len(answers) for answers, _ in results) == sorted(lengths)
    assert all(a.strip() for answers, _ in results for a in answers)
    for _, last in results:  # constrained output: parsed, or a typed error, never a crash
        assert (last.parsed is None) != (last.error is None)
    assert any_engine.tally.requests - before == sum(lengths) + len(lengths)


def test_drive_refuses_zero_concurrency(local_engine):
    with pytest.raises(ValueError, match="concurrency"):
        list(local_engine.drive([], concurrency=0))
