"""Uncertainty heads: steps, features, checker, head, metrics, verifier-guided generation."""

from __future__ import annotations

import math
from fractions import Fraction

import pytest
import torch

from manyheads.models.types import SamplingParams
from manyheads.models.uhead.features import (
    FeatureConfig,
    FeatureObserver,
    prefill_features,
    prompt_cache,
)
from manyheads.models.uhead.head import UHead, UHeadConfig
from manyheads.models.uhead.prompts import solver_conversation
from manyheads.models.uhead.steps import (
    answer_number,
    decode_offsets,
    format_steps,
    split_steps,
    token_spans,
)
from manyheads.models.uhead.training import metrics
from manyheads.models.uhead.training.checker import check_step, is_correct, label_steps
from manyheads.models.uhead.training.problems import make_problem, make_problems

TRICKY = ("Let me think.\r\n  step 1: Pens = 6 * 4 = 24  \r\nthat is 24 pens\n"
          "**Step 2:** 24 - 5 = 19 (see Step 1: above)\n\n"
          "Some notes\nStep 3) 19 + 1 = 20\nAnswer: 20\nStep 4: after the answer")


@pytest.fixture(scope="module")
def eager_engine():
    """Our own engine: attention features need eager attention (the session one is sdpa).

    One thread: on shared cores, two spinning OpenMP threads per process stall each other."""
    from manyheads.models.local.engine import LocalEngine

    threads = torch.get_num_threads()
    engine = LocalEngine(attn_implementation="eager", threads=1)
    yield engine
    engine.close()
    torch.set_num_threads(threads)


# -- steps ---------------------------------------------------------------------------------------
def test_split_steps_on_tricky_text():
    steps = split_steps(TRICKY)
    assert [s.number for s in steps] == [1, 2, 3, 4]
    assert steps[0].text == "Pens = 6 * 4 = 24 that is 24 pens"  # continuation line joined
    assert steps[1].text == "24 - 5 = 19 (see Step 1: above)"  # "Step 1:" mid-line: no split
    assert steps[2].text == "19 + 1 = 20"  # ends at the Answer line
    for step in steps:
        assert TRICKY[step.start:step.start + 4].lower() in {"step", "**st"}
        assert not TRICKY[step.end - 1].isspace()
    assert "Some notes" not in steps[1].text  # a blank line ends a step
    assert answer_number(TRICKY) == 20
    assert answer_number("Answer: 1,250 grams") == 1250
    assert split_steps("no steps here") == []


def test_token_spans_cover_each_step(eager_engine):
    text = format_steps(["Bought = 6 * 4 = 24", "Left = 24 - 5 = 19"], answer="19")
    encoded = eager_engine.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    offsets = [tuple(o) for o in encoded["offset_mapping"]]
    steps = split_steps(text)
    spans = token_spans(offsets, steps)
    assert len(spans) == 2 and spans[0][1] <= spans[1][0] + 1
    for step, (lo, hi) in zip(steps, spans, strict=True):
        covered = text[offsets[lo][0]:offsets[hi - 1][1]]
        assert step.text.split()[-1] in covered and "Answer" not in covered
    decoded, dec_offsets = decode_offsets(eager_engine.tokenizer, encoded["input_ids"])
    assert decoded == text and token_spans(dec_offsets, steps) == spans


# -- checker -------------------------------------------------------------------------------------
def test_checker_labels_hand_written_steps():
    problem = make_problem(0, 1)  # "A bag holds a ... buys b bags and loses c ..."
    assert all(c.label == 0 for c in label_steps(problem, list(problem.solution)))
    available = {Fraction(6), Fraction(4), Fraction(5), Fraction(100)}
    assert check_step("Pens bought = 6 * 4 = 24", available).label == 0
    assert check_step("Pens in 4 boxes = 6 x 4 = 24", available).label == 0  # label, "x"
    assert check_step("Pens bought = 6 * 4 = 26", available).label == 1  # wrong arithmetic
    assert check_step("Pens bought = 6 * 7 = 42", available).label == 1  # 7 is invented
    assert check_step("so he had 24 - 5 = 19 left", available | {Fraction(24)}).label == 0
    assert check_step("1,000 / 100 = 10", available | {Fraction(1000)}).label == 0
    assert check_step("6 > 100, so 6 wins", available).label == 1  # false comparison
    assert check_step("Add the pens together", available).label is None
    # a value stated by an earlier step is available to the next one, even if it is wrong
    checks = label_steps(problem, [f"{problem.solution[0].split('=')[0]}= 1 + 1 = 3",
                                   "Left = 3 + 1 = 4"])
    assert [c.label for c in checks] == [1, 0]
    assert is_correct(problem, f"Answer: {problem.answer}")
    assert not is_correct(problem, f"Answer: {problem.answer + 1}")


def test_problems_are_deterministic_and_solvable():
    assert make_problems(3, 14) == make_problems(3, 14)
    for problem in make_problems(3, 14):
        assert all(c.label == 0 for c in label_steps(problem, list(problem.solution)))
        assert problem.answer > 0


# -- metrics -------------------------------------------------------------------------------------
def test_metrics_match_hand_computed_values():
    scores, labels = [0.9, 0.8, 0.7, 0.6], [1, 0, 1, 0]
    assert metrics.pr_auc(scores, labels) == pytest.approx(0.5 * 1 + 0.5 * 2 / 3)
    assert metrics.roc_auc(scores, labels) == pytest.approx(0.75)
    assert metrics.roc_auc([0.5, 0.5], [1, 0]) == pytest.approx(0.5)  # ties count half
    assert metrics.pr_auc([0.5, 0.5, 0.1], [1, 0, 0]) == pytest.approx(0.5)
    assert metrics.ece([0.1, 0.9], [0, 1]) == pytest.approx(0.1)
    assert metrics.ece([0.75, 0.75, 0.75, 0.75], [1, 1, 1, 0]) == pytest.approx(0.0)
    assert math.isnan(metrics.pr_auc([0.3], [0]))
    assert metrics.best_f1_threshold([0.9, 0.8, 0.2], [1, 1, 0]) == pytest.approx(0.8)


# -- head ----------------------------------------------------------------------------------------
def test_head_is_small_and_scores_each_step():
    config = UHeadConfig(input_dim=FeatureConfig().dim(576, 30, 9))
    head = UHead(config)
    assert head.num_params() < 10_000_000
    x = torch.randn(2, 12, config.input_dim)
    token_mask = torch.ones(2, 12, dtype=torch.bool)
    token_mask[1, 8:] = False
    step_mask = torch.zeros(2, 3, 12)
    step_mask[:, 0, :4], step_mask[:, 1, 4:8], step_mask[0, 2, 8:] = 1, 1, 1
    head.eval()
    logits = head(x, token_mask, step_mask)
    assert logits.shape == (2, 3)
    # causal: the first step's score does not depend on later tokens
    x2 = x.clone()
    x2[:, 6:] += 5
    assert torch.allclose(head(x2, token_mask, step_mask)[:, 0], logits[:, 0], atol=1e-5)


# -- features ------------------------------------------------------------------------------------
def _prompt_ids(engine, problem: str) -> list[int]:
    text = engine.tokenizer.apply_chat_template(solver_conversation(problem), tokenize=False,
                                                add_generation_prompt=True)
    return engine.tokenizer(text, add_special_tokens=False)["input_ids"]


def test_feature_shapes_per_layer_and_head(eager_engine):
    model = eager_engine.model
    config = FeatureConfig(hidden_layers=(5, 30), attn_layers=(0, 29), attn_window=4, top_k=3)
    prompt = _prompt_ids(eager_engine, "What is 2 + 3?")
    response = eager_engine.tokenizer("Step 1: 2 + 3 = 5", add_special_tokens=False)["input_ids"]
    feats = prefill_features(model, prompt, response, config)
    hidden, heads = model.config.hidden_size, model.config.num_attention_heads
    assert feats.shape == (len(response), config.dim_for(model))
    assert config.dim_for(model) == 2 * hidden + 2 * heads * 4 + 3 + 3
    with torch.inference_mode():
        out = model(input_ids=torch.tensor([prompt + response]), output_attentions=True,
                    output_hidden_states=True)
    p = len(prompt) + 2  # third response token
    assert torch.allclose(feats[2, hidden:2 * hidden], out.hidden_states[30][0, p], atol=1e-4)
    attn = feats[2, 2 * hidden:2 * hidden + 2 * heads * 4].view(2, heads, 4)
    assert torch.allclose(attn[1], out.attentions[29][0, :, p, p - 4:p], atol=1e-5)
    probs = feats[:, -6:]
    assert torch.all(probs[:, 0] <= 0) and torch.all(probs[:, 3:].diff(dim=-1) <= 1e-6)
    no_attn = prefill_features(model, prompt, response, FeatureConfig(attn_window=0))
    assert no_attn.shape[1] == 3 * hidden + 3 + 5
    cached = prompt_cache(model, prompt)  # prompt run once, several responses scored after it
    for _ in range(2):
        again = prefill_features(model, prompt, response, config, cached)
        assert torch.allclose(again, feats, atol=1e-4)


def test_inflight_and_prefill_features_agree(eager_engine):
    config = FeatureConfig()
    observer = FeatureObserver(config)
    problems = ["How many minutes are in 2 hours?", "A bag holds 3 pens. Ana buys 4 bags "
                "and loses 2 pens. How many pens are left?"]  # different lengths: left padding
    eager_engine.observers.append(observer)
    try:
        completions = eager_engine.chat([solver_conversation(p) for p in problems],
                                        SamplingParams(max_tokens=24))
    finally:
        eager_engine.observers.remove(observer)
    for row, (problem, completion) in enumerate(zip(problems, completions, strict=True)):
        ids, inflight = observer.take(row, completion.usage.completion_tokens)
        assert len(ids) == completion.usage.completion_tokens > 0
        prefill = prefill_features(eager_engine.model, _prompt_ids(eager_engine, problem), ids,
                                   config)
        assert inflight.shape == prefill.shape
        scale = prefill.abs().amax(0).clamp(min=1.0)
        assert torch.max((inflight - prefill).abs() / scale) < 2e-3


# -- data --------------------------------------------------------------------------------------
def test_solve_by_prefill_matches_inflight(eager_engine):
    """The same solutions as ``solve`` (same requests and seeds); features by prefill per token
    id, agreeing with the in-flight ones wherever the re-tokenized ids are the sampled ids."""
    from manyheads.models.uhead.training.data import solve, solve_by_prefill

    config, problems = FeatureConfig(), make_problems(3, 1)
    by_prefill = solve_by_prefill(eager_engine, eager_engine, problems, 2, 0.7, 5,
                                  max_tokens=24, config=config)
    assert len(by_prefill) == 1 and len(by_prefill[0]) == 2
    for sample in by_prefill[0]:
        assert sample.problem_id == problems[0].id and sample.token_ids
        assert sample.features.shape == (len(sample.token_ids),
                                         config.dim_for(eager_engine.model))
        assert len(sample.labels) == len(sample.spans)
        assert all(0 <= lo <= hi <= len(sample.token_ids) for lo, hi in sample.spans)
    assert any(sample.spans for sample in by_prefill[0])
    observer = FeatureObserver(config)
    eager_engine.observers.append(observer)
    try:
        inflight = solve(eager_engine, observer, problems, 2, 0.7, 5, max_tokens=24)
    finally:
        eager_engine.observers.remove(observer)
    for seen, scored in zip(inflight[0], by_prefill[0], strict=True):
        assert seen.text.startswith(scored.text)  # the in-flight text keeps the stop string
        same = next((i for i, (a, b) in enumerate(zip(seen.token_ids, scored.token_ids,
                                                        strict=False)) if a != b),
                    min(len(seen.token_ids), len(scored.token_ids)))
        assert same >= len(scored.token_ids) - 1  # at most the last token merges differently
        a, b = seen.features[:same].float(), scored.features[:same].float()
        scale = b.abs().amax(0).clamp(min=1.0)
        assert torch.max((a - b).abs() / scale) < 3e-3  # float16 storage on both sides


def test_generate_shards_resumes(tmp_path):
    from manyheads.models.uhead.training.data import Sample, generate_shards, load_samples

    calls = []

    def solver(batch, seed):
        calls.append((len(batch), seed))
        return [[Sample(p.id, p.kind, "", [1], torch.zeros(1, 2), [], [], False, None)]
                for p in batch]

    problems = make_problems(3, 5)
    generate_shards(solver, problems, tmp_path, per_batch=2, seed=7)
    assert calls == [(2, 7), (2, 9), (1, 11)]
    (tmp_path / "shard_7_00002.pt").unlink()
    generate_shards(solver, problems, tmp_path, per_batch=2, seed=7)
    assert calls[3:] == [(2, 9)]  # only the missing shard is made again
    assert sorted(s.problem_id for s in load_samples(tmp_path)) == sorted(p.id for p in problems)


# -- verifier ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def verifier(eager_engine):
    from manyheads.models.uhead.verifier import StepVerifier

    return StepVerifier.default(engine=eager_engine)


def test_default_verifier_scores_steps(verifier):
    assert verifier.head.num_params() < 10_000_000
    assert 0.0 < verifier.threshold < 1.0
    scores = verifier.score("A bag holds 6 pens. Ana buys 4 bags and loses 5 pens. How many "
                            "pens are left?", ["Bought = 6 * 4 = 24", "Left = 24 - 5 = 19"])
    assert [s.index for s in scores] == [0, 1]
    assert all(0.0 <= s.p_incorrect <= 1.0 for s in scores)
    assert all(s.flagged == (s.p_incorrect > verifier.threshold) for s in scores)


def test_rating_a_scored_sample_equals_scoring_its_text(verifier):
    """``rate`` reuses a sample's features (e.g. vLLM text scored by prefill): same verdicts as
    ``score`` on the same text, up to the samples' float16 storage."""
    from manyheads.models.uhead.training.data import solve_by_prefill

    problem = make_problem(5, 1)
    samples = solve_by_prefill(verifier.engine, verifier.engine, [problem], 2, 0.7, 3,
                               max_tokens=48)[0]
    stepped = [s for s in samples if s.spans]
    assert stepped
    for sample in stepped:
        rated = verifier.rate(sample)
        scored = verifier.score(problem.text, sample.text)
        assert [s.text for s in rated.scores] == [s.text for s in scored]
        assert [s.p_incorrect for s in rated.scores] == pytest.approx(
            [s.p_incorrect for s in scored], abs=0.02)


def test_guided_generation_respects_retry_bound(verifier):
    problem = make_problem(5, 0).text
    strict = type(verifier)(verifier.head, verifier.engine, threshold=0.0)  # flags every step
    guided = strict.resample_steps(problem, max_retries=2, max_tokens=40)
    assert guided.retries == 2  # every draft is flagged, so it stops exactly at the bound
    assert guided.text
    best = verifier.best_of_n(problem, n=3, max_tokens=40)
    assert len(best.candidates) == 3
    assert best.text in [c.text for c in best.candidates]
    chosen = next(c for c in best.candidates if c.text == best.text)
    assert chosen.weakest <= min(c.weakest for c in best.candidates) + 0.02


def test_judge_plumbing(eager_engine):
    from manyheads.models.uhead.training.judge import judge_labels

    labels = judge_labels(eager_engine, "What is 2 + 3 + 4?", ["2 + 3 = 5", "5 + 4 = 10"],
                          max_tokens=64)
    assert len(labels) == 2 and all(label in (0, 1, None) for label in labels)


# -- CLI -----------------------------------------------------------------------------------------
def test_cli_trains_and_evaluates_on_existing_shards(eager_engine, tmp_path):
    """`uhead train --no-generate` then `uhead eval` on shards made by prefill scoring: a
    checkpoint, metrics JSON and PR curves come out; a wrong --data-engine is refused."""
    import json

    from typer.testing import CliRunner

    from manyheads.cli.main import app
    from manyheads.models.uhead.training.data import generate_shards, solve_by_prefill

    def solver(batch, seed):
        return solve_by_prefill(eager_engine, eager_engine, batch, 2, 0.7, seed, max_tokens=40)

    generate_shards(solver, make_problems(1, 12), tmp_path / "generated", per_batch=6, seed=1)
    runner = CliRunner()
    trained = runner.invoke(app, ["uhead", "train", "--data", str(tmp_path), "--no-generate",
                                  "--epochs", "2", "--out", str(tmp_path / "head")])
    assert trained.exit_code == 0, trained.output
    assert UHead.load(tmp_path / "head").num_params() < 10_000_000
    evaluated = runner.invoke(app, ["uhead", "eval", "--head", str(tmp_path / "head"),
                                    "--data", str(tmp_path / "generated"),
                                    "--png", str(tmp_path / "pr.png"),
                                    "--json", str(tmp_path / "m.json")])
    assert evaluated.exit_code == 0, evaluated.output
    result = json.loads((tmp_path / "m.json").read_text())
    assert {"uhead_pr_auc", "uhead_roc_auc", "best_baseline_pr_auc"} <= set(result)
    assert (tmp_path / "pr.png").stat().st_size > 0
    refused = runner.invoke(app, ["uhead", "eval", "--data-engine", "gpu"])
    assert refused.exit_code != 0 and "choose one of local, vllm" in refused.output
