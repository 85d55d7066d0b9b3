"""Does ``score`` on llamacpp pick what it picks on transformers? The choice sets of a greedy WebShop run.

Usage: python benchmarks/bench_engines_score.py [--limit 10] [--work DIR] [--out benchmarks/results/engines_score.json]

A greedy WebShop run with the likelihood-choice policy (``--policy choice``) on the
transformers backend records every ``score(prompt, continuations)`` call it makes (the
choice sets and the priors the policy divides by). Each recorded call is then scored
again on the llamacpp backend, on the same embedded SmolLM2-135M (the transformers
weights are dequantised from the very GGUF llama.cpp reads; llama.cpp computes in its
own kernels and precisions). Reported: how often the two engines' best continuation
agrees (by mean and by total log-likelihood), the mean per-token absolute difference,
and the time each engine spent scoring.

With ``--work DIR`` the work survives a kill and a rerun resumes it: the greedy run is
stored in ``DIR/run`` (finished goals are not rerun), each recorded call is appended to
``DIR/calls.jsonl`` as it is made, and each llamacpp rescoring to ``DIR/scored.jsonl``.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from agentloop.backends.llamacpp_backend import LlamaCppBackend
from agentloop.backends.transformers_backend import TransformersBackend
from agentloop.runs import RunSpec, run_suite
from agentloop.types import ScorePrompt, ScoreResponse


class Recording(TransformersBackend):
    """The transformers backend, appending every score call and what it answered to a JSONL file."""

    def __init__(self, calls: Path) -> None:
        super().__init__()
        self.calls_path = calls
        self.seconds = 0.0

    async def score(self, prompt: ScorePrompt, continuations: Sequence[str]) -> ScoreResponse:
        start = time.perf_counter()
        out = await super().score(prompt, continuations)
        self.seconds += time.perf_counter() - start
        call = {"prompt": prompt, "continuations": list(continuations), "transformers": _pairs(out)}
        with self.calls_path.open("a") as f:
            f.write(json.dumps(call) + "\n")
        return out


def _pairs(scores: ScoreResponse) -> list[list[float]]:
    return [[s.logprob, s.num_tokens] for s in scores]


def _key(call: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps([call["prompt"], call["continuations"]]).encode()).hexdigest()


def best(pairs: list[list[float]], normalize: bool) -> int:
    """The most likely continuation (the first on ties), by mean or total log-likelihood."""
    values = [(lp / n if n else 0.0) if normalize else lp for lp, n in pairs]
    return values.index(max(values))


def _read(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:  # a line cut by a kill
            continue
    return out


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    work: Path = args.work
    work.mkdir(parents=True, exist_ok=True)
    rec = Recording(work / "calls.jsonl")
    spec = RunSpec(suite="webshop", graph="greedy", policy="choice", limit=args.limit)
    start = time.perf_counter()
    resume = (work / "run").exists()
    summary = await run_suite(spec, run_dir=work / "run", backend=rec, resume=resume)
    run_wall = time.perf_counter() - start
    await rec.aclose()
    calls = {_key(c): c for c in _read(work / "calls.jsonl") if len(c["continuations"]) >= 2}
    scored = {r["key"]: r for r in _read(work / "scored.jsonl")}
    todo = [k for k in calls if k not in scored]
    llama_seconds = 0.0
    if todo:
        llama = LlamaCppBackend()
        llama.load()
        with (work / "scored.jsonl").open("a") as f:
            for key in todo:
                call = calls[key]
                start = time.perf_counter()
                other = await llama.score(call["prompt"], call["continuations"])
                llama_seconds += time.perf_counter() - start
                f.write(json.dumps({"key": key, "llamacpp": _pairs(other)}) + "\n")
                f.flush()
                scored[key] = {"key": key, "llamacpp": _pairs(other)}
        await llama.aclose()
    rows = []
    for key, call in calls.items():
        ref, other = call["transformers"], scored[key]["llamacpp"]
        diffs = [abs(a[0] - b[0]) / a[1] for a, b in zip(ref, other, strict=True) if a[1] and a[1] == b[1]]
        rows.append(
            {
                "choices": len(ref),
                "same_tokens": all(a[1] == b[1] for a, b in zip(ref, other, strict=True)),
                "agree_mean": best(ref, True) == best(other, True),
                "agree_total": best(ref, False) == best(other, False),
                "mean_abs_diff_per_token": statistics.fmean(diffs) if diffs else None,
            }
        )
    per_token = [r["mean_abs_diff_per_token"] for r in rows if r["mean_abs_diff_per_token"] is not None]
    return {
        "command": " ".join(["python", "benchmarks/bench_engines_score.py", *sys.argv[1:]]),
        "goals": args.limit,
        "run": {"avg_reward": summary.metrics.get("avg_reward"), "wall_s_this_process": round(run_wall, 1)},
        "choice_sets": len(rows),
        "agree_by_mean_logprob": round(sum(r["agree_mean"] for r in rows) / len(rows), 4),
        "agree_by_total_logprob": round(sum(r["agree_total"] for r in rows) / len(rows), 4),
        "same_tokenization": round(sum(r["same_tokens"] for r in rows) / len(rows), 4),
        "mean_abs_logprob_diff_per_token": round(statistics.fmean(per_token), 4),
        "max_abs_logprob_diff_per_token": round(max(per_token), 4),
        "score_seconds_this_process": {
            "transformers": round(rec.seconds, 1),
            "llamacpp": round(llama_seconds, 1),
        },
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "rows": rows,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--limit", type=int, default=10, help="WebShop goals (116 shipped)")
    ap.add_argument("--work", type=Path, default=Path(__file__).parent / "runs" / "engines_score")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "engines_score.json")
    args = ap.parse_args()
    result = asyncio.run(main_async(args))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "rows"}, indent=2))


if __name__ == "__main__":
    main()
