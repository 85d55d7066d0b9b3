"""HumanEval on the embedded model: greedy, best-of-8 and IAD (4 x 2) on a fixed subset, and their summary.

Usage:
  python benchmarks/bench_humaneval.py runs [--limit 10] [--root benchmarks/runs]
  python benchmarks/bench_humaneval.py summary [--root benchmarks/runs] [--out benchmarks/results/humaneval.json]

``runs`` runs ``agentloop run humaneval`` (SmolLM2-135M-Instruct, chat prompt, 300 new
tokens, seed 0) on the first ``--limit`` problems, one graph after the other, each into
ROOT/humaneval-NAME; an existing run is finished with ``--resume``, so the script can be
stopped and started again. ``summary`` reads every run back: pass@1 of the final answer,
the verifier's pass rate, tokens and wall time per task, pass@k over every stored candidate
(scored by the official hidden tests; pass@n of best-of-n is the oracle-selection upper
bound), and each search graph's paired difference from greedy with its 95% bootstrap
interval (``agentloop report A --compare B``), over the tasks both runs finished.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

from agentloop.records import RunReport, open_store, paired_difference
from agentloop.suites.humaneval.data import load_problems
from agentloop.suites.humaneval.scoring import Sample, answer_completion, evaluate_samples

ROOT = Path(__file__).resolve().parent
RUNS = {
    "greedy": ["--graph", "greedy"],
    "bon8": ["--graph", "best_of_n", "--n", "8"],
    "iad4x2": ["--graph", "iad", "--n", "4", "--rounds", "2"],
}
COMMON = ["--offset", "0", "--max-tokens", "300", "--seed", "0"]


def command(name: str, limit: int, root: Path, *, resume: bool = True) -> list[str]:
    run_dir = root / f"humaneval-{name}"
    resume_flag = ["--resume"] if resume and run_dir.exists() else []
    return [
        sys.executable, "-m", "agentloop", "run", "humaneval", *RUNS[name], *COMMON,
        "--limit", str(limit), "--run-dir", str(run_dir), *resume_flag, "--json",
    ]  # fmt: skip


def runs(limit: int, root: Path) -> None:
    for name in RUNS:
        cmd = command(name, limit, root)
        print(" ".join(cmd[1:]), flush=True)
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)


def candidates_pass_at(run_dir: Path) -> dict:
    """pass@k for each k up to the candidates every task has, over every stored candidate."""
    problems = load_problems()
    samples = []
    with open_store(run_dir) as store:
        for task in store.load().tasks:
            for c in store.trajectory(task.task_id):
                code = c.get("answer") if c.get("parse_error") is None else None
                completion = answer_completion(code) if isinstance(code, str) else ""
                samples.append(Sample(task.task_id, completion, c["position"]))
    if not samples:
        return {}
    report = asyncio.run(evaluate_samples(samples, problems, ks=(1, 2, 4, 8)))
    return report.to_json(results=False)


def summary(root: Path, out: Path) -> None:
    reports = {
        name: RunReport.load(root / f"humaneval-{name}")
        for name in RUNS
        if (root / f"humaneval-{name}").exists()
    }
    result: dict = {
        "what": "HumanEval, embedded model (SmolLM2-135M-Instruct, transformers, CPU), chat prompt, "
        "max_tokens 300, seed 0; first problems in file order",
        "machine": f"{platform.machine()}, {os.cpu_count()} cores shared with other jobs",
        "measured": time.strftime("%Y-%m-%d"),
        "runs": {},
        "paired_vs_greedy": {},
    }
    for name, rep in reports.items():
        m = rep.metrics()
        result["runs"][name] = {
            "command": "agentloop "
            + " ".join(command(name, rep.run.planned, root, resume=False)[3:-1]).replace(
                str(ROOT.parent) + "/", ""
            ),
            "tasks": len(rep.tasks),
            "planned": rep.run.planned,
            "task_ids": sorted((t.task_id for t in rep.tasks), key=lambda s: int(s.split("/")[1])),
            "pass@1_final": m["execution_accuracy"],
            "verifier_pass_rate": m["verifier_pass_rate"],
            "candidates_per_task": m["candidates_per_task"],
            "completion_tokens_per_task": m["completion_tokens_per_task"],
            "latency_s_mean": m["latency_s_mean"],
            "candidates": candidates_pass_at(rep.run_dir),
        }
    base = reports.get("greedy")
    if base is not None:
        for name, rep in reports.items():
            if name != "greedy":
                result["paired_vs_greedy"][name] = paired_difference(base, rep).to_json()
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=("runs", "summary"))
    parser.add_argument("--limit", type=int, default=10)
    parser.add_argument("--root", type=Path, default=ROOT / "runs")
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "humaneval.json")
    args = parser.parse_args()
    if args.command == "runs":
        runs(args.limit, args.root)
    else:
        summary(args.root, args.out)


if __name__ == "__main__":
    main()
