"""What one verification pass costs on this CPU, and what that allows draft-and-verify decoding.

The embedded model (SmolLM2-135M-Instruct) is loaded exactly as ``LocalEngine`` loads it (fp32,
SDPA with grouped K/V heads kept grouped (``gqa_attention``), ``eval()``, oneDNN-prepacked linears
for the table; the variants start from the plain model to measure each change on its own). After a
cached 256-token prefix, ONE forward pass feeds k new tokens (the call ``decode.forward`` makes:
2-D mask, position ids, ``DynamicCache``, ``output_hidden_states=True``); the cache is cropped back
to the prefix before every pass and the crop is outside the timed region. k values are interleaved
inside every repeat so background load hits them alike; each number is the median of ``--repeats``
passes after warmup.

Split: a second, separate set of passes with forward pre-/post-hooks (``time.perf_counter``) on
every ``self_attn`` module (projections + rope + sdpa + o_proj), every ``mlp`` module and the
``lm_head``; ``other`` = hooked pass total - the three (embedding, RMSNorms, mask building, cache
bookkeeping, hook overhead). The headline cost is the un-hooked pass.

Floors: weight bytes actually read per pass (every Linear incl. the tied lm_head, norms, plus the
KV cache) / measured read bandwidth (``x.sum()`` over a 512 MiB tensor, the best of several
repeats) and FLOPs (2 per weight per token + attention QK/PV) / measured fp32 GEMM rate (the best of
a 576-wide GEMM in the model's shapes).

Ceiling: with per-position draft acceptance a, a chain of k-1 drafts verified in one k-token pass
yields E = (1 - a^k) / (1 - a) tokens; the ideal speed-up (no draft cost) is E / (cost(k)/cost(1)).

``--variants`` measures cheaper verification, one variant per subprocess and thread count (so
global flags and compiled graphs never leak): each reports k=1/2/4/8 cost and whether a 48-token
greedy generation through ``decode_stream`` (and the argmax of a k=8 verification pass) is
token-identical to eager fp32 in the same process.

    flock /tmp/manyheads-cpu.lock .venv/bin/python bench/verify_cost.py            # table
    flock /tmp/manyheads-cpu.lock .venv/bin/python bench/verify_cost.py --variants --no-table
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from rich.console import Console
from rich.table import Table

RESULTS = Path(__file__).parent / "results" / "verify_cost.json"
PLOT = RESULTS.with_suffix(".png")
KS = [1, 2, 3, 4, 5, 6, 8, 12, 16]
ACCEPT = [0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]
VARIANTS = ["eager_sdpa", "eager_attn", "gqa_sdpa", "prefill_keep1", "fused_qkv_gateup",
            "mkl_packed", "mkldnn_packed", "mkldnn_module", "mkldnn_bf16_fp32prec", "compile"]
VARIANT_KS = [1, 2, 4, 8]
TEXT = ("The committee met on Tuesday to review the budget for the coming year. Each department "
        "presented its plan, and the members asked questions about staffing, equipment and "
        "travel. After a long discussion they agreed to postpone the decision on the new "
        "building until the engineers had finished their survey of the site. ")
console = Console(width=170)


# -- model ------------------------------------------------------------------------------------
def load_model(attn: str = "engine"):
    """The embedded model, loaded the way ``LocalEngine.__init__`` does it ("engine": its SDPA
    attention that keeps grouped K/V heads grouped, ``gqa_attention``); "sdpa" is transformers'
    own."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from manyheads.models.embedded import resolve_model

    if attn == "engine":
        from manyheads.models.local import gqa_attention

        attn = gqa_attention.NAME
    path = resolve_model(None)
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32,
                                                 attn_implementation=attn)
    model.eval()
    return model, tokenizer


def text_ids(tokenizer, n: int) -> list[int]:
    ids: list[int] = []
    while len(ids) < n:
        ids += tokenizer(TEXT)["input_ids"]
    return ids[:n]


class Pass:
    """A cached prefix and one k-token verification pass after it."""

    def __init__(self, model, tokenizer, prefix: int) -> None:
        from transformers import DynamicCache

        self.model, self.prefix = model, prefix
        ids = text_ids(tokenizer, prefix + max(KS))
        self.prefix_ids = torch.tensor([ids[:prefix]])
        self.new_ids = torch.tensor([ids[prefix:]])
        self.cache = DynamicCache()
        with torch.inference_mode():
            model(input_ids=self.prefix_ids, attention_mask=torch.ones_like(self.prefix_ids),
                  past_key_values=self.cache, use_cache=True, logits_to_keep=1)

    def reset(self) -> None:
        self.cache.crop(self.prefix)

    @torch.inference_mode()
    def run(self, k: int):
        return self.model(
            input_ids=self.new_ids[:, :k],
            attention_mask=torch.ones((1, self.prefix + k), dtype=torch.long),
            position_ids=torch.arange(self.prefix, self.prefix + k)[None],
            past_key_values=self.cache, use_cache=True, output_hidden_states=True)

    def timed(self, k: int) -> float:
        self.reset()
        start = time.perf_counter()
        self.run(k)
        return time.perf_counter() - start


def time_ks(vpass: Pass, ks: list[int], repeats: int, warmup: int = 2) -> dict[int, list[float]]:
    for _ in range(warmup):
        for k in ks:
            vpass.timed(k)
    times: dict[int, list[float]] = {k: [] for k in ks}
    for _ in range(repeats):
        for k in ks:
            times[k].append(vpass.timed(k))
    return times


class Split:
    """perf_counter hooks around self_attn, mlp and lm_head; seconds summed per pass."""

    def __init__(self, model) -> None:
        self.acc = {"attention": 0.0, "mlp": 0.0, "lm_head": 0.0}
        self.handles = []
        modules = [(layer.self_attn, "attention") for layer in model.model.layers]
        modules += [(layer.mlp, "mlp") for layer in model.model.layers]
        modules.append((model.lm_head, "lm_head"))
        for module, part in modules:
            self.handles.append(module.register_forward_pre_hook(self._pre))
            self.handles.append(module.register_forward_hook(self._post(part)))

    def _pre(self, module, args):
        module._vc_start = time.perf_counter()

    def _post(self, part):
        def hook(module, args, output):
            self.acc[part] += time.perf_counter() - module._vc_start
        return hook

    def reset(self) -> None:
        for part in self.acc:
            self.acc[part] = 0.0

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()


def time_split(model, vpass: Pass, ks: list[int], repeats: int) -> dict[int, dict[str, float]]:
    split = Split(model)
    parts: dict[int, dict[str, list[float]]] = {
        k: {p: [] for p in ("total", "attention", "mlp", "lm_head")} for k in ks}
    try:
        for rep in range(repeats + 2):
            for k in ks:
                split.reset()
                total = vpass.timed(k)
                if rep < 2:
                    continue
                parts[k]["total"].append(total)
                for part, seconds in split.acc.items():
                    parts[k][part].append(seconds)
    finally:
        split.remove()
    out = {}
    for k in ks:
        med = {p: statistics.median(v) * 1e3 for p, v in parts[k].items()}
        med["other"] = med["total"] - med["attention"] - med["mlp"] - med["lm_head"]
        out[k] = med
    return out


# -- machine limits ---------------------------------------------------------------------------
def median_time(fn, repeats: int, warmup: int = 2) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def bandwidth_times(n: int, repeats: int) -> tuple[float, float]:
    x = torch.randn(n)
    y = torch.empty_like(x)
    return median_time(lambda: x.sum(), repeats), median_time(lambda: y.copy_(x), repeats)


def machine_limits(model, repeats: int) -> dict:
    """Read/copy bandwidth and fp32 GEMM rate at the current thread count."""
    n = 128 * 1024 * 1024  # 512 MiB of fp32: far past every cache
    t_sum, t_copy = bandwidth_times(n, repeats)
    w_lm = model.lm_head.weight.detach()
    row = torch.randn(1, 576)
    t_gemv = median_time(lambda: F.linear(row, w_lm), repeats)
    gemm = {}
    for name, (m, out_f) in {"576x1536 M=512": (512, 1536), "576x1536 M=2048": (2048, 1536),
                             "576x49152 M=64": (64, 49152), "576x49152 M=256": (256, 49152)
                             }.items():
        a = torch.randn(m, 576)
        w = torch.randn(out_f, 576) if out_f != 49152 else w_lm
        t = median_time(lambda a=a, w=w: F.linear(a, w), max(3, repeats // 2))
        gemm[name] = 2 * m * 576 * out_f / t / 1e9
    return {
        "read_gbps": n * 4 / t_sum / 1e9,
        "copy_gbps": 2 * n * 4 / t_copy / 1e9,
        "lm_head_gemv_gbps": w_lm.numel() * 4 / t_gemv / 1e9,
        "gemm_gflops": gemm,
        "peak_gflops": max(gemm.values()),
    }


def model_work(model, prefix: int, k: int) -> tuple[float, float]:
    """(bytes read, FLOPs) of one k-token pass after ``prefix`` cached tokens."""
    cfg = model.config
    linear = sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear))
    norms = sum(p.numel() for n, p in model.named_parameters() if "norm" in n)
    kv_dim = cfg.num_key_value_heads * cfg.head_dim
    ctx = prefix + k
    kv_bytes = cfg.num_hidden_layers * 2 * ctx * kv_dim * 4
    attn_flops = cfg.num_hidden_layers * 2 * 2 * k * ctx * cfg.num_attention_heads * cfg.head_dim
    return (linear + norms) * 4 + kv_bytes, 2 * k * linear + attn_flops


# -- the table --------------------------------------------------------------------------------
def cost_table(threads: list[int], prefix: int, repeats: int) -> dict:
    """The table for the model as ``LocalEngine`` runs it: oneDNN-prepacked linears."""
    from manyheads.models.local.prepack import prepack_linears

    model, tokenizer = load_model()
    prepack_linears(model)
    vpass = Pass(model, tokenizer, prefix)
    out: dict = {"per_threads": {}}
    for t in threads:
        torch.set_num_threads(t)
        console.print(f"[bold]threads={t}[/]: machine limits ...")
        limits = machine_limits(model, repeats)
        console.print(f"threads={t}: pass cost (k={KS}) ...")
        totals = time_ks(vpass, KS, repeats)
        split = time_split(model, vpass, KS, repeats)
        rows = {}
        base = statistics.median(totals[1])
        for k in KS:
            nbytes, flops = model_work(model, prefix, k)
            cost = statistics.median(totals[k])
            rows[k] = {
                "ms": cost * 1e3, "ms_min": min(totals[k]) * 1e3,
                "ratio": cost / base, "ms_per_token": cost * 1e3 / k,
                "split_ms": split[k],
                "bytes": nbytes, "gflop": flops / 1e9,
                "mem_floor_ms": nbytes / (limits["read_gbps"] * 1e9) * 1e3,
                "compute_floor_ms": flops / (limits["peak_gflops"] * 1e9) * 1e3,
            }
            rows[k]["roofline_ms"] = max(rows[k]["mem_floor_ms"], rows[k]["compute_floor_ms"])
            rows[k]["achieved_gflops"] = flops / cost / 1e9
        ceiling = ceiling_table({k: rows[k]["ratio"] for k in KS})
        out["per_threads"][str(t)] = {"limits": limits, "ceiling": ceiling,
                                      "rows": {str(k): r for k, r in rows.items()}}
        print_table(t, limits, rows, ceiling)
    return out


def ceiling_table(ratio: dict[int, float]) -> dict:
    """Break-even tokens/step per k, and the ideal speed-up per acceptance a and best k."""
    per_a = {}
    for a in ACCEPT:
        speed = {k: (1 - a ** k) / (1 - a) / ratio[k] for k in ratio}
        best = max(speed, key=speed.get)
        per_a[f"{a:.1f}"] = {"speedup_by_k": {str(k): s for k, s in speed.items()},
                             "best_k": best, "best_speedup": speed[best],
                             "expected_tokens_at_best": (1 - a ** best) / (1 - a)}
    return {"break_even_tokens_per_step": {str(k): r for k, r in ratio.items()}, "by_accept": per_a}


def print_table(t: int, limits: dict, rows: dict, ceiling: dict) -> None:
    console.print(f"threads={t}: read {limits['read_gbps']:.1f} GB/s, copy "
                  f"{limits['copy_gbps']:.1f} GB/s, lm_head GEMV {limits['lm_head_gemv_gbps']:.1f}"
                  f" GB/s, GEMM peak {limits['peak_gflops']:.0f} GFLOP/s "
                  + ", ".join(f"{n}: {v:.0f}" for n, v in limits["gemm_gflops"].items()))
    table = Table(title=f"one k-token pass after a 256-token prefix, threads={t} (median ms)")
    for col in ("k", "pass", "ratio", "ms/token", "attn", "mlp", "lm_head", "other",
                "mem floor", "compute floor", "GFLOP/s"):
        table.add_column(col, justify="right")
    for k, r in rows.items():
        s = r["split_ms"]
        table.add_row(str(k), f"{r['ms']:.1f}", f"{r['ratio']:.2f}", f"{r['ms_per_token']:.1f}",
                      f"{s['attention']:.1f}", f"{s['mlp']:.1f}", f"{s['lm_head']:.1f}",
                      f"{s['other']:.1f}", f"{r['mem_floor_ms']:.1f}",
                      f"{r['compute_floor_ms']:.1f}", f"{r['achieved_gflops']:.0f}")
    console.print(table)
    table = Table(title=f"ideal draft-and-verify speed-up, threads={t} (chain of k-1 drafts, "
                        "draft cost 0; break-even = tokens/step needed)")
    table.add_column("a", justify="right")
    for k in rows:
        table.add_column(f"k={k}", justify="right")
    table.add_column("best k", justify="right")
    table.add_row("break-even", *[f"{ceiling['break_even_tokens_per_step'][str(k)]:.2f}"
                                  for k in rows], "")
    for a, entry in ceiling["by_accept"].items():
        table.add_row(a, *[f"{entry['speedup_by_k'][str(k)]:.2f}" for k in rows],
                      f"{entry['best_k']} ({entry['best_speedup']:.2f}x)")
    console.print(table)


def plot(result: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.5))
    colors = {"1": "tab:blue", "2": "tab:orange"}
    for t, entry in result["table"]["per_threads"].items():
        rows = entry["rows"]
        ks = [int(k) for k in rows]
        base = rows["1"]["ms"]
        c = colors.get(t)
        ax1.plot(ks, [rows[str(k)]["ratio"] for k in ks], "o-", color=c,
                 label=f"measured, {t} thread(s)")
        ax1.plot(ks, [rows[str(k)]["roofline_ms"] / base for k in ks], "--", color=c,
                 label=f"roofline max(mem, compute) / cost(1), {t}t")
        ax1.plot(ks, [rows[str(k)]["compute_floor_ms"] / base for k in ks], ":", color=c,
                 label=f"compute floor / cost(1), {t}t")
        ax2.plot(ks, [rows[str(k)]["ms"] for k in ks], "o-", color=c, label=f"pass, {t}t")
        ax2.plot(ks, [rows[str(k)]["mem_floor_ms"] for k in ks], "--", color=c,
                 label=f"memory floor, {t}t")
        ax2.plot(ks, [rows[str(k)]["compute_floor_ms"] for k in ks], ":", color=c,
                 label=f"compute floor, {t}t")
    ax1.plot([1, 16], [1, 16], color="grey", lw=0.5, label="k (no batching gain)")
    ax1.set(xlabel="k tokens in one pass", ylabel="cost(k) / cost(1)",
            title="verification cost ratio = break-even tokens/step", ylim=(0, None))
    ax2.set(xlabel="k tokens in one pass", ylabel="ms", title="pass time and floors",
            ylim=(0, None))
    ax1.legend(fontsize=7)
    ax2.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(PLOT, dpi=110)


# -- variants ---------------------------------------------------------------------------------
def greedy_tokens(model, tokenizer, prompts: list[list[int]], max_tokens: int) -> list[list[int]]:
    from manyheads.models.local.decode import Row, decode_stream
    from manyheads.models.types import SamplingParams

    eos = {tokenizer.eos_token_id} | set(
        [model.generation_config.eos_token_id] if isinstance(model.generation_config.eos_token_id,
                                                             int) else [])
    out = []
    for ids in prompts:
        row = Row(prompt_len=len(ids), params=SamplingParams(max_tokens=max_tokens), prompt=ids)
        for _ in decode_stream(model, [ids], [row], eos_ids=eos, pad_id=tokenizer.eos_token_id):
            pass
        out.append(list(row.tokens))
    return out


def prefill_time(model, ids: torch.Tensor, keep: int, repeats: int) -> float:
    from transformers import DynamicCache

    def run():
        with torch.inference_mode():
            model(input_ids=ids, attention_mask=torch.ones_like(ids),
                  past_key_values=DynamicCache(), use_cache=True, output_hidden_states=True,
                  logits_to_keep=keep)
    return median_time(run, repeats, warmup=1)


def packed_linear(linear: torch.nn.Linear, kind: str) -> None:
    """Replace ``linear.forward`` by a prepacked MKL or oneDNN GEMM (weights kept for the tie)."""
    w = linear.weight.detach()
    if kind == "mkl":
        packed = torch.ops.mkl._mkl_reorder_linear_weight(w, 1)

        def forward(x, packed=packed, w=w):
            return torch.ops.mkl._mkl_linear(x, packed, w, None, 1)
    else:
        packed = torch.ops.mkldnn._reorder_linear_weight(w, None)

        def forward(x, packed=packed):
            return torch.ops.mkldnn._linear_pointwise(x, packed, None, "none", [], "")
    linear.forward = forward


def fuse_projections(model) -> None:
    """One GEMM for q/k/v and one for gate/up per layer (same weights, concatenated)."""
    for layer in model.model.layers:
        attn, mlp = layer.self_attn, layer.mlp
        wqkv = torch.cat([attn.q_proj.weight, attn.k_proj.weight, attn.v_proj.weight]).detach()
        sizes = [attn.q_proj.out_features, attn.k_proj.out_features, attn.v_proj.out_features]
        state: dict = {}

        def q_forward(x, wqkv=wqkv, sizes=sizes, state=state):
            q, k, v = F.linear(x, wqkv).split(sizes, dim=-1)
            state["x"], state["k"], state["v"] = x, k, v
            return q

        def kv_forward(name, state=state):
            def forward(x):
                assert x is state["x"], "k/v projection of another input"
                return state[name]
            return forward
        attn.q_proj.forward = q_forward
        attn.k_proj.forward = kv_forward("k")
        attn.v_proj.forward = kv_forward("v")
        wgu = torch.cat([mlp.gate_proj.weight, mlp.up_proj.weight]).detach()
        inter = mlp.gate_proj.out_features

        def mlp_forward(x, mlp=mlp, wgu=wgu, inter=inter):
            gate, up = F.linear(x, wgu).split([inter, inter], dim=-1)
            return mlp.down_proj(mlp.act_fn(gate) * up)
        mlp.forward = mlp_forward


def first_divergence(x: list[int], y: list[int]) -> int | None:
    for i, (a, b) in enumerate(zip(x, y, strict=False)):
        if a != b:
            return i
    return None if len(x) == len(y) else min(len(x), len(y))


def apply_variant(name: str, model) -> dict:
    """Turn ``model`` (already used for the eager reference) into the variant; returns notes."""
    notes: dict = {}
    if name in ("eager_sdpa", "eager_attn", "prefill_keep1", "gqa_sdpa"):
        pass
    elif name == "fused_qkv_gateup":
        fuse_projections(model)
    elif name in ("mkl_packed", "mkldnn_packed"):
        for module in list(model.modules()):
            if isinstance(module, torch.nn.Linear):
                packed_linear(module, name.split("_")[0])
    elif name == "mkldnn_module":
        from torch.utils import mkldnn

        for layer in model.model.layers:
            for parent in (layer.self_attn, layer.mlp):
                for child, module in list(parent.named_children()):
                    if isinstance(module, torch.nn.Linear):
                        setattr(parent, child, mkldnn.to_mkldnn(module))
        model.lm_head = mkldnn.to_mkldnn(model.lm_head)
    elif name == "mkldnn_bf16_fp32prec":
        torch.backends.mkldnn.matmul.fp32_precision = "bf16"
        notes["fp32_precision"] = torch.backends.mkldnn.matmul.fp32_precision
    elif name == "compile":
        from torch import _dynamo

        _dynamo.config.cache_size_limit = 64
        model.forward = torch.compile(model.forward, dynamic=True)
    else:
        raise SystemExit(f"unknown variant {name}")
    return notes


def run_variant(name: str, threads: int, prefix: int, repeats: int, max_tokens: int) -> dict:
    from manyheads.models.engine import encode_prompt
    from manyheads.models.medusa.training.data import chat, load_prompts

    torch.set_num_threads(threads)
    model, tokenizer = load_model({"eager_attn": "eager", "gqa_sdpa": "engine"}.get(name, "sdpa"))
    prompts = [encode_prompt(tokenizer, chat(p.prompt), 8192)
               for p in load_prompts(split="eval")[:2]]
    result: dict = {"variant": name, "threads": threads}
    # eager fp32 reference, in this process, before anything is changed
    if name in ("eager_attn", "gqa_sdpa"):  # the reference is transformers' sdpa model
        ref_model, _ = load_model("sdpa")
    else:
        ref_model = model
    reference = greedy_tokens(ref_model, tokenizer, prompts, max_tokens)
    ref_pass = Pass(ref_model, tokenizer, prefix)
    ref_pass.reset()
    ref_logits = ref_pass.run(8).logits[0].clone()
    if name == "prefill_keep1":
        ids = torch.tensor([text_ids(tokenizer, prefix)])
        full = prefill_time(model, ids, 0, repeats)
        keep = prefill_time(model, ids, 1, repeats)
        result.update(prefill_full_ms=full * 1e3, prefill_keep1_ms=keep * 1e3,
                      identical=True, note="decode.prefill computes lm_head for every prompt row; "
                      "logits_to_keep=1 computes only the last (the one prefill() reads)")
        return result
    started = time.perf_counter()
    try:
        result["notes"] = apply_variant(name, model)
        vpass = Pass(model, tokenizer, prefix)  # first call: compiles when compiling
        vpass.reset()
        logits = vpass.run(8).logits[0]
        result["setup_s"] = time.perf_counter() - started
        result["verify_argmax_identical"] = bool(torch.equal(logits.argmax(-1),
                                                             ref_logits.argmax(-1)))
        result["verify_max_abs_logit_diff"] = float((logits - ref_logits).abs().max())
        started = time.perf_counter()
        tokens = greedy_tokens(model, tokenizer, prompts, max_tokens)
        result["generate_s"] = time.perf_counter() - started
        result["identical"] = tokens == reference
        result["first_divergence"] = [first_divergence(x, y)
                                      for x, y in zip(tokens, reference, strict=True)]
        times = time_ks(vpass, VARIANT_KS, repeats, warmup=3)
        result["ms"] = {str(k): statistics.median(v) * 1e3 for k, v in times.items()}
    except Exception as exc:  # record the exact failure
        result["error"] = f"{type(exc).__name__}: {str(exc)[:500]}"
        result["failed_after_s"] = time.perf_counter() - started
    return result


def variants(threads: list[int], names: list[str], prefix: int, repeats: int, max_tokens: int,
             timeout: int) -> list[dict]:
    out = []
    for name in names:
        for t in threads:
            console.print(f"variant {name}, threads={t} ...")
            cmd = [sys.executable, __file__, "--variant", name, "--threads", str(t),
                   "--prefix", str(prefix), "--repeats", str(repeats),
                   "--max-tokens", str(max_tokens)]
            started = time.perf_counter()
            try:
                proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                                      env={**os.environ, "TOKENIZERS_PARALLELISM": "false"})
                lines = [x for x in proc.stdout.splitlines() if x.startswith("{")]
                res = json.loads(lines[-1]) if lines else {
                    "variant": name, "threads": t,
                    "error": f"exit {proc.returncode}: {proc.stderr[-800:]}"}
            except subprocess.TimeoutExpired:
                res = {"variant": name, "threads": t, "error": f"timed out after {timeout} s"}
            res["wall_s"] = time.perf_counter() - started
            out.append(res)
    print_variants(out)
    return out


def print_variants(results: list[dict]) -> None:
    table = Table(title="cheaper verification: one pass after a 256-token prefix (median ms); "
                        "identical = 48-token greedy ids equal eager fp32")
    for col in ("variant", "threads", *[f"k={k}" for k in VARIANT_KS], "k=8/k=1",
                "identical", "verify argmax", "max |dlogit|", "setup s", "note"):
        table.add_column(col, justify="right")
    base = {r["threads"]: r.get("ms") for r in results if r["variant"] == "eager_sdpa"}
    for r in results:
        ms = r.get("ms") or {}
        b = base.get(r["threads"]) or {}
        cells = [f"{ms[str(k)]:.1f}" + (f" ({b[str(k)] / ms[str(k)]:.2f}x)" if b else "")
                 if str(k) in ms else "-" for k in VARIANT_KS]
        note = r.get("error", "")[:60]
        if "prefill_full_ms" in r:
            note = (f"prefill 256: full {r['prefill_full_ms']:.0f} ms -> keep1 "
                    f"{r['prefill_keep1_ms']:.0f} ms")
        table.add_row(r["variant"], str(r["threads"]), *cells,
                      f"{ms['8'] / ms['1']:.2f}" if ms else "-", str(r.get("identical", "-")),
                      str(r.get("verify_argmax_identical", "-")),
                      f"{r['verify_max_abs_logit_diff']:.1e}" if "verify_max_abs_logit_diff" in r
                      else "-", f"{r['setup_s']:.1f}" if "setup_s" in r else "-", note)
    console.print(table)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--prefix", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=11)
    parser.add_argument("--max-tokens", type=int, default=48)
    parser.add_argument("--no-table", action="store_true", help="keep the stored table")
    parser.add_argument("--variants", nargs="*", default=None,
                        help=f"measure these variants (none listed: all of {VARIANTS})")
    parser.add_argument("--variant-timeout", type=int, default=420)
    parser.add_argument("--variant", help=argparse.SUPPRESS)  # internal: one subprocess
    args = parser.parse_args()
    if args.variant:
        res = run_variant(args.variant, args.threads[0], args.prefix, args.repeats,
                          args.max_tokens)
        print(json.dumps(res))
        return
    result = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    result["torch"] = torch.__version__
    result["cpus"] = os.cpu_count()
    if not args.no_table:
        result["loadavg_before"] = os.getloadavg()
        result["command"] = " ".join(sys.argv)
        result["prefix"] = args.prefix
        result["prepacked"] = True
        result["repeats"] = args.repeats
        table = cost_table(args.threads, args.prefix, args.repeats)
        for entry in table["per_threads"].values():
            entry.update(command=result["command"], loadavg_before=result["loadavg_before"])
        kept = result.get("table", {}).get("per_threads", {})  # other thread counts stay
        result["table"] = {"per_threads": {**kept, **table["per_threads"]}}
        result["loadavg_after"] = os.getloadavg()  # 2 cores: ~1-2 is our own load
    if args.variants is not None:
        fresh = variants(args.threads, args.variants or VARIANTS, args.prefix, args.repeats,
                         args.max_tokens, args.variant_timeout)
        for r in fresh:
            r["command"] = " ".join(sys.argv)
        done = {(r["variant"], r["threads"]) for r in fresh}
        kept = [r for r in result.get("variants", []) if (r["variant"], r["threads"]) not in done]
        result["variants"] = sorted(kept + fresh, key=lambda r: (VARIANTS.index(r["variant"]),
                                                                  r["threads"]))
        if kept:
            print_variants(result["variants"])
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=1))
    if "table" in result:
        plot(result)
    console.print(f"wrote {RESULTS}" + (f" and {PLOT}" if "table" in result else ""))


if __name__ == "__main__":
    main()
