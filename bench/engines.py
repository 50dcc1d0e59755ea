"""Engine throughput on the embedded model, every contender in one run on the same prompts.

Prints a table and writes ``bench/results/engines.json``. Each measurement is the median of
``--repeats`` runs, interleaved (A, B, C, A, B, C, ...) so background load hits all alike.
Tokens per second = generated tokens / wall time of the whole call (prefill included).
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

from manyheads.models import SamplingParams
from manyheads.models.local.engine import LocalEngine
from manyheads.models.vllm_engine import VLLMEngine

PROMPTS = [
    "Explain how a refrigerator keeps food cold.",
    "Write a short story about a lighthouse keeper.",
    "What are three tips for learning a new language?",
    "Describe a sunset over the ocean.",
    "Why do leaves change colour in autumn?",
    "Give me a plan for a productive morning.",
    "How does a bicycle gear system work?",
    "Summarise the rules of chess in a few sentences.",
]
RESULTS = Path(__file__).parent / "results" / "engines.json"


def timed(run) -> float:
    """Tokens per second of one call of ``run`` (which returns the tokens it generated)."""
    start = time.perf_counter()
    tokens = run()
    return tokens / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--max-tokens", type=int, default=64)
    args = parser.parse_args()
    params = SamplingParams(max_tokens=args.max_tokens)
    chats = [[{"role": "user", "content": p}] for p in PROMPTS]

    local = LocalEngine()
    vllm_engine = VLLMEngine(max_model_len=2048)
    from vllm import SamplingParams as RawParams

    raw_params = RawParams(temperature=0.0, max_tokens=args.max_tokens)
    raw_prompts = [local.tokenizer.apply_chat_template(c, tokenize=False,
                                                       add_generation_prompt=True) for c in chats]

    def local_b1() -> int:
        return sum(local.chat([c], params)[0].usage.completion_tokens for c in chats[:4])

    def hf_b1() -> int:
        total = 0
        for text in raw_prompts[:4]:
            ids = local.tokenizer(text, add_special_tokens=False, return_tensors="pt")
            with torch.inference_mode():
                out = local.model.generate(**ids, max_new_tokens=args.max_tokens,
                                           do_sample=False, pad_token_id=local.pad_id)
            new = out[0, ids["input_ids"].shape[1]:].tolist()
            total += len(new) - (1 if new and new[-1] in local.eos_ids else 0)
        return total

    def vllm_b1() -> int:
        return sum(vllm_engine.chat([c], params)[0].usage.completion_tokens for c in chats[:4])

    def vllm_b8() -> int:
        return sum(c.usage.completion_tokens for c in vllm_engine.chat(chats, params))

    def vllm_raw_b8() -> int:
        outputs = vllm_engine.llm.generate(raw_prompts, raw_params, use_tqdm=False)
        return sum(len(o.outputs[0].token_ids) for o in outputs)

    contenders = {"local_tps_b1": local_b1, "hf_generate_tps_b1": hf_b1, "vllm_tps_b1": vllm_b1,
                  "vllm_tps_b8": vllm_b8, "vllm_raw_tps_b8": vllm_raw_b8}
    for run in contenders.values():  # warm-up: compile caches, allocator
        run()
    samples: dict[str, list[float]] = {name: [] for name in contenders}
    for _ in range(args.repeats):
        for name, run in contenders.items():
            samples[name].append(timed(run))
    vllm_engine.close()

    result = {name: round(statistics.median(values), 2) for name, values in samples.items()}
    result["wrapper_overhead"] = round(1 - result["vllm_tps_b8"] / result["vllm_raw_tps_b8"], 4)
    result["runs"] = {name: [round(v, 2) for v in values] for name, values in samples.items()}
    result["settings"] = {"repeats": args.repeats, "max_tokens": args.max_tokens,
                          "prompts": len(PROMPTS), "threads": torch.get_num_threads()}
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")

    table = Table(title="engine throughput (tokens/s, median)")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for name in [*contenders, "wrapper_overhead"]:
        table.add_row(name, str(result[name]))
    Console().print(table)
    print(f"local vs hf generate: {result['local_tps_b1'] / result['hf_generate_tps_b1']:.2f}x")


if __name__ == "__main__":
    main()
