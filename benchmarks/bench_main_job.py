"""The README's main job (``agentloop run text2sql``: IAD, 10 questions, 4 tasks in flight), before and after.

Usage: python benchmarks/bench_main_job.py [--repeats 2] [--variants before,after]
       [--baseline-rev REV] [--out FILE]

Variants, run interleaved (before, after, after, before, ...) in one process:
  before:   the transformers backend before continuous batching (read from git, ``_baseline.py``);
  after:    the working tree's backend with its defaults;
  nobatch:  the working tree's backend with ``batching=False`` (requests one at a time);
  int8:     the working tree's backend with int8 weights.
A suffix ``@C`` runs a variant with C tasks in flight (``after@8``); without one, RunSpec's default.

Each run gets a fresh backend (empty prefix cache, model loaded before the clock
starts) and its own run dir, so each is a cold ``agentloop run``. Reported: wall
time, accuracy and tokens from the run summary, the load average around each run,
and for the new backend its prefix-cache hits and decode-batch sizes.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import statistics
import tempfile
from pathlib import Path
from typing import Any

from _baseline import Clock, baseline_backend_class, load_average, set_threads

from agentloop.backends.transformers_backend import TransformersBackend
from agentloop.models import ensure_embedded_model
from agentloop.runs import RunSpec, run_suite


def variant(name: str) -> tuple[str, int | None]:
    """``after@8`` -> (``after``, 8): the backend variant and the tasks in flight (None: RunSpec's default)."""
    base, _, inflight = name.partition("@")
    return base, int(inflight) if inflight else None


async def one_run(
    name: str, backend: Any, run_dir: Path, limit: int, concurrency: int | None
) -> dict[str, Any]:
    shutil.rmtree(run_dir, ignore_errors=True)
    backend.load()
    spec = RunSpec(suite="text2sql", graph="iad", limit=limit)
    if concurrency is not None:
        spec = RunSpec(suite="text2sql", graph="iad", limit=limit, concurrency=concurrency)
    with Clock() as clock:
        summary = await run_suite(spec, run_dir=run_dir, backend=backend)
    row: dict[str, Any] = {
        "variant": name,
        "wall_s": round(clock.seconds, 1),
        "load_before": clock.load_before,
        "load_after": clock.load_after,
        "tasks": summary.tasks,
        "errors": summary.errors,
        "metrics": summary.metrics,
        "usage": summary.usage,
        "run_dir": str(run_dir),
    }
    if isinstance(backend, TransformersBackend):
        row["backend_stats"] = backend.stats().to_dict()
    print(json.dumps(row), flush=True)
    return row


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--variants", default="before,after")
    ap.add_argument("--limit", type=int, default=10)
    ap.add_argument("--warmup-runs", type=int, default=1, help="discarded runs of each variant (4 tasks)")
    ap.add_argument("--baseline-rev", default=None)
    ap.add_argument("--runs-root", default=None, help="where the run dirs go (default: a temp dir)")
    ap.add_argument("--out", default="benchmarks/results/main_job.json")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    args = ap.parse_args()
    set_threads(args.threads)
    model_dir = ensure_embedded_model()
    Old, rev = baseline_backend_class(args.baseline_rev)
    makers = {
        "before": lambda: Old(model_dir),
        "after": lambda: TransformersBackend(model_dir),
        "nobatch": lambda: TransformersBackend(model_dir, batching=False),
        "int8": lambda: TransformersBackend(model_dir, dtype="int8"),
    }
    variants = args.variants.split(",")
    root = Path(args.runs_root or tempfile.mkdtemp(prefix="main_job_"))
    rows: list[dict[str, Any]] = []
    # One discarded run of each variant first: the first run in a process pays one-off
    # costs (kernel set-up, the grammar compiler) that would otherwise fall on one side.
    for name in variants:
        for _ in range(args.warmup_runs):
            base, concurrency = variant(name)
            backend = makers[base]()
            await one_run(
                f"{name} (warm-up)", backend, root / f"{name}-warmup", min(args.limit, 4), concurrency
            )
            await backend.aclose()
    for rep in range(args.repeats):
        # A B, B A, ...: neither variant always runs first.
        for name in variants if rep % 2 == 0 else variants[::-1]:
            base, concurrency = variant(name)
            backend = makers[base]()
            rows.append(await one_run(name, backend, root / f"{name}-{rep}", args.limit, concurrency))
            await backend.aclose()
    import torch

    summary: dict[str, Any] = {
        "baseline_rev": rev,
        "limit": args.limit,
        "torch_threads": torch.get_num_threads(),
        "runs": rows,
    }
    for name in variants:
        walls = [r["wall_s"] for r in rows if r["variant"] == name]
        accs = [r["metrics"].get("execution_accuracy") for r in rows if r["variant"] == name]
        summary[name] = {"wall_s_median": statistics.median(walls), "walls": walls, "accuracy": accs}
    if "before" in variants:
        for name in variants:
            if name != "before":
                summary[f"{name}/before_wall"] = round(
                    summary[name]["wall_s_median"] / summary["before"]["wall_s_median"], 3
                )
    summary["load_average_end"] = load_average()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps({k: v for k, v in summary.items() if k != "runs"}, indent=2))


if __name__ == "__main__":
    asyncio.run(main())
