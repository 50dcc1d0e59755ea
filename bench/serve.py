"""`manyheads serve` under 1, 8 and 32 concurrent clients: throughput and latency.

Starts `manyheads serve --engine local` (and `--engine vllm`) on loopback, one after the other,
and sends every engine the same prompts in one run: at each level, ``--requests`` chat requests
(greedy, ``--max-tokens`` each) from that many concurrent clients, each client sending its next
request when its last one is answered. Tokens per second = completion tokens of the level / its
wall time; latency = one request, sent to answered. ``local_scaling_8`` is the local engine's
tokens/s at 8 clients over 1 client.

Prints a table and writes ``bench/results/serve.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results" / "serve.json"
PROMPTS = [
    "Explain how a refrigerator keeps food cold.",
    "Write a short story about a lighthouse keeper.",
    "What are three tips for learning a new language?",
    "Describe a sunset over the ocean.",
    "Why do leaves change colour in autumn?",
    "Give me a plan for a productive morning.",
    "How does a bicycle gear system work?",
    "Summarise the rules of chess in a few sentences.",
    "Describe the water cycle to a child.",
    "Write a letter to a friend about a trip to the mountains.",
    "What makes a good team leader?",
    "Explain why the sky is blue.",
    "Tell a story about a robot who learns to paint.",
    "How do airplanes stay in the air?",
    "Describe your ideal weekend.",
    "What are the benefits of regular exercise?",
]


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start(engine: str, port: int, log: Path) -> subprocess.Popen:
    out = log.open("w")
    return subprocess.Popen([sys.executable, "-m", "manyheads.cli", "serve", "--engine", engine,
                             "--host", "127.0.0.1", "--port", str(port)], cwd=ROOT,
                            stdout=out, stderr=subprocess.STDOUT)


def wait_ready(server: subprocess.Popen, url: str, timeout_s: float = 900) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"the server exited with {server.returncode}")
        try:
            if httpx.get(f"{url}/v1/models", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(1)
    raise SystemExit("the server did not start")


async def level(url: str, model: str, clients: int, prompts: list[str], max_tokens: int
                ) -> dict:
    """``prompts`` answered by ``clients`` concurrent clients; throughput and latencies."""
    todo: asyncio.Queue[str] = asyncio.Queue()
    for prompt in prompts:
        todo.put_nowait(prompt)
    latencies: list[float] = []
    tokens = 0

    async def client(http: httpx.AsyncClient) -> None:
        nonlocal tokens
        while not todo.empty():
            prompt = todo.get_nowait()
            sent = time.perf_counter()
            reply = await http.post(f"{url}/v1/chat/completions", json={
                "model": model, "messages": [{"role": "user", "content": prompt}],
                "temperature": 0, "max_tokens": max_tokens})
            reply.raise_for_status()
            latencies.append(time.perf_counter() - sent)
            tokens += reply.json()["usage"]["completion_tokens"]

    limits = httpx.Limits(max_connections=clients + 4)
    async with httpx.AsyncClient(timeout=1800, limits=limits) as http:
        started = time.perf_counter()
        await asyncio.gather(*(client(http) for _ in range(clients)))
        wall = time.perf_counter() - started
    latencies.sort()
    return {"clients": clients, "requests": len(prompts), "completion_tokens": tokens,
            "wall_s": round(wall, 2), "tokens_per_s": round(tokens / wall, 2),
            "p50_latency_s": round(statistics.median(latencies), 3),
            "p95_latency_s": round(latencies[min(len(latencies) - 1,
                                                 int(0.95 * len(latencies)))], 3)}


def bench_engine(engine: str, levels: list[int], prompts: list[str], max_tokens: int,
                 console: Console) -> dict:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = ROOT / "bench" / "results" / f"serve_{engine}.log"
    server = start(engine, port, log)
    try:
        console.print(f"starting `manyheads serve --engine {engine}` ...")
        wait_ready(server, url)
        model = httpx.get(f"{url}/v1/models").json()["data"][0]["id"]
        asyncio.run(level(url, model, 1, prompts[:1], max_tokens))  # warm-up
        results = {}
        for clients in levels:
            results[str(clients)] = asyncio.run(level(url, model, clients, prompts, max_tokens))
            console.print(f"  {engine} x{clients}: {results[str(clients)]}")
        if engine == "local":
            stats = httpx.get(f"{url}/v1/stats").json()
            results["engine_tally"] = {k: stats[k] for k in ("decode_steps", "max_batch_size",
                                                             "mean_batch_size")}
        return results
    finally:
        server.terminate()
        try:
            server.wait(120)
        except subprocess.TimeoutExpired:
            server.kill()
        log.unlink(missing_ok=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--engines", default="local,vllm")
    parser.add_argument("--levels", default="1,8,32")
    parser.add_argument("--requests", type=int, default=32, help="requests per level")
    parser.add_argument("--max-tokens", type=int, default=32)
    args = parser.parse_args()
    console = Console()
    levels = [int(x) for x in args.levels.split(",")]
    prompts = [PROMPTS[i % len(PROMPTS)] for i in range(args.requests)]
    out: dict = {"machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
                 "max_tokens": args.max_tokens, "requests_per_level": args.requests,
                 "temperature": 0, "engines": {}}
    for engine in args.engines.split(","):
        out["engines"][engine] = bench_engine(engine, levels, prompts, args.max_tokens, console)
    for engine, results in out["engines"].items():
        one = results.get("1", {}).get("tokens_per_s")
        for clients in levels:
            if one and clients != 1:
                out[f"{engine}_scaling_{clients}"] = round(
                    results[str(clients)]["tokens_per_s"] / one, 2)

    table = Table(title=f"manyheads serve, {args.requests} requests x {args.max_tokens} tokens "
                        "per level")
    for column in ("engine", "clients", "tokens/s", "p50 latency s", "p95 latency s", "scaling"):
        table.add_column(column, justify="right")
    for engine, results in out["engines"].items():
        for clients in levels:
            r = results[str(clients)]
            scaling = out.get(f"{engine}_scaling_{clients}", 1.0)
            table.add_row(engine, str(clients), f"{r['tokens_per_s']:.1f}",
                          f"{r['p50_latency_s']:.2f}", f"{r['p95_latency_s']:.2f}", f"{scaling}x")
    console.print(table)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    if RESULTS.exists():  # a run of one engine keeps the other engine's last numbers
        previous = json.loads(RESULTS.read_text())
        kept = {k: v for k, v in previous.get("engines", {}).items() if k not in out["engines"]}
        out = {**{k: v for k, v in previous.items() if not k.startswith(tuple(out["engines"]))},
               **out, "engines": {**kept, **out["engines"]}}
    RESULTS.write_text(json.dumps(out, indent=2) + "\n")
    console.print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
