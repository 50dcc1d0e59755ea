"""Medusa vs vanilla greedy decoding on the same ``LocalEngine``, prompt by prompt.

Prints a table and writes ``bench/results/medusa.json``. For every prompt the two decoders run
interleaved (vanilla, medusa, vanilla, medusa, ...) ``--repeats`` times so background load on a
shared machine hits both alike; each prompt's time is the median of its repeats and the speed-up
is total vanilla time / total Medusa time (prefill included in both). Lossless means the Medusa
token ids equal the vanilla ones exactly. Sequential (Hydra) heads run as a third decoder in the
same interleaved runs, reported side by side under ``"hydra"``. vLLM
with/without Medusa is a separate, optional ``--vllm`` run (engine start takes minutes on a CPU).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from manyheads.models.engine import encode_prompt
from manyheads.models.local.decode import Row, decode_stream, vanilla_step
from manyheads.models.local.engine import LocalEngine
from manyheads.models.medusa import default_heads_dir, enable_medusa, load_heads
from manyheads.models.medusa.training.data import chat, load_prompts
from manyheads.models.types import SamplingParams

RESULTS = Path(__file__).parent / "results" / "medusa.json"


def bench_prompts(n: int) -> list[tuple[str, str]]:
    """Held-out prompts first, topped up round-robin by category from the training prompts."""
    held = load_prompts(split="eval")
    chosen = [(p.category, p.prompt) for p in held][:n]
    rest = load_prompts(split="train")
    cats = sorted({p.category for p in rest})
    i = 0
    while len(chosen) < n:
        pool = [p for p in rest if p.category == cats[i % len(cats)]]
        chosen.append((pool[i // len(cats)].category, pool[i // len(cats)].prompt))
        i += 1
    return chosen


def run_once(engine: LocalEngine, ids: list[int], max_tokens: int) -> tuple[list[int], float]:
    """Greedy token ids and wall seconds of one generation with ``engine.step``."""
    row = Row(prompt_len=len(ids), params=SamplingParams(max_tokens=max_tokens))
    start = time.perf_counter()
    for _ in decode_stream(engine.model, [ids], [row], eos_ids=engine.eos_ids,
                           pad_id=engine.pad_id, step=engine.step):
        pass
    return list(row.tokens), time.perf_counter() - start


def vllm_check(heads_dir: Path | None, k: int, max_tokens: int, n_prompts: int) -> dict:
    """Start vLLM with and without our exported heads; greedy outputs, speed, spec metrics."""
    import tempfile

    from manyheads.models.medusa import export_vllm
    from manyheads.models.vllm_engine import VLLMEngine

    prompts = [[{"role": "user", "content": t}] for _, t in bench_prompts(n_prompts)]
    params = SamplingParams(max_tokens=max_tokens)
    out: dict = {"num_speculative_tokens": k}
    with tempfile.TemporaryDirectory() as tmp:
        export_vllm(heads_dir, tmp)
        for name, spec in (("medusa", {"method": "medusa", "model": tmp,
                                       "num_speculative_tokens": k}), ("plain", None)):
            started = time.perf_counter()
            try:
                engine = VLLMEngine(speculative_config=spec)
            except Exception as exc:  # record the exact refusal
                out[name] = {"error": f"{type(exc).__name__}: {exc}"}
                continue
            boot = time.perf_counter() - started
            started = time.perf_counter()
            completions = [engine.chat([p], params)[0] for p in prompts]  # batch 1, like ours
            wall = time.perf_counter() - started
            tokens = sum(c.usage.completion_tokens for c in completions)
            metrics = {}  # the plain engine keeps no counters; the drafting one does
            if spec is not None:
                metrics = {k_: v for k_, v in engine.metrics().items() if "spec" in k_}
            out[name] = {"start_s": boot, "wall_s": wall, "tokens_per_s": tokens / wall,
                         "texts": [c.text for c in completions], "spec_metrics": metrics}
            engine.close()
    if "texts" in out.get("medusa", {}) and "texts" in out.get("plain", {}):
        out["same_text"] = out["medusa"]["texts"] == out["plain"]["texts"]
        out["speedup"] = out["medusa"]["tokens_per_s"] / out["plain"]["tokens_per_s"]
    return out


def summary(rows: list[dict], name: str, step) -> dict:
    """Speed-up, tokens per step and losslessness of one drafting decoder against vanilla."""
    vanilla_total = sum(r["vanilla_s"] for r in rows)
    total = sum(r[f"{name}_s"] for r in rows)
    tokens = sum(r["tokens"] for r in rows)
    return {"speedup": vanilla_total / total, "mean_accepted_tokens": step.mean_accepted,
            "lossless_fraction": sum(r[f"{name}_lossless"] for r in rows) / len(rows),
            "vanilla_tokens_per_s": tokens / vanilla_total, f"{name}_tokens_per_s": tokens / total,
            "tree": [list(p) for p in step.tree.paths], "tree_nodes": step.tree.size}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--prompts", type=int, default=40)
    parser.add_argument("--max-tokens", type=int, default=48)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (1: steadier on a machine shared with other work)")
    parser.add_argument("--heads", type=Path, default=default_heads_dir(sequential=False),
                        help="Medusa heads (default: the shipped ones)")
    parser.add_argument("--hydra", type=Path, default=default_heads_dir(),
                        help="Hydra heads run alongside (default: the shipped ones)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--vllm", action="store_true",
                        help="only run vLLM with/without Medusa and merge it into --out")
    parser.add_argument("--vllm-k", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    console = Console()
    if args.vllm:
        result = json.loads(args.out.read_text()) if args.out.is_file() else {}
        result["vllm"] = vllm_check(args.heads, args.vllm_k, args.max_tokens, args.prompts)
        console.print_json(json.dumps(result["vllm"]))
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")
        return
    engine = LocalEngine()
    heads = load_heads(args.heads)
    arms = {"vanilla": vanilla_step, "medusa": enable_medusa(engine, args.heads),
            "hydra": enable_medusa(engine, args.hydra)}
    prompts = bench_prompts(args.prompts)
    rows, started = [], time.perf_counter()
    for index, (category, text) in enumerate(prompts):
        ids = encode_prompt(engine.tokenizer, chat(text), engine.context_len)
        times: dict[str, list[float]] = {name: [] for name in arms}
        outs = {}
        before = {name: (step.steps, step.tokens) for name, step in arms.items()
                  if name != "vanilla"}
        for _ in range(args.repeats):
            for name, step in arms.items():
                engine.step = step
                outs[name], seconds = run_once(engine, ids, args.max_tokens)
                times[name].append(seconds)
        row = {"category": category, "prompt": text, "tokens": len(outs["vanilla"])}
        for name, step in arms.items():
            row[f"{name}_s"] = statistics.median(times[name])
            if name != "vanilla":
                steps, tokens = step.steps - before[name][0], step.tokens - before[name][1]
                row[f"{name}_accepted_per_step"] = tokens / steps if steps else 0.0
                row[f"{name}_lossless"] = outs["vanilla"] == outs[name]
        rows.append(row)
        console.log(f"{index + 1}/{len(prompts)} {category}: " + ", ".join(
            f"{name} {row[f'{name}_s']:.2f}s" for name in arms)
            + f"; medusa {row['medusa_accepted_per_step']:.2f} tok/step")
    engine.step = vanilla_step
    result = {**summary(rows, "medusa", arms["medusa"]),
              "per_head_accuracy": heads.config.training.get("eval_accuracy"),
              "settings": {"prompts": len(rows), "max_tokens": args.max_tokens,
                           "repeats": args.repeats, "threads": args.threads, "greedy": True,
                           "machine": "2-core CPU"},
              "wall_s": time.perf_counter() - started, "by_category": {}}
    result["hydra"] = {**summary(rows, "hydra", arms["hydra"]), "per_head_accuracy":
                       load_heads(args.hydra).config.training.get("eval_accuracy")}
    result["prompts"] = rows
    for cat in sorted({r["category"] for r in rows}):
        sub = [r for r in rows if r["category"] == cat]
        result["by_category"][cat] = {
            "speedup": sum(r["vanilla_s"] for r in sub) / sum(r["medusa_s"] for r in sub),
            "accepted_per_step": statistics.mean(r["medusa_accepted_per_step"] for r in sub)}
    table = Table(title=f"Medusa vs vanilla greedy ({len(rows)} prompts, "
                        f"{args.max_tokens} tokens, median of {args.repeats})")
    for col in ("category", "speed-up", "tokens/step"):
        table.add_column(col, justify="right")
    for cat, r in result["by_category"].items():
        table.add_row(cat, f"{r['speedup']:.2f}x", f"{r['accepted_per_step']:.2f}")
    table.add_row("all", f"{result['speedup']:.2f}x", f"{result['mean_accepted_tokens']:.2f}")
    console.print(table)
    console.print(f"lossless fraction {result['lossless_fraction']:.3f}; vanilla "
                  f"{result['vanilla_tokens_per_s']:.1f} tok/s, Medusa "
                  f"{result['medusa_tokens_per_s']:.1f} tok/s")
    hydra = result["hydra"]
    console.print(f"Hydra: {hydra['speedup']:.2f}x, {hydra['mean_accepted_tokens']:.2f} "
                  f"tokens/step, lossless {hydra['lossless_fraction']:.3f}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
