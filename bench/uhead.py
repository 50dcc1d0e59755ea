"""Benchmark of the shipped UHead on held-out problems: step verification and guided answers.

Step metrics (PR-AUC with incorrect steps positive, ROC-AUC, ECE) come from held-out data shards
(problems the head never saw, made by `manyheads uhead eval`/the training script with another
seed) plus every generation made here; the baselines score the same generations. Answer accuracy:
per problem one batch of 1 greedy + 8 sampled solutions, scored in flight. Bounded by --minutes.
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

from manyheads.models.local.engine import LocalEngine
from manyheads.models.types import SamplingParams
from manyheads.models.uhead.checker import is_correct
from manyheads.models.uhead.data import STOP, build_sample, load_samples
from manyheads.models.uhead.problems import make_problems
from manyheads.models.uhead.prompts import solver_conversation
from manyheads.models.uhead.train import BASELINES, evaluate, save_pr_curves
from manyheads.models.uhead.verifier import StepVerifier, majority, pick_best

RESULTS = Path(__file__).parent / "results"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--heldout", type=Path, default=Path.home() / ".cache" / "manyheads"
                        / "uhead" / "heldout", help="held-out data shards (optional)")
    parser.add_argument("--problems", type=int, default=30)
    parser.add_argument("--samples", type=int, default=8)
    parser.add_argument("--seed", type=int, default=4, help="problem stream (not trained on)")
    parser.add_argument("--minutes", type=float, default=8.0, help="budget of the answer loop")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()

    engine = LocalEngine(attn_implementation="eager", threads=args.threads)
    verifier = StepVerifier.default(engine=engine)
    observer = verifier.observer
    engine.observers.append(observer)
    generated, greedy_ok, majority_ok, uhead_ok = [], [], [], []
    gen_s = score_s = 0.0
    started = time.perf_counter()
    for problem in make_problems(args.seed, args.problems):
        if time.perf_counter() - started > args.minutes * 60:
            break
        params = [SamplingParams(max_tokens=80, stop=STOP)] + [
            SamplingParams(temperature=0.7, top_p=0.95, max_tokens=80, stop=STOP,
                           seed=1000 * len(greedy_ok) + i) for i in range(args.samples)]
        t0 = time.perf_counter()
        completions = engine.chat([solver_conversation(problem.text)] * len(params), params)
        gen_s += time.perf_counter() - t0
        t0 = time.perf_counter()
        candidates = [verifier.candidate(row, c.usage.completion_tokens)
                      for row, c in enumerate(completions)]
        score_s += time.perf_counter() - t0
        for row, c in enumerate(completions):
            ids, feats = observer.take(row, c.usage.completion_tokens)
            generated.append(build_sample(problem, engine.tokenizer, ids, feats))
        sampled = candidates[1:]
        greedy_ok.append(is_correct(problem, candidates[0].text))
        voted = majority(sampled)
        majority_ok.append(voted is not None and is_correct(problem, f"Answer: {voted}"))
        uhead_ok.append(is_correct(problem, pick_best(sampled).text))
    engine.observers.remove(observer)

    heldout = load_samples(args.heldout) if any(args.heldout.glob("shard_*.pt")) else []
    metrics, raw = evaluate(verifier.head, heldout + generated)
    RESULTS.mkdir(parents=True, exist_ok=True)
    save_pr_curves(raw, RESULTS / "uhead_pr.png", "UHead vs baselines, held-out steps")
    inflight = observer.seconds + score_s  # features in flight + head scoring
    count = max(len(greedy_ok), 1)
    result = {
        "uhead_pr_auc": metrics["uhead_pr_auc"], "uhead_roc_auc": metrics["uhead_roc_auc"],
        "uhead_ece": metrics["uhead_ece"],
        **{f"{name}_pr_auc": metrics[f"{name}_pr_auc"] for name in BASELINES},
        "best_baseline_pr_auc": metrics["best_baseline_pr_auc"],
        "params": verifier.head.num_params(),
        "greedy_acc": sum(greedy_ok) / count, "bo8_majority_acc": sum(majority_ok) / count,
        "bo8_uhead_acc": sum(uhead_ok) / count,
        "inflight_overhead": inflight / max(gen_s - observer.seconds, 1e-9),
        "answer_problems": len(greedy_ok), "eval_steps": int(metrics["steps"]),
        "eval_incorrect_rate": metrics["incorrect_rate"],
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
