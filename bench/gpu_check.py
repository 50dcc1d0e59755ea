"""Vanilla vs drafting decoders of the embedded model on a GPU, greedy, item by item.

Runs on a machine with PyTorch and transformers but not our dependencies (``gpu_check.sh``
carries pydantic and gguf): the ``manyheads`` package directories are registered without running
their ``__init__`` files, so only the decode loop, the draft step and the Medusa step load.
Every tensor the loop makes lands on the GPU through ``torch.set_default_device``.
Writes a JSON with per-decoder speed-up (total vanilla time / total time, medians of
``--repeats``) and whether the token ids equal vanilla's.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import types
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def register_packages() -> None:
    """Make ``manyheads.*`` importable without the package ``__init__`` files."""
    for name in ("manyheads", "manyheads.models", "manyheads.models.local",
                 "manyheads.models.medusa"):
        module = types.ModuleType(name)
        module.__path__ = [str(ROOT.joinpath(*name.split(".")))]
        sys.modules[name] = module


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--gguf", type=Path, required=True)
    parser.add_argument("--prompts", type=int, default=24)
    parser.add_argument("--max-tokens", type=int, default=96)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    register_packages()
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from manyheads.models.local.decode import Row, decode_stream, vanilla_step
    from manyheads.models.local.speculate import DraftStep
    from manyheads.models.medusa.heads import default_heads_dir
    from manyheads.models.medusa.step import enable_medusa
    from manyheads.models.types import SamplingParams

    device = "cuda" if torch.cuda.is_available() else "cpu"
    tokenizer = AutoTokenizer.from_pretrained(args.gguf.parent, gguf_file=args.gguf.name)
    model = AutoModelForCausalLM.from_pretrained(args.gguf.parent, gguf_file=args.gguf.name,
                                                 dtype=getattr(torch, args.dtype)).to(device)
    model.eval()
    torch.set_default_device(device)
    engine = types.SimpleNamespace(model=model, step=vanilla_step)
    arms = {"vanilla": vanilla_step,
            "draft": DraftStep(lambda text: tokenizer.encode(text, add_special_tokens=False))}
    for name, sequential in (("medusa", False), ("hydra", True)):
        step = enable_medusa(engine, default_heads_dir(sequential))
        step.heads.to(device)
        arms[name] = step
    eos = {tokenizer.eos_token_id}
    texts = [json.loads(line)["prompt"] for line in
             (ROOT / "manyheads/models/medusa/training/prompts.jsonl").read_text().splitlines()
             if line.strip()][:args.prompts // 2]
    rooms = ROOT / "bench/data/room_prompts.jsonl"
    convs = [[{"role": "user", "content": t}] for t in texts]
    convs += [r["prompt"] for r in map(json.loads, rooms.read_text().splitlines())
              if r["schema"] is None and isinstance(r["prompt"], list)][:args.prompts - len(convs)]
    items = []
    for conv in convs:
        text = tokenizer.apply_chat_template(conv, add_generation_prompt=True, tokenize=False)
        ids = tokenizer.encode(text, add_special_tokens=False)
        times = {name: [] for name in arms}
        outs = {}
        for _ in range(args.repeats):
            for name, step in arms.items():
                row = Row(prompt_len=len(ids), params=SamplingParams(max_tokens=args.max_tokens),
                          prompt=ids)
                torch.cuda.synchronize() if device == "cuda" else None
                start = time.perf_counter()
                for _ in decode_stream(model, [ids], [row], eos_ids=eos,
                                       pad_id=tokenizer.pad_token_id or 0, step=step):
                    pass
                torch.cuda.synchronize() if device == "cuda" else None
                times[name].append(time.perf_counter() - start)
                outs[name] = list(row.tokens)
        items.append({name: statistics.median(t) for name, t in times.items()}
                     | {f"{n}_lossless": outs[n] == outs["vanilla"] for n in arms})
        print(json.dumps(items[-1]), flush=True)
    result = {"device": torch.cuda.get_device_name() if device == "cuda" else "cpu",
              "dtype": args.dtype, "items": items, "settings": vars(args) | {
                  "gguf": str(args.gguf), "out": str(args.out)}}
    for name in arms:
        if name != "vanilla":
            result[name] = {
                "speedup": sum(i["vanilla"] for i in items) / sum(i[name] for i in items),
                "lossless_fraction": sum(i[f"{name}_lossless"] for i in items) / len(items)}
    print(json.dumps({k: v for k, v in result.items() if k != "items"}, indent=2))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
