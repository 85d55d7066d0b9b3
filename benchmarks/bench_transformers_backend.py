"""Throughput of the in-process transformers backend, before/after ratios measured in one process.

Usage: python benchmarks/bench_transformers_backend.py [--repeats 3] [--only single,concurrent,int8,long]
       [--baseline-rev REV] [--out FILE]

Every comparison runs its variants interleaved (A B, B A, A B, ...) after ``--warmup``
runs of each, and reports the median, all runs and the load average, so a machine shared with
other jobs moves both sides alike. "before" is the backend as it was before continuous
batching, read from git (``_baseline.py``); "after" is the working tree's.

  single:     one request at a time, n=1 and n=8, 64 new tokens: before vs after
              (continuous batching must not cost a lone request anything);
  concurrent: 4 requests of n=4 (64 tokens each) served together vs one after another,
              aggregate decode tokens/s, on the new backend;
  int8:       n=8, 64 tokens: int8 weights vs fp32, on the new backend;
  long:       decode on a ~3,000-token prompt (a WebShop-sized context), n=4, 32 tokens,
              prompt already in the prefix cache so only decoding is timed: before (the
              cache grows by concatenation every step) vs after (preallocated per-row cache).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import statistics
import time
from pathlib import Path
from typing import Any

import torch
from _baseline import Clock, baseline_backend_class, load_average, set_threads

from agentloop.backends import ChatRequest, Message
from agentloop.backends.transformers_backend import TransformersBackend
from agentloop.models import ensure_embedded_model

SCHEMA = "\n".join(
    f"CREATE TABLE table_{i} (id INTEGER PRIMARY KEY, name TEXT, city TEXT, amount REAL, created DATE);"
    for i in range(400)
)
STORY = ChatRequest.from_prompt(
    "Tell me a long story about a robot.", max_tokens=64, extra={"ignore_eos": True}
)
# The old backend here needed a few requests before it reached its steady speed.
WARMUP = 3
TOPICS = ["a robot", "the sea", "a mountain village", "a lost key"]


def long_prompt(backend: Any, target: int) -> tuple[str, int]:
    lines = SCHEMA.splitlines()
    lo, hi = 1, len(lines)
    while lo < hi:  # the fewest schema lines that reach ``target`` tokens
        mid = (lo + hi) // 2
        n = len(backend.encode(ChatRequest.from_prompt("Database schema:\n" + "\n".join(lines[:mid]))))
        lo, hi = (mid + 1, hi) if n < target else (lo, mid)
    text = "Database schema:\n" + "\n".join(lines[:lo])
    return text, len(backend.encode(ChatRequest.from_prompt(text)))


def summary(runs: dict[str, list[float]], unit: str) -> dict[str, Any]:
    return {
        name: {"median": round(statistics.median(v), 2), "runs": [round(x, 2) for x in v], "unit": unit}
        for name, v in runs.items()
    }


def ratio(res: dict[str, Any], a: str, b: str) -> float:
    return round(res[a]["median"] / res[b]["median"], 3)


async def interleave(variants: dict[str, Any], repeats: int) -> dict[str, list[float]]:
    """Warm each variant up, then ``repeats`` rounds, the order reversed every other round (A B, B A, ...)."""
    for make in variants.values():
        for _ in range(WARMUP):
            await make()
    runs: dict[str, list[float]] = {name: [] for name in variants}
    names = list(variants)
    for i in range(repeats):
        for name in names if i % 2 == 0 else names[::-1]:
            runs[name].append(await variants[name]())
    return runs


def tok_per_s(backend: Any, request: ChatRequest) -> Any:
    async def run() -> float:
        r = await backend.generate(request)
        return r.usage.completion_tokens / r.usage.latency_s

    return run


async def bench_single(old: Any, new: TransformersBackend, repeats: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for n in (1, 8):
        req = STORY.replace(n=n, seed=1)
        res = summary(
            await interleave({"before": tok_per_s(old, req), "after": tok_per_s(new, req)}, repeats), "tok/s"
        )
        out[f"n{n}"] = {**res, "after/before": ratio(res, "after", "before")}
        print(f"single n={n}: {out[f'n{n}']}", flush=True)
    return out


async def bench_concurrent(new: TransformersBackend, repeats: int) -> dict[str, Any]:
    reqs = [
        ChatRequest.from_prompt(
            f"Tell me a long story about {t}.", n=4, max_tokens=64, seed=i, extra={"ignore_eos": True}
        )
        for i, t in enumerate(TOPICS)
    ]

    async def sequential() -> float:
        start, tokens = time.perf_counter(), 0
        for r in reqs:
            tokens += (await new.generate(r)).usage.completion_tokens
        return tokens / (time.perf_counter() - start)

    async def together() -> float:
        start = time.perf_counter()
        done = await asyncio.gather(*(new.generate(r) for r in reqs))
        return sum(r.usage.completion_tokens for r in done) / (time.perf_counter() - start)

    res = summary(await interleave({"sequential": sequential, "concurrent": together}, repeats), "tok/s")
    out = {**res, "concurrent/sequential": ratio(res, "concurrent", "sequential")}
    print(f"4 x n=4 concurrent vs sequential: {out}", flush=True)
    return out


async def bench_int8(new: TransformersBackend, int8: TransformersBackend, repeats: int) -> dict[str, Any]:
    req = STORY.replace(n=8, seed=1)
    res = summary(
        await interleave({"fp32": tok_per_s(new, req), "int8": tok_per_s(int8, req)}, repeats), "tok/s"
    )
    out = {**res, "int8/fp32": ratio(res, "int8", "fp32")}
    print(f"n=8 int8 vs fp32: {out}", flush=True)
    return out


async def bench_long(old: Any, new: TransformersBackend, repeats: int, target: int) -> dict[str, Any]:
    text, ntok = long_prompt(new, target)
    req = ChatRequest(
        messages=(Message("user", text + "\nQuestion: list the names of people in Paris."),),
        n=4,
        max_tokens=32,
        seed=2,
        extra={"ignore_eos": True},
    )
    # The warm-up run of each variant puts the prompt in its prefix cache: the timed runs decode only.
    res = summary(
        await interleave({"before": tok_per_s(old, req), "after": tok_per_s(new, req)}, repeats), "tok/s"
    )
    out = {"prompt_tokens": ntok, **res, "after/before": ratio(res, "after", "before")}
    print(f"long context ({ntok} tokens), n=4 decode: {out}", flush=True)
    return out


async def main() -> None:
    global WARMUP
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=None)
    ap.add_argument("--out", default="benchmarks/results/transformers_backend.json")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--only", default="single,concurrent,int8,long")
    ap.add_argument("--baseline-rev", default=None)
    ap.add_argument("--long-tokens", type=int, default=3000)
    ap.add_argument("--warmup", type=int, default=WARMUP, help="runs of each variant before timing")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    args = ap.parse_args()
    set_threads(args.threads)
    WARMUP = args.warmup
    parts = set(args.only.split(","))
    model_dir = Path(args.model) if args.model else ensure_embedded_model()
    Old, rev = baseline_backend_class(args.baseline_rev)
    old, new = Old(model_dir), TransformersBackend(model_dir)
    old.load()
    new.load()
    results: dict[str, Any] = {
        "machine": f"{platform.machine()}, {torch.get_num_threads()} torch threads, torch {torch.__version__}",
        "model": model_dir.name,
        "baseline_rev": rev,
        "load_average_start": load_average(),
    }
    with Clock() as clock:
        if "single" in parts:
            results["single"] = await bench_single(old, new, args.repeats)
        if "concurrent" in parts:
            results["concurrent"] = await bench_concurrent(new, args.repeats)
        if "int8" in parts:
            int8 = TransformersBackend(model_dir, dtype="int8")
            int8.load()
            results["int8"] = await bench_int8(new, int8, args.repeats)
        if "long" in parts:
            results["long"] = await bench_long(old, new, args.repeats, args.long_tokens)
    results["load_average_end"] = clock.load_after
    results["wall_s"] = round(clock.seconds, 1)
    results["prefix_cache"] = new.stats().prefix_cache.to_dict()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    asyncio.run(main())
