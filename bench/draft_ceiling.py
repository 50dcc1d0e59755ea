"""How fast could tree decoding with our drafts be, if every tree were perfect?

An upper bound for the drafts we have (the shipped Hydra heads and the n-gram draft), separate
from how well a step chooses its tree. For each request the model answers greedily; then, at
every point where a step would start, an oracle looks at the answer: it keeps drafting while the
true next token is among the heads' top ``W`` guesses at that depth (each head reading the true
token before its target, as on an accepted path) or is the next token of an n-gram draft that
matched all the way so far. A real
tree has to include wrong guesses too, so the oracle's tree is just the accepted path, and its
pass costs ``PASS_COST`` of that many tokens: the least any tree holding that path could cost.
Drafting time is left out (it only adds). So ``decode_bound`` is the most any tree built from
these drafts could give on decode, and ``bound`` the same with the prompt pass, which every
decoder pays alike, put back in.

Prints a table and writes ``bench/results/draft_ceiling.json``.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import torch
from medusa import bench_prompts, prefill_once, room_requests, run_once
from rich.console import Console
from rich.progress import track
from rich.table import Table

from manyheads.models.engine import encode_prompt
from manyheads.models.local.costs import pass_cost
from manyheads.models.local.decode import vanilla_step
from manyheads.models.local.engine import LocalEngine
from manyheads.models.local.speculate import ngram_draft
from manyheads.models.medusa.step import DRAW_WIDTH, heads_for  # DRAW_WIDTH: guesses a tree scores
from manyheads.models.medusa.training.data import answer_hidden, chat

RESULTS = Path(__file__).parent / "results" / "draft_ceiling.json"
NGRAM_TOKENS = 8  # ``DraftStep``'s n-gram draft length
CALIBRATION_BINS = torch.tensor([0.0, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.01])


@torch.no_grad()
def guesses(engine: LocalEngine, heads, tokens: list[int], hidden: torch.Tensor,
            width: int) -> tuple[torch.Tensor, list[tuple[torch.Tensor, torch.Tensor]]]:
    """Whether each head's top ``width`` held the true token, [n, depth] (row j: the step whose
    root is ``tokens[j]``; head d reads the true token before its target), and per head the
    guesses' probabilities and hits ([R, width] each) for calibration.
    ``hidden`` [n, H] holds the state each answer token was chosen from (``answer_hidden``)."""
    lm_head = engine.model.get_output_embeddings()
    embed = engine.model.get_input_embeddings().weight
    n, depth = len(tokens), heads.config.num_heads
    answer = torch.tensor(tokens)
    guessed = torch.zeros(n, depth, dtype=torch.bool)  # [j, d]: tokens[j+1+d] in the top W
    scored = []
    for d in range(depth):
        rows = torch.arange(max(0, n - 1 - d))
        ids, probs = heads.scored_guesses(d, heads.head_features(d, hidden[rows],
                                                                 embed[answer[rows + d]]),
                                          lm_head, width)  # [R, W]
        right = ids == answer[rows + 1 + d][:, None]
        guessed[rows, d] = right.any(-1)
        scored.append((probs, right))
    return guessed, scored


def kept_tokens(ids: list[int], tokens: list[int], guessed: torch.Tensor | None,
                ngram: bool) -> list[int]:
    """For each root position j: how many tokens after ``tokens[j]`` the oracle keeps, drafting
    from the heads' guesses (``guessed``, or none) and the n-gram draft. An n-gram token counts
    only while the draft has matched every token before it (it is one chain in the tree); the
    heads may guess after it, as if they expanded its nodes."""
    depth = 0 if guessed is None else guessed.shape[1]
    kept = []
    for j in range(len(tokens)):
        chain = ngram_draft([*ids, *tokens[:j + 1]], NGRAM_TOKENS)[0] if ngram else []
        length, on_chain = 0, True
        while j + 1 + length < len(tokens):
            d = length  # the depth of the next token
            on_chain = on_chain and d < len(chain) and chain[d] == tokens[j + 1 + d]
            if not (on_chain or (d < depth and bool(guessed[j, d]))):
                break
            length += 1
        kept.append(length)
    return kept


def calibrate(pairs: list[tuple[torch.Tensor, torch.Tensor]]) -> list[dict]:
    """Binned by the head's probability: its mean, and how often such a guess was right."""
    probs = torch.cat([p for p, _ in pairs])
    right = torch.cat([r for _, r in pairs]).float()
    index = torch.bucketize(probs, CALIBRATION_BINS[1:-1])
    return [{"from": float(CALIBRATION_BINS[b]),
             "mean_probability": float(probs[index == b].mean()),
             "right": float(right[index == b].mean()), "guesses": int((index == b).sum())}
            for b in range(len(CALIBRATION_BINS) - 1) if (index == b).sum() >= 20]


def simulate(kept: list[int]) -> tuple[int, float]:
    """Passes and their least cost (in one-token passes) when each step keeps the oracle's
    path from where the last one ended."""
    j, passes, cost = 0, 0, 0.0
    while j < len(kept):
        passes += 1
        cost += pass_cost(1 + kept[j])
        j += 1 + kept[j]
    return passes, cost


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--prompts", type=int, default=40)
    parser.add_argument("--room-prompts", type=int, default=12)
    parser.add_argument("--max-tokens", type=int, default=48)
    parser.add_argument("--widths", type=int, nargs="+", default=[1, 5, 10])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    engine = LocalEngine(decoder="vanilla")
    engine.step = vanilla_step
    heads = heads_for(engine)
    workloads = {
        "generic": [chat(t) for _, t in bench_prompts(args.prompts)],
        "rooms": [p for _, p, _, _ in room_requests("rooms", args.room_prompts)],
    }
    arms = [("n-gram only", 0, True)] + [(f"heads top-{w}", w, False) for w in args.widths] \
        + [(f"heads top-{w} + n-gram", w, True) for w in args.widths]
    calibration: dict[int, list] = {d: [] for d in range(heads.config.num_heads)}
    result: dict = {"settings": {k: v for k, v in vars(args).items() if k != "out"},
                    "workloads": {}}
    for name, prompts in workloads.items():
        tokens_total, prefill_s, decode_s = 0, 0.0, 0.0
        per_arm = {label: [0, 0.0] for label, _, _ in arms}
        for prompt in track(prompts, description=name):
            ids = encode_prompt(engine.tokenizer, prompt, engine.context_len)
            tokens, seconds, _ = run_once(engine, ids, args.max_tokens)
            prefill = statistics.median(prefill_once(engine, ids) for _ in range(3))
            prefill_s += prefill
            decode_s += max(seconds - prefill, 0.0)
            tokens_total += len(tokens)
            hidden = answer_hidden(engine.model, [ids], [tokens], pad_id=engine.pad_id)[0]
            by_width = {w: guesses(engine, heads, tokens, hidden.float(), w)
                        for w in {*args.widths, DRAW_WIDTH}}
            for d, (probs, right) in enumerate(by_width[DRAW_WIDTH][1]):
                calibration[d].append((probs.flatten(), right.flatten()))
            for label, width, ngram in arms:
                guessed = by_width[width][0] if width else None
                passes, cost = simulate(kept_tokens(ids, tokens, guessed, ngram))
                per_arm[label][0] += passes
                per_arm[label][1] += cost
        share = prefill_s / (prefill_s + decode_s)
        rows = {}
        for label, (passes, cost) in per_arm.items():
            decode_bound = tokens_total / cost
            rows[label] = {"tokens_per_pass": tokens_total / passes,
                           "decode_bound": decode_bound,
                           "bound": 1.0 / (share + (1.0 - share) / decode_bound)}
        result["workloads"][name] = {"tokens": tokens_total, "prefill_share": share,
                                     "arms": rows}
    result["calibration"] = {f"head {d}": calibrate(pairs) for d, pairs in calibration.items()}
    _print(result)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")


def _print(result: dict) -> None:
    table = Table(title="oracle trees: the most these drafts could give (greedy, lossless)")
    for column in ("workload", "drafts", "tokens a pass", "decode bound", "bound"):
        table.add_column(column)
    for name, work in result["workloads"].items():
        for label, row in work["arms"].items():
            table.add_row(f"{name} (prefill {work['prefill_share']:.0%})", label,
                          f"{row['tokens_per_pass']:.2f}", f"{row['decode_bound']:.2f}x",
                          f"{row['bound']:.2f}x")
    Console().print(table)
    table = Table(title="are the heads' probabilities right? (top-5 guesses on these answers)")
    table.add_column("probability")
    heads = list(result["calibration"])
    for head in heads:
        table.add_column(f"{head}: right (guesses)")
    bins = sorted({b["from"] for rows in result["calibration"].values() for b in rows})
    for start in bins:
        cells = []
        for head in heads:
            row = next((b for b in result["calibration"][head] if b["from"] == start), None)
            cells.append(f"{row['mean_probability']:.2f} -> {row['right']:.2f} ({row['guesses']})"
                         if row else "-")
        table.add_row(f">= {start:.2f}", *cells)
    Console().print(table)


if __name__ == "__main__":
    main()
