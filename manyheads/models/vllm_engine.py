"""``VLLMEngine``: in-process vLLM (the CPU build here, CUDA in production).

All requests of one ``chat``/``generate`` call go to vLLM together, so agents that speak in the
same round are batched by vLLM's scheduler. CPU specifics (KV-cache share of RAM, fp32, the
model worker on every core, Intel OpenMP for speculative decoding) are handled here so callers
never see them.
"""

from __future__ import annotations

import asyncio
import gc
import os
import subprocess
import sys
import threading
import time
import uuid
import warnings
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

from manyheads.errors import EngineError
from manyheads.models.embedded import resolve_model
from manyheads.models.engine import Engine, Program, Request, advance, encode_prompt
from manyheads.models.types import Completion, TokenLogprob, Usage


def _has_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def _bind_worker_to_all_cores() -> None:
    """Let the CPU model worker compute on every core this process may use.

    vLLM's CPU default reserves one core for its scheduler; on a small machine (2 cores here)
    that halves the model's compute, and a batch of 8 dialogues is compute-bound. Measured with
    ``bench/persuasion.py`` (n=32): concurrency 8 went from 157 s to 95 s, concurrency 1 from
    466 s to 424 s. A user's own ``VLLM_CPU_OMP_THREADS_BIND`` is left alone.
    """
    cores = sorted(os.sched_getaffinity(0))
    os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND", ",".join(map(str, cores)))


def _preload_intel_openmp() -> None:
    """vLLM's CPU speculative decoding wants Intel OpenMP preloaded in its engine process."""
    import sys

    lib = Path(sys.prefix) / "lib" / "libiomp5.so"
    current = os.environ.get("LD_PRELOAD", "")
    if lib.is_file() and str(lib) not in current:
        os.environ["LD_PRELOAD"] = f"{lib}:{current}" if current else str(lib)


# The reaper: a small process that outlives nothing. It watches its parent (the engine's owner)
# and remembers the processes the owner started after it; when the owner is gone it kills them
# and everything they started. Polling /proc via psutil, so it works whatever start method vLLM
# uses (its CPU build sets ``spawn``, where no code of ours runs in the child before vLLM's) and
# whichever thread built the engine (``PR_SET_PDEATHSIG`` fires when the *forking thread* exits).
_REAPER = """
import os, sys, time
import psutil
owner = int(sys.argv[1])
me = psutil.Process()
before = {p.pid for p in psutil.Process(owner).children(recursive=True)}
seen = {}
while os.getppid() == owner:
    try:
        for p in psutil.Process(owner).children(recursive=True):
            if p.pid not in before and p.pid != me.pid:
                seen.setdefault(p.pid, p)
    except psutil.NoSuchProcess:
        break
    time.sleep(0.5)
doomed = []
for p in seen.values():
    try:
        if p.is_running():
            doomed += [p, *p.children(recursive=True)]
    except psutil.NoSuchProcess:
        pass
for p in doomed:
    try:
        p.kill()
    except psutil.NoSuchProcess:
        pass
"""


def _start_reaper() -> subprocess.Popen[bytes]:
    """Make the vLLM processes this engine starts die with this process: after a clean exit,
    an exception, Ctrl-C or ``kill -9`` of the owner, within about a second."""
    return subprocess.Popen([sys.executable, "-c", _REAPER, str(os.getpid())],
                            stdin=subprocess.DEVNULL, start_new_session=True)


class VLLMEngine(Engine):
    name = "vllm"

    def __init__(self, model: str | Path | None = None, *, max_model_len: int = 4096,
                 dtype: str | None = None, memory_fraction: float | None = None,
                 speculative_config: dict[str, Any] | None = None, seed: int = 0,
                 log_stats: bool | None = None, **llm_options: Any) -> None:
        from vllm import LLM

        self.path = resolve_model(model)
        self.model_name = str(model or self.path.name)
        cuda = _has_cuda()
        if not cuda:
            _bind_worker_to_all_cores()
            # A seeded request whose prompt is split across steps crashes the CPU worker
            # ("CPU Generator does not use offset"): schedule whole prompts only.
            llm_options.setdefault("enable_chunked_prefill", False)
        if speculative_config and not cuda:
            _preload_intel_openmp()
        # ``no_repeat_ngram_size`` is our logits processor; vLLM refuses any with drafting.
        self._ngram = speculative_config is None
        if self._ngram:
            from manyheads.models.vllm_logits import FQCN

            llm_options["logits_processors"] = [*(llm_options.get("logits_processors") or ()),
                                                FQCN]
        self._reaper = _start_reaper()
        try:
            self.llm = LLM(
                model=str(self.path),
                dtype=dtype or ("auto" if cuda else "float32"),
                max_model_len=max_model_len,
                # On the CPU build this is the share of RAM reserved for the KV cache.
                gpu_memory_utilization=memory_fraction or (0.9 if cuda else 0.25),
                speculative_config=speculative_config,
                seed=seed,
                # Counters (``metrics()``) cost a little; on by default only for drafting.
                disable_log_stats=not (log_stats if log_stats is not None
                                       else speculative_config is not None),
                # Compact JSON: a small model otherwise wanders into endless whitespace.
                structured_outputs_config={"backend": "xgrammar", "disable_any_whitespace": True},
                **llm_options,
            )
        except Exception as exc:
            self._reaper.kill()
            raise EngineError(f"vLLM could not start {self.path}: {exc}") from exc
        self.tokenizer = self.llm.get_tokenizer()
        self.context_len = max_model_len
        self._lock = threading.Lock()
        self._closed = False
        self._log_stats = bool(log_stats if log_stats is not None else speculative_config)

    def _vllm_params(self, request: Request, prompt_len: int, **extra: Any):
        from vllm import SamplingParams
        from vllm.sampling_params import StructuredOutputsParams

        params = request.params
        structured = None
        if request.schema is not None:
            structured = StructuredOutputsParams(json=request.schema)
        if params.no_repeat_ngram_size:
            if self._ngram:
                extra["extra_args"] = {"no_repeat_ngram_size": params.no_repeat_ngram_size}
            else:
                warnings.warn("no_repeat_ngram_size is ignored: vLLM allows no custom logits "
                              "processor with speculative decoding (draft heads)", stacklevel=3)
        return SamplingParams(
            temperature=params.temperature, top_p=params.top_p,
            max_tokens=min(params.max_tokens, self.context_len - prompt_len),
            stop=list(params.stop) or None, seed=params.seed, logprobs=params.logprobs,
            repetition_penalty=params.repetition_penalty,
            frequency_penalty=params.frequency_penalty, presence_penalty=params.presence_penalty,
            structured_outputs=structured, **extra)

    def _run(self, requests: list[Request]) -> list[Completion]:
        prompts = [encode_prompt(self.tokenizer, r.prompt, self.context_len) for r in requests]
        params = [self._vllm_params(r, len(p)) for r, p in zip(requests, prompts, strict=True)]
        started = time.perf_counter()
        with self._lock:
            outputs = self.llm.generate([{"prompt_token_ids": p} for p in prompts], params,
                                        use_tqdm=False)
        elapsed = time.perf_counter() - started
        return [self._completion(o, elapsed) for o in outputs]

    def _drive(self, programs: Iterator[Program], concurrency: int) -> Iterator[Any]:
        """Continuous batching: each program's next request joins vLLM's running batch the
        moment its last one finishes, so no program waits for the slowest of a round."""
        engine = self.llm.llm_engine
        running: dict[str, tuple[Program, Request, float]] = {}
        exhausted = False
        started = time.perf_counter()

        def submit(program: Program, request: Request) -> None:
            from vllm.sampling_params import RequestOutputKind

            prompt = encode_prompt(self.tokenizer, request.prompt, self.context_len)
            request_id = f"drive-{uuid.uuid4().hex}"
            engine.add_request(request_id, {"prompt_token_ids": prompt}, self._vllm_params(
                request, len(prompt), output_kind=RequestOutputKind.FINAL_ONLY))
            running[request_id] = (program, request, time.perf_counter())

        with self._lock:
            try:
                while True:
                    while not exhausted and len(running) < concurrency:
                        program = next(programs, None)
                        if program is None:
                            exhausted = True
                            break
                        request, result = advance(program, None)
                        if request is None:
                            yield result
                        else:
                            submit(program, request)
                    if not running:
                        return
                    for output in engine.step():
                        if not output.finished or output.request_id not in running:
                            continue
                        program, request, sent = running.pop(output.request_id)
                        completion = self._completion(output, time.perf_counter() - sent)
                        self._finish(request, completion)
                        request, result = advance(program, completion)
                        if request is None:
                            yield result
                        else:
                            submit(program, request)
            finally:
                if running:  # the consumer stopped early or a program raised
                    engine.abort_request(list(running))
                    running.clear()
                self.tally.busy_s += time.perf_counter() - started

    def _completion(self, output: Any, elapsed: float) -> Completion:
        out = output.outputs[0]
        logprobs = None
        if out.logprobs is not None:
            logprobs = [_token_logprob(token, position)
                        for token, position in zip(out.token_ids, out.logprobs, strict=False)]
        ids = list(out.token_ids)
        if out.finish_reason == "stop" and not isinstance(out.stop_reason, str) and ids:
            ids.pop()  # the end-of-sequence or stop token ends the list; a stop string does not
        return Completion(
            text=out.text, finish_reason="length" if out.finish_reason == "length" else "stop",
            usage=Usage(prompt_tokens=len(output.prompt_token_ids or []),
                        completion_tokens=len(out.token_ids)),
            elapsed_s=elapsed, logprobs=logprobs, token_ids=ids)

    async def _stream(self, request: Request) -> AsyncIterator[str]:
        from vllm.sampling_params import RequestOutputKind

        prompt = encode_prompt(self.tokenizer, request.prompt, self.context_len)
        params = self._vllm_params(request, len(prompt), output_kind=RequestOutputKind.DELTA)
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[str | BaseException | None] = asyncio.Queue()

        def worker() -> None:
            engine = self.llm.llm_engine
            request_id = f"stream-{uuid.uuid4().hex}"
            try:
                with self._lock:
                    engine.add_request(request_id, {"prompt_token_ids": prompt}, params)
                    finished = False
                    while not finished:
                        for output in engine.step():
                            if output.request_id != request_id:
                                continue
                            if output.outputs[0].text:
                                loop.call_soon_threadsafe(queue.put_nowait, output.outputs[0].text)
                            finished = output.finished
                loop.call_soon_threadsafe(queue.put_nowait, None)
            except BaseException as exc:  # re-raised in the consumer
                loop.call_soon_threadsafe(queue.put_nowait, exc)

        threading.Thread(target=worker, daemon=True, name="manyheads-vllm-stream").start()
        while (item := await queue.get()) is not None:
            if isinstance(item, BaseException):
                raise item
            yield item

    def metrics(self) -> dict[str, float]:
        """vLLM's counters by name (speculative-decoding acceptance among them)."""
        if not self._log_stats:
            raise EngineError("this VLLMEngine keeps no counters",
                              hint="create it with log_stats=True")
        values: dict[str, float] = {}
        for metric in self.llm.get_metrics():
            value = getattr(metric, "value", None)
            if isinstance(value, int | float):
                values[metric.name] = float(value)
        return values

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self.llm.llm_engine.engine_core.shutdown()
        del self.llm
        gc.collect()
        self._reaper.kill()  # vLLM ended its processes itself
        self._reaper.wait()


def _token_logprob(token: int, position: dict[int, Any]) -> TokenLogprob:
    chosen = position.get(token)
    return TokenLogprob(
        token=getattr(chosen, "decoded_token", None) or "",
        logprob=float(chosen.logprob) if chosen is not None else float("-inf"),
        top={(lp.decoded_token or str(i)): float(lp.logprob) for i, lp in position.items()
             if lp.rank is not None and lp.rank >= 1})
