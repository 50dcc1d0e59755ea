"""Drafting decoders vs vanilla greedy decoding on the same ``LocalEngine``, item by item.

Decoders: ``draft`` (grammar jump-forward + n-gram drafts, ``models/local/speculate.py``), Medusa
and Hydra trees. Workloads: 40 generic prompts; "rooms", free-text requests recorded from real
room turns (``bench/room_prompts.py``); "structured", the rooms' JSON-schema requests; all greedy.
"rooms_sampled" replays the "rooms" requests the way rooms decode free text (``ROOM_SAMPLING``:
temperature 0.7, top-p 0.9 and the rooms' repetition control, a fixed seed), for the decoders
that stay exact when sampling (the seeded draw makes a drafted token checkable by exact match).

For every item the decoders run interleaved (vanilla, draft, medusa, hydra, vanilla, ...)
``--repeats`` times so background load on a shared machine hits all alike; each item's time is
the median of its repeats, and a speed-up is total vanilla time / total time (prefill included);
"decode only" takes the prompt pass (timed on its own each repeat) out of both sides.
Lossless means the token ids equal vanilla's exactly. Prints a table and writes
``bench/results/medusa.json``; ``--vllm`` runs vLLM's CPU build plain, with our exported Medusa
heads and with its own n-gram speculator on the same prompts and merges that in.
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
from manyheads.models.local.decoders import SPEEDS
from manyheads.models.local.engine import LocalEngine
from manyheads.models.local.speculate import DraftStep
from manyheads.models.medusa import default_heads_dir, enable_medusa, load_heads
from manyheads.models.medusa.step import MedusaStep, heads_for
from manyheads.models.medusa.training.data import chat, load_prompts
from manyheads.models.types import SamplingParams
from manyheads.orchestration.room import SPEECH_PENALTIES

RESULTS = Path(__file__).parent / "results" / "medusa.json"
ROOM_SAMPLING = {"temperature": 0.7, "top_p": 0.9, "seed": 7, **SPEECH_PENALTIES}
ROOM_PROMPTS = Path(__file__).parent / "data" / "room_prompts.jsonl"


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


def run_once(engine: LocalEngine, ids: list[int], max_tokens: int, schema: dict | None = None,
             sampling: dict | None = None) -> tuple[list[int], float, int]:
    """Token ids (greedy unless ``sampling``), wall seconds and decode steps of one generation
    with ``engine.step``."""
    grammar = engine.grammars.for_schema(schema) if schema is not None else None
    params = SamplingParams(max_tokens=max_tokens, **(sampling or {}))
    row = Row(prompt_len=len(ids), params=params, prompt=ids, grammar=grammar,
              seed=params.seed or 0)
    start = time.perf_counter()
    steps = sum(1 for _ in decode_stream(engine.model, [ids], [row], eos_ids=engine.eos_ids,
                                         pad_id=engine.pad_id, step=engine.step))
    return list(row.tokens), time.perf_counter() - start, steps


class _Prefilled(Exception):
    """Raised by the marker step of ``prefill_once``: the prompt pass is done."""


def prefill_once(engine: LocalEngine, ids: list[int]) -> float:
    """Wall seconds of the prompt's one forward pass (what every decoder pays before drafting):
    ``decode_stream`` up to its first step call."""
    row = Row(prompt_len=len(ids), params=SamplingParams(max_tokens=1), prompt=ids)
    marks: list[float] = []

    def mark(batch) -> list[list[int]]:
        marks.append(time.perf_counter())
        raise _Prefilled

    start = time.perf_counter()
    try:
        next(decode_stream(engine.model, [ids], [row], eos_ids=engine.eos_ids,
                           pad_id=engine.pad_id, step=mark))
    except _Prefilled:
        pass
    return marks[0] - start


def vllm_check(heads_dir: Path | None, k: int, max_tokens: int, n_prompts: int,
               n_room: int) -> dict:
    """vLLM plain, with our exported heads and with its n-gram speculator on the generic and
    room prompts; greedy outputs, speed per workload, spec metrics."""
    import tempfile

    from manyheads.models.medusa import export_vllm
    from manyheads.models.vllm_engine import VLLMEngine

    workloads = {"generic": [[{"role": "user", "content": t}] for _, t in bench_prompts(n_prompts)],
                 "rooms": [p for _, p, _, _ in room_requests("rooms", n_room)]}
    params = SamplingParams(max_tokens=max_tokens)
    out: dict = {"num_speculative_tokens": k}
    with tempfile.TemporaryDirectory() as tmp:
        export_vllm(heads_dir, tmp)
        specs = {"medusa": {"method": "medusa", "model": tmp, "num_speculative_tokens": k},
                 "ngram": {"method": "ngram", "num_speculative_tokens": k,
                           "prompt_lookup_max": 4, "prompt_lookup_min": 2},
                 "plain": None}
        for name, spec in specs.items():
            started = time.perf_counter()
            try:
                engine = VLLMEngine(speculative_config=spec)
            except Exception as exc:  # record the exact refusal
                out[name] = {"error": f"{type(exc).__name__}: {exc}"}
                continue
            out[name] = {"start_s": time.perf_counter() - started}
            for workload, prompts in workloads.items():
                started = time.perf_counter()
                completions = [engine.chat([p], params)[0] for p in prompts]  # batch 1, like ours
                wall = time.perf_counter() - started
                tokens = sum(c.usage.completion_tokens for c in completions)
                out[name][workload] = {"wall_s": wall, "tokens_per_s": tokens / wall,
                                       "texts": [c.text for c in completions]}
            if spec is not None:  # the plain engine keeps no counters; the drafting one does
                out[name]["spec_metrics"] = {k_: v for k_, v in engine.metrics().items()
                                             if "spec" in k_}
            engine.close()
    for name in ("medusa", "ngram"):
        for workload in workloads:
            mine, plain = out.get(name, {}).get(workload), out.get("plain", {}).get(workload)
            if mine and plain:
                mine["same_text"] = mine["texts"] == plain["texts"]
                mine["speedup"] = mine["tokens_per_s"] / plain["tokens_per_s"]
    return out


def room_requests(kind: str, n: int) -> list[tuple[str, list[int] | str, dict | None, int]]:
    """Recorded room requests (``bench/room_prompts.py``): ``kind`` "rooms" = free text,
    "structured" = JSON schema; up to ``n``, round-robin over rooms."""
    if not ROOM_PROMPTS.is_file():
        raise SystemExit(f"{ROOM_PROMPTS} is missing: run `python bench/room_prompts.py` first")
    rows = [json.loads(line) for line in ROOM_PROMPTS.read_text().splitlines() if line.strip()]
    rows = [r for r in rows if (r["schema"] is not None) == (kind == "structured")]
    by_room: dict[str, list[dict]] = {}
    for r in rows:
        by_room.setdefault(r["room"], []).append(r)
    picked: list[dict] = []
    while len(picked) < n and any(by_room.values()):
        for room in sorted(by_room):
            if by_room[room] and len(picked) < n:
                picked.append(by_room[room].pop(0))
    return [(r["room"], r["prompt"], r["schema"], r["max_tokens"]) for r in picked]


def measure(engine: LocalEngine, arms: dict, items: list, repeats: int, max_tokens: int,
            console: Console, label: str, sampling: dict | None = None) -> list[dict]:
    """Every decoder on every item, interleaved ``repeats`` times; medians per item."""
    rows = []
    for index, (category, prompt, schema, wanted) in enumerate(items):
        ids = encode_prompt(engine.tokenizer, prompt, engine.context_len)
        limit = min(wanted, max_tokens)
        times: dict[str, list[float]] = {name: [] for name in arms}
        prefills: list[float] = []
        outs, steps = {}, {}
        for _ in range(repeats):
            prefills.append(prefill_once(engine, ids))
            for name, step in arms.items():
                engine.step = step
                outs[name], seconds, steps[name] = run_once(engine, ids, limit, schema,
                                                            sampling)
                times[name].append(seconds)
        row = {"category": category, "tokens": len(outs["vanilla"]), "max_tokens": limit,
               "prefill_s": statistics.median(prefills)}
        for name in arms:
            row[f"{name}_s"] = statistics.median(times[name])
            row[f"{name}_tokens_per_step"] = len(outs[name]) / max(steps[name], 1)
            row[f"{name}_lossless"] = outs["vanilla"] == outs[name]
        rows.append(row)
        console.log(f"{label} {index + 1}/{len(items)} {category}: " + ", ".join(
            f"{name} {row[f'{name}_s']:.2f}s" for name in arms))
    engine.step = vanilla_step
    return rows


def summary(rows: list[dict], name: str) -> dict:
    """Speed-up (total vanilla time / total time), tokens per step and losslessness; also the
    decode-only speed-up (the prompt pass, the same for every decoder, taken out of both) and
    the prompt pass's share of vanilla time, which bounds what any decoder can gain."""
    vanilla_total = sum(r["vanilla_s"] for r in rows)
    total = sum(r[f"{name}_s"] for r in rows)
    tokens = sum(r["tokens"] for r in rows)
    prefill = sum(r["prefill_s"] for r in rows)
    out = {"speedup": vanilla_total / total,
           "decode_speedup": (vanilla_total - prefill) / (total - prefill),
           "prefill_share": prefill / vanilla_total,
           "tokens_per_step": tokens / sum(r["tokens"] / r[f"{name}_tokens_per_step"]
                                           for r in rows),  # total tokens / total steps
           "lossless_fraction": sum(r[f"{name}_lossless"] for r in rows) / len(rows),
           "tokens_per_s": tokens / total, "vanilla_tokens_per_s": tokens / vanilla_total}
    cats = sorted({r["category"] for r in rows})
    out["by_category"] = {c: sum(r["vanilla_s"] for r in rows if r["category"] == c)
                          / sum(r[f"{name}_s"] for r in rows if r["category"] == c)
                          for c in cats}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--prompts", type=int, default=40)
    parser.add_argument("--room-prompts", type=int, default=24)
    parser.add_argument("--structured", type=int, default=12)
    parser.add_argument("--max-tokens", type=int, default=48)
    parser.add_argument("--structured-max-tokens", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--heads", type=Path, default=default_heads_dir(sequential=False),
                        help="Medusa heads (default: the shipped ones)")
    parser.add_argument("--hydra", type=Path, default=default_heads_dir(),
                        help="Hydra heads run alongside (default: the shipped ones)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--vllm", action="store_true",
                        help="only run vLLM plain / Medusa / n-gram and merge it into --out")
    parser.add_argument("--vllm-k", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    console = Console()
    if args.vllm:
        result = json.loads(args.out.read_text()) if args.out.is_file() else {}
        result["vllm"] = vllm_check(args.heads, args.vllm_k, args.max_tokens, args.prompts,
                                    args.room_prompts)
        console.print_json(json.dumps({k: v for k, v in result["vllm"].items()
                                       if k != "texts"}))
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")
        return
    engine = LocalEngine(decoder="vanilla")
    draft = DraftStep(engine.encode)
    draft_hydra = DraftStep(engine.encode, medusa=MedusaStep(heads_for(engine, args.hydra)))
    arms = {"vanilla": vanilla_step, "draft": draft, "draft-hydra": draft_hydra,
            "medusa": enable_medusa(engine, args.heads), "hydra": enable_medusa(engine, args.hydra)}
    started = time.perf_counter()
    generic = [(c, chat(t), None, args.max_tokens) for c, t in bench_prompts(args.prompts)]
    workloads = {
        "generic": measure(engine, arms, generic, args.repeats, args.max_tokens, console,
                           "generic"),
        "rooms": measure(engine, arms, room_requests("rooms", args.room_prompts), args.repeats,
                         args.max_tokens, console, "rooms"),
        # Medusa trees fall back to plain steps on grammar rows: only the draft step competes.
        "structured": measure(engine, {"vanilla": vanilla_step, "draft": draft,
                                       "draft-hydra": draft_hydra},
                              room_requests("structured", args.structured), args.repeats,
                              args.structured_max_tokens, console, "structured"),
        "rooms_sampled": measure(engine, {"vanilla": vanilla_step, "draft": draft,
                                          "draft-hydra": draft_hydra},
                                 room_requests("rooms", args.room_prompts), args.repeats,
                                 args.max_tokens, console, "rooms_sampled", ROOM_SAMPLING),
    }
    result: dict = {"settings": {"prompts": args.prompts, "room_prompts": args.room_prompts,
                                 "structured": args.structured, "max_tokens": args.max_tokens,
                                 "structured_max_tokens": args.structured_max_tokens,
                                 "repeats": args.repeats, "threads": args.threads,
                                 "greedy": True, "machine": "2-core CPU",
                                 "rooms_sampled": ROOM_SAMPLING}}
    for name, rows in workloads.items():
        decoders = [d for d in rows[0] if d.endswith("_lossless")] if rows else []
        result[name] = {d.removesuffix("_lossless"): summary(rows, d.removesuffix("_lossless"))
                        for d in decoders if d != "vanilla_lossless"}
        result[name]["items"] = rows
    def best(workload: str) -> tuple[str, float]:
        lossless = {d: v for d, v in result[workload].items()
                    if d != "items" and v["lossless_fraction"] == 1.0}
        name = max(lossless, key=lambda d: lossless[d]["speedup"])
        return name, lossless[name]["speedup"]
    result["best_decoder"], result["best_speedup"] = best("generic")
    result["best_decoder_room"], result["best_speedup_room"] = best("rooms")
    result["best_decoder_structured"], result["structured_speedup"] = best("structured")
    result["lossless_fraction"] = min(v["lossless_fraction"] for w in workloads
                                      for d, v in result[w].items() if d != "items")
    result["draft_stats"] = {name: {"proposed": step.proposed, "kept": step.kept,
                                    "tokens_per_speculative_step": step.mean_accepted}
                             for name, step in (("draft", draft), ("draft-hydra", draft_hydra))}
    result["per_head_accuracy"] = {
        "medusa": load_heads(args.heads).config.training.get("eval_accuracy"),
        "hydra": load_heads(args.hydra).config.training.get("eval_accuracy")}
    result["wall_s"] = time.perf_counter() - started
    old = json.loads(args.out.read_text()) if args.out.is_file() else {}
    if "vllm" in old:
        result["vllm"] = old["vllm"]
    table = Table(title=f"Decoders vs vanilla greedy, {args.threads} threads, median of "
                        f"{args.repeats}")
    for col in ("workload", "decoder", "speed-up", "decode only", "prefill share",
                "tokens/step", "lossless"):
        table.add_column(col, justify="right")
    for name in workloads:
        for d, v in result[name].items():
            if d != "items":
                table.add_row(name, d, f"{v['speedup']:.2f}x", f"{v['decode_speedup']:.2f}x",
                              f"{v['prefill_share']:.0%}", f"{v['tokens_per_step']:.2f}",
                              f"{v['lossless_fraction']:.3f}")
    console.print(table)
    console.print(f"best generic {result['best_decoder']} {result['best_speedup']:.2f}x; "
                  f"best rooms {result['best_decoder_room']} {result['best_speedup_room']:.2f}x; "
                  f"structured {result['structured_speedup']:.2f}x")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    speeds = {"decoders": {d: {w: round(result[w][d]["speedup"], 2) for w in workloads
                               if d in result[w]} for d in arms if d != "vanilla"},
              "settings": result["settings"], "date": time.strftime("%Y-%m-%d")}
    SPEEDS.write_text(json.dumps(speeds, indent=2) + "\n")


if __name__ == "__main__":
    main()
