"""Throughput and prefix-reuse benchmark for the in-process transformers backend.

Usage: python benchmarks/bench_transformers_backend.py [--model PATH] [--out FILE]

Measures, on the embedded SmolLM2-135M (fp32, CPU unless CUDA is present):
  1. aggregate decode tokens/s at n=1 and n=8 (short prompt, 64 new tokens);
  2. the wall time of one n=8 round (40 new tokens) on a ~600-token prompt:
     - naive: HF ``generate`` on the prompt repeated 8 times (prefills 8 copies),
     - shared prefill: our backend, prompt prefilled once, cache copied to 8 rows,
     - next round: a prompt that shares the first ~90% with the previous round,
       as an IAD refine round does, cold (prefilled in full) and warm (only the
       tokens after the common prefix are prefilled).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import time
from pathlib import Path

import torch

from agentloop.backends import ChatRequest, Message
from agentloop.backends.transformers_backend import TransformersBackend
from agentloop.models import ensure_embedded_model

SCHEMA = "\n".join(
    f"CREATE TABLE table_{i} (id INTEGER PRIMARY KEY, name TEXT, city TEXT, amount REAL, created DATE);"
    for i in range(40)
)


def long_prompt(backend: TransformersBackend, target: int = 600) -> tuple[str, int]:
    lines = SCHEMA.splitlines()
    for k in range(1, len(lines) + 1):
        text = "Database schema:\n" + "\n".join(lines[:k])
        n = len(backend.encode(ChatRequest.from_prompt(text)))
        if n >= target:
            return text, n
    return text, n


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=None)
    ap.add_argument("--out", default="benchmarks/results/transformers_backend.json")
    ap.add_argument("--repeats", type=int, default=2, help="best of this many runs per number")
    args = ap.parse_args()
    model_dir = Path(args.model) if args.model else ensure_embedded_model()
    backend = TransformersBackend(model_dir, prefix_cache_size=8)
    backend.load()
    results: dict = {
        "machine": f"{platform.machine()}, {torch.get_num_threads()} torch threads, torch {torch.__version__}",
        "device": backend._device,
        "model": str(model_dir.name),
    }

    # 1. Throughput.
    short = ChatRequest.from_prompt(
        "Tell me a long story about a robot.", max_tokens=64, extra={"ignore_eos": True}
    )
    await backend.generate(short.replace(max_tokens=8))  # warm-up
    for n in (1, 8):
        best = None
        for _ in range(args.repeats):
            r = await backend.generate(short.replace(n=n, seed=1))
            tps = r.usage.completion_tokens / r.usage.latency_s
            best = max(best or 0.0, tps)
        results[f"tokens_per_s_n{n}"] = round(best, 1)
        print(f"n={n}: {best:.1f} tok/s aggregate")

    # 2. An n=8 round on a ~600-token prompt.
    text, ntok = long_prompt(backend)
    results["long_prompt_tokens"] = ntok
    question = "\nQuestion: list the names of people in Paris. Answer with SQL."
    round1 = ChatRequest(
        messages=(Message("user", text + question),), n=8, max_tokens=40, seed=3, extra={"ignore_eos": True}
    )
    feedback = (
        "\nYour best attempt so far scored 0.5: SELECT name FROM table_1. It failed because the "
        "column city was not filtered. Improve on it."
    )
    round2 = round1.replace(messages=(Message("user", text + question + feedback),))

    model, tok = backend._model, backend._tokenizer
    ids = torch.tensor([backend.encode(round1)])
    naive = []
    for _ in range(args.repeats):
        t = time.perf_counter()
        with torch.inference_mode():
            model.generate(
                ids.repeat(8, 1),
                attention_mask=torch.ones(8, ids.shape[1], dtype=torch.long),
                do_sample=True,
                max_new_tokens=40,
                min_new_tokens=40,
                pad_token_id=tok.pad_token_id,
            )
        naive.append(time.perf_counter() - t)
    results["round_n8_naive_generate_s"] = round(min(naive), 2)

    shared = []
    for _ in range(args.repeats):
        backend.clear_prefix_cache()
        shared.append((await backend.generate(round1)).usage.latency_s)
    results["round_n8_shared_prefill_s"] = round(min(shared), 2)

    cold2 = []
    for _ in range(args.repeats):
        backend.clear_prefix_cache()
        cold2.append((await backend.generate(round2)).usage.latency_s)
    results["round2_n8_cold_s"] = round(min(cold2), 2)

    nxt = []
    for i in range(args.repeats):
        backend.clear_prefix_cache()
        await backend.generate(round1.replace(seed=100 + i))
        r = await backend.generate(round2)
        nxt.append(r.usage.latency_s)
        results["round2_prompt_tokens"] = r.usage.prompt_tokens
        results["round2_reused_prompt_tokens"] = r.usage.reused_prompt_tokens
    results["round_n8_next_round_prefix_reuse_s"] = round(min(nxt), 2)
    for k in (
        "round_n8_naive_generate_s",
        "round_n8_shared_prefill_s",
        "round2_n8_cold_s",
        "round_n8_next_round_prefix_reuse_s",
    ):
        print(f"{k}: {results[k]} s")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    asyncio.run(main())
