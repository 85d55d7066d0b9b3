"""HumanEval per model: greedy, best-of-n and IAD at equal candidates, and their summary.

Usage:
  python benchmarks/bench_humaneval.py runs [--model smol|qwen05] [--limit 164] [--search-limit N] [--root benchmarks/runs]
  python benchmarks/bench_humaneval.py summary [--model smol|qwen05] [--root benchmarks/runs] [--out FILE]

``runs`` runs ``agentloop run humaneval`` (chat prompt, 300 new tokens, seed 0) on the
first ``--limit`` problems (the search graphs on the first ``--search-limit``, default the
same), one graph after the other, each into ROOT/humaneval-MODEL-NAME; an existing run is
finished with ``--resume``, so the script can be stopped and started again. Models:
``smol`` is the embedded SmolLM2-135M-Instruct on the llama.cpp engine (greedy, best-of-8,
IAD 4 x 2); ``qwen05`` is Qwen2.5-Coder-0.5B-Instruct Q4_K_M (``agentloop models pull
qwen2.5-coder-0.5b``; greedy, best-of-4, IAD 2 x 2). ``summary`` reads every run back: pass@1 of the final answer,
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
MODELS = {
    "smol": {
        "backend": "llamacpp",
        "what": "SmolLM2-135M-Instruct (the embedded model), Q4_1 GGUF on the llama.cpp engine",
        "runs": {
            "greedy": ["--graph", "greedy"],
            "bon8": ["--graph", "best_of_n", "--n", "8"],
            "iad4x2": ["--graph", "iad", "--n", "4", "--rounds", "2"],
        },
    },
    "qwen05": {
        "backend": "llamacpp:qwen2.5-coder-0.5b",
        "what": "Qwen2.5-Coder-0.5B-Instruct Q4_K_M on the llama.cpp engine",
        "runs": {
            "greedy": ["--graph", "greedy"],
            "bon4": ["--graph", "best_of_n", "--n", "4"],
            "iad2x2": ["--graph", "iad", "--n", "2", "--rounds", "2"],
        },
    },
}
COMMON = ["--offset", "0", "--max-tokens", "300", "--seed", "0", "--concurrency", "8"]


def run_dir(model: str, name: str, root: Path) -> Path:
    return root / f"humaneval-{model}-{name}"


def command(model: str, name: str, limit: int, root: Path, *, resume: bool = True) -> list[str]:
    where = run_dir(model, name, root)
    resume_flag = ["--resume"] if resume and where.exists() else []
    spec = MODELS[model]
    return [
        sys.executable, "-m", "agentloop", "run", "humaneval", "--backend", spec["backend"],
        *spec["runs"][name], *COMMON, "--limit", str(limit), "--run-dir", str(where),
        *resume_flag, "--json",
    ]  # fmt: skip


def runs(model: str, limit: int, search_limit: int, root: Path) -> None:
    for name in MODELS[model]["runs"]:
        cmd = command(model, name, limit if name == "greedy" else search_limit, root)
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


def summary(model: str, root: Path, out: Path) -> None:
    spec = MODELS[model]
    reports = {
        name: RunReport.load(run_dir(model, name, root))
        for name in spec["runs"]
        if run_dir(model, name, root).exists()
    }
    result: dict = {
        "what": f"HumanEval, {spec['what']}, CPU, chat prompt, max_tokens 300, seed 0; "
        "first problems in file order",
        "machine": f"{platform.machine()}, {os.cpu_count()} cores shared with other jobs",
        "measured": time.strftime("%Y-%m-%d"),
        "runs": {},
        "paired_vs_greedy": {},
    }
    for name, rep in reports.items():
        m = rep.metrics()
        result["runs"][name] = {
            "command": "agentloop "
            + " ".join(command(model, name, rep.run.planned, root, resume=False)[3:-1]).replace(
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
    search = [name for name in reports if name != "greedy"]
    if len(search) == 2:  # best-of-n then IAD at the same number of candidates
        bon, iad = (reports[name] for name in search)
        result[f"{search[1]}_minus_{search[0]}"] = paired_difference(bon, iad).to_json()
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=("runs", "summary"))
    parser.add_argument("--model", choices=sorted(MODELS), default="smol")
    parser.add_argument("--limit", type=int, default=164)
    parser.add_argument("--search-limit", type=int, default=None)
    parser.add_argument("--root", type=Path, default=ROOT / "runs")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    if args.command == "runs":
        runs(args.model, args.limit, args.search_limit or args.limit, args.root)
    else:
        out = args.out or ROOT / "results" / f"humaneval_{args.model}.json"
        summary(args.model, args.root, out)


if __name__ == "__main__":
    main()
