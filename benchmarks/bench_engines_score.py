"""Does ``score`` on llamacpp pick what it picks on transformers? The choice sets of a greedy WebShop run.

Usage: python benchmarks/bench_engines_score.py [--limit 10] [--out benchmarks/results/engines_score.json]

A greedy WebShop run with the likelihood-choice policy (``--policy choice``) on the
transformers backend records every ``score(prompt, continuations)`` call it makes (the
choice sets and the priors the policy divides by). Each recorded call is then scored
again on the llamacpp backend, on the same embedded SmolLM2-135M (the transformers
weights are dequantised from the very GGUF llama.cpp reads; llama.cpp computes in its
own kernels and precisions). Reported: how often the two engines' best continuation
agrees (by mean and by total log-likelihood), the mean per-token absolute difference,
and the time each engine spent scoring.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from agentloop.backends.llamacpp_backend import LlamaCppBackend
from agentloop.backends.transformers_backend import TransformersBackend
from agentloop.runs import RunSpec, run_suite
from agentloop.types import ScorePrompt, ScoreResponse


class Recording(TransformersBackend):
    """The transformers backend, keeping every score call and what it answered."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[dict[str, Any]] = []
        self.seconds = 0.0

    async def score(self, prompt: ScorePrompt, continuations: Sequence[str]) -> ScoreResponse:
        start = time.perf_counter()
        out = await super().score(prompt, continuations)
        self.seconds += time.perf_counter() - start
        self.calls.append({"prompt": prompt, "continuations": list(continuations), "transformers": out})
        return out


def best(scores: ScoreResponse, normalize: bool) -> int:
    return scores.best(normalize=normalize)


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    rec = Recording()
    spec = RunSpec(suite="webshop", graph="greedy", policy="choice", limit=args.limit)
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        summary = await run_suite(spec, run_dir=Path(tmp) / "run", backend=rec)
        run_wall = time.perf_counter() - start
    await rec.aclose()
    llama = LlamaCppBackend()
    llama.load()
    rows = []
    llama_seconds = 0.0
    for call in rec.calls:
        if len(call["continuations"]) < 2:
            continue
        start = time.perf_counter()
        other = await llama.score(call["prompt"], call["continuations"])
        llama_seconds += time.perf_counter() - start
        ref: ScoreResponse = call["transformers"]
        diffs = [
            abs(a.logprob - b.logprob) / a.num_tokens
            for a, b in zip(ref, other, strict=True)
            if a.num_tokens and a.num_tokens == b.num_tokens
        ]
        rows.append(
            {
                "choices": len(ref),
                "same_tokens": all(a.num_tokens == b.num_tokens for a, b in zip(ref, other, strict=True)),
                "agree_mean": best(ref, True) == best(other, True),
                "agree_total": best(ref, False) == best(other, False),
                "mean_abs_diff_per_token": statistics.fmean(diffs) if diffs else None,
            }
        )
    await llama.aclose()
    per_token = [r["mean_abs_diff_per_token"] for r in rows if r["mean_abs_diff_per_token"] is not None]
    return {
        "command": " ".join(["python", "benchmarks/bench_engines_score.py", *sys.argv[1:]]),
        "goals": args.limit,
        "run": {"avg_reward": summary.metrics.get("avg_reward"), "wall_s": round(run_wall, 1)},
        "choice_sets": len(rows),
        "agree_by_mean_logprob": round(sum(r["agree_mean"] for r in rows) / len(rows), 4),
        "agree_by_total_logprob": round(sum(r["agree_total"] for r in rows) / len(rows), 4),
        "same_tokenization": round(sum(r["same_tokens"] for r in rows) / len(rows), 4),
        "mean_abs_logprob_diff_per_token": round(statistics.fmean(per_token), 4),
        "max_abs_logprob_diff_per_token": round(max(per_token), 4),
        "score_seconds": {"transformers": round(rec.seconds, 1), "llamacpp": round(llama_seconds, 1)},
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "rows": rows,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--limit", type=int, default=10, help="WebShop goals (116 shipped)")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "engines_score.json")
    args = ap.parse_args()
    result = asyncio.run(main_async(args))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "rows"}, indent=2))


if __name__ == "__main__":
    main()
