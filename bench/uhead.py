"""Benchmark of the shipped UHead on held-out problems: step verification and guided answers.

Answers: per held-out problem (a seed never trained on) one greedy and 8 sampled solutions.
``--engine vllm`` writes them with vLLM and the local backbone scores them by prefill, which
lets many more problems fit the time; ``--engine local`` generates and scores them in flight.
Step metrics (PR-AUC with incorrect steps positive, ROC-AUC, ECE) cover these generations plus
any held-out shards (``--heldout``); the baselines score the same generations.
``inflight_overhead`` is always measured in flight on the local engine (``--inflight-problems``):
extra wall time of features + head over the generation time.
Writes bench/results/uhead.json and bench/results/uhead_pr.png.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table
from tqdm import tqdm

from manyheads.models.local.engine import LocalEngine
from manyheads.models.types import SamplingParams
from manyheads.models.uhead.prompts import solver_conversation
from manyheads.models.uhead.training.checker import is_correct
from manyheads.models.uhead.training.data import (
    STOP,
    Sample,
    build_sample,
    load_samples,
    solve_by_prefill,
)
from manyheads.models.uhead.training.problems import Problem, make_problems
from manyheads.models.uhead.training.train import BASELINES, evaluate, save_pr_curves
from manyheads.models.uhead.verifier import StepVerifier, majority, pick_best

RESULTS = Path(__file__).parent / "results"
TEMPERATURE, MAX_TOKENS = 0.7, 80


def in_flight(verifier: StepVerifier, problem: Problem, samples: int, seed: int
              ) -> tuple[list[Sample], float, float]:
    """1 greedy + ``samples`` sampled solutions scored while generating; also the wall time of
    plain generation and of the extra work (features in flight + the head's scoring)."""
    engine, observer = verifier.engine, verifier.observer
    params = [SamplingParams(max_tokens=MAX_TOKENS, stop=STOP)] + [
        SamplingParams(temperature=TEMPERATURE, top_p=0.95, max_tokens=MAX_TOKENS, stop=STOP,
                       seed=seed * 1000 + i) for i in range(samples)]
    observer.seconds = 0.0
    engine.observers.append(observer)
    try:
        t0 = time.perf_counter()
        completions = engine.chat([solver_conversation(problem.text)] * len(params), params)
        gen_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        for row, c in enumerate(completions):  # timed only: answers are rated from the samples
            verifier.candidate(row, c.usage.completion_tokens)
        extra_s = observer.seconds + time.perf_counter() - t0
        out = [build_sample(problem, engine.tokenizer,
                            *observer.take(row, c.usage.completion_tokens))
               for row, c in enumerate(completions)]
    finally:
        engine.observers.remove(observer)
    return out, gen_s - observer.seconds, extra_s


def by_prefill(text_engine, verifier: StepVerifier, problems: list[Problem], samples: int,
               seed: int) -> list[list[Sample]]:
    """Per problem: the greedy solution first, then the sampled ones (empty ones dropped)."""
    greedy, sampled = [], []
    for start in tqdm(range(0, len(problems), 16), desc="solutions (prefill scoring)",
                      unit="x16"):
        batch = problems[start:start + 16]
        greedy += solve_by_prefill(text_engine, verifier.engine, batch, 1, 0.0, seed,
                                   MAX_TOKENS)
        sampled += solve_by_prefill(text_engine, verifier.engine, batch, samples, TEMPERATURE,
                                    seed + start, MAX_TOKENS)
    return [g[:1] + s for g, s in zip(greedy, sampled, strict=True)]


def answer_accuracy(verifier: StepVerifier, problems: list[Problem],
                    groups: list[list[Sample]]) -> dict[str, float]:
    """Greedy, majority-of-8 and UHead best-of-8 accuracy (a missing greedy counts wrong)."""
    greedy_ok = majority_ok = uhead_ok = 0
    for problem, group in zip(problems, groups, strict=True):
        greedy, sampled = group[:1], [verifier.rate(s) for s in group[1:]]
        greedy_ok += bool(greedy) and greedy[0].correct
        if sampled:
            voted = majority(sampled)
            majority_ok += voted is not None and is_correct(problem, f"Answer: {voted}")
            uhead_ok += is_correct(problem, pick_best(sampled).text)
    count = max(len(problems), 1)
    return {"greedy_acc": greedy_ok / count, "bo8_majority_acc": majority_ok / count,
            "bo8_uhead_acc": uhead_ok / count}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--engine", choices=("local", "vllm"), default="vllm",
                        help="writes the answer solutions (vllm: scored by prefill)")
    parser.add_argument("--heldout", type=Path, default=Path.home() / ".cache" / "manyheads"
                        / "uhead" / "heldout", help="held-out data shards (optional)")
    parser.add_argument("--head", type=Path, default=None, help="default: the shipped head")
    parser.add_argument("--problems", type=int, default=60)
    parser.add_argument("--samples", type=int, default=8)
    parser.add_argument("--inflight-problems", type=int, default=3)
    parser.add_argument("--seed", type=int, default=4, help="problem stream (not trained on)")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()

    started = time.perf_counter()
    engine = LocalEngine(attn_implementation="eager", threads=args.threads)
    verifier = (StepVerifier.default(engine=engine) if args.head is None
                else StepVerifier.load(args.head, engine=engine))
    problems = make_problems(args.seed, args.problems)
    gen_s = extra_s = 0.0
    inflight_groups = []
    for i, problem in enumerate(tqdm(problems[:args.inflight_problems], desc="in flight")):
        group, g, e = in_flight(verifier, problem, args.samples, args.seed * 100 + i)
        inflight_groups.append(group)
        gen_s, extra_s = gen_s + g, extra_s + e
    if args.engine == "vllm":
        from manyheads.models import make_engine

        with make_engine("vllm", model=str(engine.path)) as text_engine:
            groups = by_prefill(text_engine, verifier, problems[args.inflight_problems:],
                                args.samples, args.seed)
    else:
        groups = [in_flight(verifier, p, args.samples, args.seed * 100 + i)[0]
                  for i, p in enumerate(tqdm(problems[args.inflight_problems:],
                                             desc="in flight"), args.inflight_problems)]
    groups = inflight_groups + groups
    generated = [s for group in groups for s in group]

    heldout = load_samples(args.heldout) if any(args.heldout.glob("shard_*.pt")) else []
    metrics, raw = evaluate(verifier.head, heldout + generated)
    RESULTS.mkdir(parents=True, exist_ok=True)
    save_pr_curves(raw, RESULTS / "uhead_pr.png", "UHead vs baselines, held-out steps")
    result = {
        "uhead_pr_auc": metrics["uhead_pr_auc"], "uhead_roc_auc": metrics["uhead_roc_auc"],
        "uhead_ece": metrics["uhead_ece"],
        **{f"{name}_pr_auc": metrics[f"{name}_pr_auc"] for name in BASELINES},
        **{f"{name}_roc_auc": metrics[f"{name}_roc_auc"] for name in BASELINES},
        "best_baseline_pr_auc": metrics["best_baseline_pr_auc"],
        "params": verifier.head.num_params(),
        **answer_accuracy(verifier, problems, groups),
        "inflight_overhead": extra_s / max(gen_s, 1e-9),
        "answer_problems": len(problems), "answer_engine": args.engine,
        "inflight_problems": args.inflight_problems,
        "eval_steps": int(metrics["steps"]), "eval_incorrect_rate": metrics["incorrect_rate"],
        "heldout_samples": len(heldout), "generated_samples": len(generated),
        "threshold": verifier.threshold, "torch_threads": torch.get_num_threads(),
        "wall_s": time.perf_counter() - started,
    }
    (RESULTS / "uhead.json").write_text(json.dumps(result, indent=2) + "\n")
    table = Table(title="UHead benchmark (SmolLM2-135M-Instruct, held-out problems)")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key, value in result.items():
        table.add_row(key, f"{value:.4f}" if isinstance(value, float) else str(value))
    Console().print(table)


if __name__ == "__main__":
    main()
