"""Repetition control: the pure penalty function on tiny tensors, then each real engine."""

from __future__ import annotations

import pytest
import torch
from pydantic import ValidationError

from manyheads.models import SamplingParams
from manyheads.models.local.penalties import apply_penalties, banned_ngram_tokens


def test_defaults_leave_logits_untouched():
    logits = torch.tensor([1.0, -1.0, 0.5])
    assert apply_penalties(logits, [0, 1], [2], SamplingParams()) is logits


def test_repetition_penalty_divides_positive_and_multiplies_negative_logits():
    logits = torch.tensor([2.0, -2.0, 2.0, -2.0])
    out = apply_penalties(logits, [0], [1], SamplingParams(repetition_penalty=2.0))
    assert out.tolist() == [1.0, -4.0, 2.0, -2.0]  # prompt and output tokens; others untouched
    assert logits.tolist() == [2.0, -2.0, 2.0, -2.0]  # the input is not modified


def test_frequency_and_presence_penalties_count_output_tokens_only():
    logits = torch.zeros(4)
    params = SamplingParams(frequency_penalty=0.5, presence_penalty=1.0)
    out = apply_penalties(logits, [3, 3, 3], [1, 1, 2], params)
    assert out.tolist() == [0.0, -2.0, -1.5, 0.0]  # 1: 2*0.5+1; 2: 0.5+1; 3 is prompt only


def test_penalties_apply_in_vllm_order():
    logits = torch.tensor([4.0, 0.0])
    params = SamplingParams(repetition_penalty=2.0, frequency_penalty=1.0)
    assert apply_penalties(logits, [], [0], params).tolist() == [1.0, 0.0]  # 4/2 - 1


def test_banned_ngram_tokens_on_literal_lists():
    assert banned_ngram_tokens([1, 2, 3, 1, 2], 3) == [3]  # "1 2" seen before, followed by 3
    assert banned_ngram_tokens([1, 2, 3, 1, 2], 2) == [3]  # "2" was followed by 3
    assert banned_ngram_tokens([5, 1, 5, 2, 5], 2) == [1, 2]
    assert banned_ngram_tokens([1, 2, 3], 3) == []  # no earlier "2 3"
    assert banned_ngram_tokens([1, 2], 3) == []  # shorter than n
    assert banned_ngram_tokens([4, 4, 7], 1) == [4, 7]
    assert banned_ngram_tokens([1, 2, 1, 2], 0) == []


def test_no_repeat_ngram_sets_banned_logits_to_minus_infinity():
    logits = torch.zeros(5)
    out = apply_penalties(logits, [], [1, 2, 3, 1, 2], SamplingParams(no_repeat_ngram_size=3))
    assert out[3] == float("-inf")
    assert torch.isfinite(out[[0, 1, 2, 4]]).all()


@pytest.mark.parametrize("field,value", [("repetition_penalty", 0.0),
                                         ("repetition_penalty", -1.0),
                                         ("frequency_penalty", 2.5),
                                         ("presence_penalty", -3.0),
                                         ("no_repeat_ngram_size", -1)])
def test_out_of_range_penalties_are_refused(field, value):
    with pytest.raises(ValidationError):
        SamplingParams(**{field: value})


def test_openai_arguments_send_penalties_only_when_set():
    from manyheads.models.engine import Request
    from manyheads.models.openai_engine import OpenAIEngine

    engine = OpenAIEngine(model="m", base_url="http://127.0.0.1:9/v1")
    try:
        plain = engine._arguments(Request("hi", SamplingParams()))
        assert not {"frequency_penalty", "presence_penalty", "extra_body"} & plain.keys()
        params = SamplingParams(frequency_penalty=0.5, presence_penalty=0.25,
                                repetition_penalty=1.3, no_repeat_ngram_size=3)
        args = engine._arguments(Request("hi", params, schema={"type": "object"}))
        assert args["frequency_penalty"] == 0.5 and args["presence_penalty"] == 0.25
        assert args["extra_body"] == {"structured_outputs": {"json": {"type": "object"}},
                                      "repetition_penalty": 1.3,
                                      "vllm_xargs": {"no_repeat_ngram_size": 3}}
    finally:
        engine.close()


def test_serve_body_accepts_penalties_as_openai_and_vllm_send_them():
    from manyheads.models.serve import _Body

    body = _Body(prompt="hi", frequency_penalty=0.5, presence_penalty=0.25,
                 repetition_penalty=1.3, vllm_xargs={"no_repeat_ngram_size": 3})
    params = body.params()
    assert (params.frequency_penalty, params.presence_penalty, params.repetition_penalty,
            params.no_repeat_ngram_size) == (0.5, 0.25, 1.3, 3)
    assert _Body(prompt="hi", no_repeat_ngram_size=2).params().no_repeat_ngram_size == 2
    for bad in [dict(repetition_penalty=0), dict(frequency_penalty=3),
                dict(vllm_xargs={"no_repeat_ngram_size": -1})]:
        with pytest.raises(ValidationError):
            _Body(prompt="hi", **bad)


# -- each real engine: a penalty visibly changes greedy output on the embedded model ----------
LOOPING = [{"role": "user", "content": "Write the word 'hello' ten times."}]
N = 40


def _max_repeat(text: str) -> int:
    words = text.lower().split()
    return max((words.count(w) for w in set(words)), default=0)


PENALTIES = [dict(repetition_penalty=1.8), dict(frequency_penalty=1.5),
             dict(presence_penalty=1.5), dict(no_repeat_ngram_size=2)]


def test_engine_honours_each_penalty(any_engine):
    """Greedy "hello, hello, ..." loses its loop under each penalty (one batch per engine)."""
    params = [SamplingParams(max_tokens=N)] + [SamplingParams(max_tokens=N, **p)
                                               for p in PENALTIES]
    plain, *penalised = any_engine.chat([LOOPING] * len(params), params)
    for penalty, completion in zip(PENALTIES, penalised, strict=True):
        assert completion.text != plain.text, penalty
        assert _max_repeat(completion.text) < _max_repeat(plain.text), penalty
