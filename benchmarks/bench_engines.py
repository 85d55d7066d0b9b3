"""transformers against llamacpp on the embedded SmolLM2-135M: the README main job, and run-level concurrency.

Usage: python benchmarks/bench_engines.py [--repeats 2] [--jobs main,concurrency] [--out FILE]

Each variant is a separate ``python -m agentloop run text2sql ...`` process under
``/usr/bin/time -v`` (wall time and peak RSS of the whole process, model load
included), run interleaved (A B, B A, ...) so that both sides see the same machine:

* ``main``: the README main job (IAD, the first 10 questions, 4 tasks in flight), on
  ``--backend transformers`` and on ``--backend llamacpp``. Both read the same few-shot
  prompt (``--prompt fewshot``, what ``auto`` picks for transformers) and decode under
  the schema grammar (``--constrain auto`` picks ``schema`` for both).
* ``concurrency``: ``run text2sql --graph best_of_n --n 4 --limit 8 --max-tokens 48``
  with ``--concurrency 4`` against ``--concurrency 1``, on llamacpp (``--engines`` adds
  transformers).

Reported per run: wall, peak RSS, accuracy, tokens, LLM calls and the load average
before and after (the machine is shared). Writes JSON (default
``benchmarks/results/engines.json``).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

TIME = "/usr/bin/time"
ENGINE_ARGS = {
    "transformers": ["--backend", "transformers", "--prompt", "fewshot"],
    "llamacpp": ["--backend", "llamacpp", "--prompt", "fewshot"],
}


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def run_cli(args: list[str], run_dir: Path) -> dict[str, Any]:
    """One ``agentloop run`` process; its summary, wall time and peak RSS."""
    shutil.rmtree(run_dir, ignore_errors=True)
    cmd = [sys.executable, "-m", "agentloop", "run", "text2sql", *args, "--run-dir", str(run_dir), "--json"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_WAIT_POLICY": "PASSIVE"}
    load_before = load_average()
    if Path(TIME).exists():
        proc = subprocess.run([TIME, "-v", *cmd], capture_output=True, text=True, env=env)
        wall = _time_field(proc.stderr, r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): (\S+)")
        rss_kb = _time_field(proc.stderr, r"Maximum resident set size \(kbytes\): (\d+)")
        wall_s = _seconds(wall)
        rss_mb = int(rss_kb) / 1024
    else:  # resource's children figure: the peak of the largest child, which is this one
        import resource
        import time

        start = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
        wall_s = time.perf_counter() - start
        rss_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stderr[-2000:]}")
    summary = json.loads(proc.stdout)
    return {
        "command": "agentloop run text2sql " + " ".join(args),
        "wall_s": round(wall_s, 1),
        "run_wall_s": summary["usage"]["wall_s"],
        "peak_rss_mb": round(rss_mb),
        "accuracy": summary["metrics"]["execution_accuracy"],
        "tasks": summary["tasks"],
        "errors": summary["errors"],
        "llm_calls": summary["usage"]["llm_calls"],
        "candidates": summary["usage"]["candidates"],
        "prompt_tokens": summary["usage"]["prompt_tokens"],
        "completion_tokens": summary["usage"]["completion_tokens"],
        "load_before": load_before,
        "load_after": load_average(),
    }


def _time_field(text: str, pattern: str) -> str:
    m = re.search(pattern, text)
    if m is None:
        raise SystemExit(f"/usr/bin/time printed no {pattern!r}:\n{text[-2000:]}")
    return m.group(1)


def _seconds(clock: str) -> float:
    parts = [float(p) for p in clock.split(":")]
    return sum(p * 60**i for i, p in enumerate(reversed(parts)))


def interleave(names: list[str], repeats: int) -> list[str]:
    """A B, B A, A B, ...: each side goes first as often as the other."""
    order: list[str] = []
    for r in range(repeats):
        order += names if r % 2 == 0 else names[::-1]
    return order


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--jobs", default="main,concurrency")
    ap.add_argument("--engines", default="llamacpp", help="engines for the concurrency job")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "engines.json")
    args = ap.parse_args()
    jobs = args.jobs.split(",")
    variants: dict[str, list[str]] = {}
    if "main" in jobs:
        for engine, extra in ENGINE_ARGS.items():
            variants[f"main/{engine}"] = extra
    if "concurrency" in jobs:
        base = ["--graph", "best_of_n", "--n", "4", "--limit", "8", "--max-tokens", "48"]
        for engine in args.engines.split(","):
            for c in (4, 1):
                variants[f"concurrency/{engine}/c{c}"] = [
                    *ENGINE_ARGS[engine],
                    *base,
                    "--concurrency",
                    str(c),
                ]
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in variants}
    with tempfile.TemporaryDirectory(prefix="bench-engines-") as tmp:
        # One unmeasured run of each engine first: the model pull and the OS file cache.
        for engine in sorted({n.split("/")[1] for n in variants}):
            run_cli([*ENGINE_ARGS[engine], "--graph", "greedy", "--limit", "1"], Path(tmp) / "warm")
        groups: dict[str, list[str]] = {}
        for name in variants:
            groups.setdefault(
                name.rsplit("/", 1)[0] if name.startswith("concurrency") else "main", []
            ).append(name)
        for names in groups.values():
            for name in interleave(names, args.repeats):
                row = run_cli(variants[name], Path(tmp) / name.replace("/", "-"))
                runs[name].append(row)
                print(
                    f"{name}: {row['wall_s']} s, {row['peak_rss_mb']} MB, acc {row['accuracy']}", flush=True
                )
    summary = {
        name: {
            "median_wall_s": statistics.median(r["wall_s"] for r in rows),
            "median_peak_rss_mb": statistics.median(r["peak_rss_mb"] for r in rows),
            "accuracy": sorted({r["accuracy"] for r in rows}),
        }
        for name, rows in runs.items()
    }
    out = {
        "machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0]},
        "command": " ".join(["python", "benchmarks/bench_engines.py", *sys.argv[1:]]),
        "summary": summary,
        "runs": runs,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
