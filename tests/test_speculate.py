"""Draft-and-verify decoding: n-gram and grammar drafts keep greedy output token-identical."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch

from manyheads.models.engine import Request
from manyheads.models.local.decode import draw, vanilla_step
from manyheads.models.local.speculate import (
    AcceptanceRate,
    DraftStep,
    ngram_draft,
    worth_drafting,
)
from manyheads.models.types import SamplingParams
from manyheads.orchestration.room import SPEECH_PENALTIES


def test_ngram_draft_follows_the_latest_longest_match():
    context = [1, 2, 3, 9, 1, 2, 3, 7, 8, 5, 2, 3]
    assert ngram_draft(context, 3) == ([7, 8, 5], 2)  # "2 3" last seen before "7 8 5"
    assert ngram_draft([4, 5, 6, 4, 5], 4) == ([6, 4, 5], 2)
    assert ngram_draft([1, 2, 3, 4], 4) == ([], 0)  # nothing repeats
    assert ngram_draft([1, 2, 3, 1, 2, 3], 2) == ([1, 2], 3)  # the longer order wins


def test_drafting_stops_where_it_no_longer_pays():
    assert worth_drafting(0.05, 8, 0) == 0  # a likely miss costs more than it brings
    assert worth_drafting(0.95, 8, 0) >= 4
    assert worth_drafting(0.7, 8, 6) < worth_drafting(0.7, 8, 0)  # a long chain costs more
    rates = AcceptanceRate()
    for _ in range(30):
        rates.update(2, 4, 0)
    assert rates.rate(2) < 0.1 < rates.rate(3)


ECHO = ("Copy this list exactly, twice: apples, pears, plums, cherries, figs, dates, limes.")
PERSON = {"type": "object", "properties": {
    "name": {"type": "string"}, "age": {"type": "integer"},
    "mood": {"enum": ["cheerful", "gloomy", "neutral"]},
    "hobbies": {"type": "array", "items": {"type": "string"}, "maxItems": 3}},
    "required": ["name", "age", "mood", "hobbies"]}


def _run(engine, step, prompt, schema=None, max_tokens=48, **params):
    before, engine.step = engine.step, step
    try:
        request = Request(prompt=[{"role": "user", "content": prompt}], schema=schema,
                          params=SamplingParams(max_tokens=max_tokens, logprobs=0, **params))
        completion = engine._run([request])[0]
        return completion.text, [t.token for t in completion.logprobs]
    finally:
        engine.step = before


def test_greedy_drafts_are_token_for_token_vanilla(local_engine):
    draft = DraftStep(local_engine.encode)
    for prompt, schema in ((ECHO, None), ("Describe a person as JSON.", PERSON)):
        want = _run(local_engine, vanilla_step, prompt, schema, max_tokens=64)
        assert _run(local_engine, draft, prompt, schema, max_tokens=64) == want
    assert draft.kept["grammar"] > 0 and draft.kept["ngram"] > 0
    assert draft.mean_accepted > 1.5


@pytest.mark.parametrize("sequential", [True, False], ids=["hydra", "medusa"])
def test_head_drafts_where_nothing_repeats_are_token_for_token_vanilla(local_engine,
                                                                       sequential):
    """Heads guess where n-grams have nothing: a tree for greedy rows, a top-1 chain for sampled
    and penalised rows (the rooms' free text), kept there too. Greedy and seeded sampling stay
    vanilla's."""
    from manyheads.models.medusa.heads import default_heads_dir
    from manyheads.models.medusa.step import MedusaStep, chosen_tree, heads_for

    where = default_heads_dir(sequential=sequential)
    draft = DraftStep(local_engine.encode,
                      medusa=MedusaStep(heads_for(local_engine, where), chosen_tree(where)))
    prompt = "Write two sentences about why the sky is blue."
    kept = []
    for params in ({}, {"temperature": 0.8, "top_p": 0.95, "seed": 3},
                   {"temperature": 0.7, "top_p": 0.9, "seed": 5, **SPEECH_PENALTIES}):
        want = _run(local_engine, vanilla_step, prompt, max_tokens=40, **params)
        assert _run(local_engine, draft, prompt, max_tokens=40, **params) == want
        kept.append(draft.kept["heads"] - sum(kept))
    assert all(k > 0 for k in kept) and draft.proposed["heads"] > draft.kept["heads"]


def test_hydra_trees_take_in_the_ngram_draft_and_stay_vanilla(local_engine):
    """Where the text repeats, the n-gram draft goes into the Hydra tree instead of replacing
    it: every step is a tree pass, n-gram drafts are kept in it, output is vanilla's."""
    from manyheads.models.medusa.heads import default_heads_dir
    from manyheads.models.medusa.step import MedusaStep, heads_for

    draft = DraftStep(local_engine.encode, medusa=MedusaStep(
        heads_for(local_engine, default_heads_dir(sequential=True))))
    want = _run(local_engine, vanilla_step, ECHO, max_tokens=64)
    assert _run(local_engine, draft, ECHO, max_tokens=64) == want
    assert draft.steps == draft.medusa.steps > 0
    assert draft.kept["ngram"] > 0 and draft.kept["heads"] > 0


def test_rows_under_a_grammar_get_no_head_drafts(local_engine):
    """Where a schema leaves text free, head guesses cost more pass than they keep (bench:
    draft beat draft-hydra on structured requests), so a grammar row drafts grammar and
    n-grams only, and stays vanilla's."""
    from manyheads.models.medusa.heads import default_heads_dir
    from manyheads.models.medusa.step import MedusaStep, chosen_tree, heads_for

    where = default_heads_dir(sequential=True)
    draft = DraftStep(local_engine.encode,
                      medusa=MedusaStep(heads_for(local_engine, where), chosen_tree(where)))
    prompt = "Describe a person as JSON."
    want = _run(local_engine, vanilla_step, prompt, PERSON, max_tokens=64)
    assert _run(local_engine, draft, prompt, PERSON, max_tokens=64) == want
    assert draft.proposed["heads"] == 0 and draft.kept["grammar"] > 0


def test_the_shared_batch_speculates_alone_and_batches_together(local_engine):
    """A DraftStep drives the shared batch: one caller speculates, two callers batch, and
    greedy output matches a solo vanilla run either way."""
    prompts = [ECHO, "Name three rivers and one fact about each."]
    want = [_run(local_engine, vanilla_step, p)[0] for p in prompts]
    draft = DraftStep(local_engine.encode)
    before, local_engine.step = local_engine.step, draft
    try:
        assert local_engine.batched
        alone = local_engine.chat([[{"role": "user", "content": prompts[0]}]],
                                  SamplingParams(max_tokens=48))[0].text
        with ThreadPoolExecutor(2) as pool:
            got = list(pool.map(lambda p: local_engine.chat(
                [[{"role": "user", "content": p}]], SamplingParams(max_tokens=48))[0].text,
                prompts))
    finally:
        local_engine.step = before
    assert alone == want[0] and draft.steps > 0
    assert got == want


def test_sampled_drafts_are_token_for_token_vanilla(local_engine):
    """A seeded sampled row draws token t from (seed, t): drafts check by exact match too."""
    draft = DraftStep(local_engine.encode)
    for prompt, schema in ((ECHO, None), ("Describe a person as JSON.", PERSON)):
        want = _run(local_engine, vanilla_step, prompt, schema, max_tokens=64,
                    temperature=0.8, top_p=0.95, seed=3)
        assert _run(local_engine, draft, prompt, schema, max_tokens=64, temperature=0.8,
                    top_p=0.95, seed=3) == want
    assert set(json.loads(want[0])) == set(PERSON["required"])
    assert draft.kept["grammar"] > 0


def test_a_seeded_draw_depends_on_seed_and_position_only():
    probs = torch.tensor([0.5, 0.3, 0.15, 0.05, 0.0])
    draws = [draw(probs, seed, 0) for seed in range(4000)]
    share = torch.bincount(torch.tensor(draws), minlength=5) / len(draws)
    assert torch.allclose(share, probs, atol=0.03)  # distributed as probs, never a 0 token
    assert draw(probs, 11, 5) == draw(probs, 11, 5)


@pytest.mark.parametrize("decoder", ["draft", "draft-hydra", "vanilla"])
def test_engine_decoder_option(decoder):
    from manyheads.models.local.engine import LocalEngine

    engine = LocalEngine(decoder=decoder)
    try:
        assert isinstance(engine.step, DraftStep) == decoder.startswith("draft")
        assert engine.batched
        assert (getattr(engine.step, "medusa", None) is not None) == (decoder == "draft-hydra")
    finally:
        engine.close()


def test_decoder_labels_show_the_measured_speed_up(tmp_path, monkeypatch):
    from manyheads.models.local import decoders

    speeds = tmp_path / "speeds.json"
    speeds.write_text(json.dumps({"decoders": {"draft": {"generic": 1.31, "rooms": 1.9}}}))
    monkeypatch.setattr(decoders, "SPEEDS", speeds)
    assert "1.31x generic, 1.90x rooms vs vanilla here" in decoders.label("draft")
    assert decoders.label("hydra") == "hydra: " + decoders.DECODERS["hydra"]  # never measured


def test_the_default_decoder_is_the_fastest_measured():
    """The shipped measurement (``bench/medusa.py``) on room requests, what the app serves,
    decides the default, not a guess."""
    from manyheads.models.local.decoders import measured
    from manyheads.settings import Settings

    speeds = measured()["decoders"]
    fastest = max(speeds, key=lambda d: speeds[d]["rooms"])
    want = fastest if speeds[fastest]["rooms"] > 1.0 else "vanilla"
    assert Settings().decoder == want
