"""WebShop with the likelihood-choice policy on the embedded model: greedy, best-of-8, IAD, the oracle, the floor.

Usage: python benchmarks/bench_webshop_policy.py [--subset 20] [--runs runs/bench-webshop-policy]
       [--only first,greedy,best_of_n,iad,oracle] [--out benchmarks/results/webshop_policy.json]

Each configuration is one ``agentloop run webshop`` (through :func:`run_suite_sync`, into
its own run dir under ``--runs``, resumed if it is there already):

* ``first``: ``--policy first --graph greedy --all`` (search the instruction, first result, buy);
* ``greedy``: ``--policy choice --graph greedy --all``;
* ``best_of_n``: ``--policy choice --graph best_of_n --n 8 --limit SUBSET``;
* ``iad``: ``--policy choice --graph iad --n 4 --rounds 2 --limit SUBSET``;
* ``oracle``: ``--policy choice --graph best_of_n --n 8 --verifier oracle --limit SUBSET``
  (the true reward picks the episode: an upper bound).

Greedy and the floor run on all 116 shipped goals; the sampled graphs on the first
``--subset`` goals (8 episodes a goal do not fit the CPU time), and the table gives
greedy and the floor on that subset too. Seed 0, temperature 0.7, 15 actions. Then
``agentloop report IAD --compare BEST_OF_N`` gives IAD's paired difference.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from agentloop.runs.runner import RunSpec, run_suite_sync

CONFIGS: dict[str, dict[str, Any]] = {
    "first": {"graph": "greedy", "policy": "first", "all": True},
    "greedy": {"graph": "greedy", "policy": "choice", "all": True},
    "best_of_n": {"graph": "best_of_n", "policy": "choice", "n": 8},
    "iad": {"graph": "iad", "policy": "choice", "n": 4, "rounds": 2},
    "oracle": {"graph": "best_of_n", "policy": "choice", "n": 8, "verifier": "oracle"},
}


def command(name: str, subset: int) -> str:
    c = CONFIGS[name]
    flags = [f"--graph {c['graph']}", f"--policy {c['policy']}"]
    if "n" in c:
        flags.append(f"--n {c['n']}")
    if "rounds" in c:
        flags.append(f"--rounds {c['rounds']}")
    if "verifier" in c:
        flags.append(f"--verifier {c['verifier']}")
    flags.append("--all" if c.get("all") else f"--limit {subset}")
    return "agentloop run webshop " + " ".join(flags)


def run_one(name: str, subset: int, runs: Path) -> dict[str, Any]:
    c = CONFIGS[name]
    run_dir = runs / name
    spec = RunSpec(
        suite="webshop",
        graph=c["graph"],
        policy=c["policy"],
        n=c.get("n", 4),
        rounds=c.get("rounds", 3),
        verifier=c.get("verifier"),
        limit=None if c.get("all") else subset,
        constrain="none",  # Text2SQL's grammar switch; webshop ignores it, and a fixed value resumes
        concurrency=1,
    )
    t0 = time.perf_counter()
    summary = run_suite_sync(spec, run_dir=run_dir, resume=run_dir.exists(), progress=False)
    wall = time.perf_counter() - t0
    return {"name": name, "command": command(name, subset), "wall_s": round(wall, 1), **summary.to_json()}


def per_task(run_dir: str) -> list[dict[str, Any]]:
    out = subprocess.run(
        ["agentloop", "report", run_dir, "--json"], check=True, capture_output=True, text=True
    ).stdout
    data = json.loads(out)
    report = data[0] if isinstance(data, list) else data
    return list(report.get("results") or [])


def row(name: str, tasks: list[dict[str, Any]], limit: int | None) -> dict[str, Any]:
    chosen = sorted(tasks, key=lambda t: t["index"])[:limit] if limit else tasks
    k = len(chosen) or 1

    def usage(t: dict[str, Any], key: str) -> float:
        if key == "total_tokens":
            return usage(t, "prompt_tokens") + usage(t, "completion_tokens")
        return float(t.get(key) or 0)

    return {
        "run": name,
        "goals": len(chosen),
        "avg_reward": round(sum(float(t.get("reward") or 0) for t in chosen) / k, 4),
        "success_rate": round(sum(1 for t in chosen if float(t.get("reward") or 0) >= 1.0) / k, 4),
        "episodes_per_goal": round(sum(usage(t, "candidates") for t in chosen) / k, 2),
        "tokens_per_goal": round(sum(usage(t, "total_tokens") for t in chosen) / k),
        "calls_per_goal": round(sum(usage(t, "llm_calls") for t in chosen) / k, 1),
        "wall_s_per_goal": round(sum(float(t.get("wall_s") or 0) for t in chosen) / k, 2),
    }


def oracle_row(run_dir: str) -> dict[str, Any]:
    """The oracle's best-of-n over the very episodes a best_of_n run sampled: the best true reward per goal.

    With one round, sampling does not depend on the verifier (same seed, same episodes), so
    this is what ``--verifier oracle`` would select, without sampling them again.
    """
    db = sqlite3.connect(Path(run_dir) / "run.sqlite")
    best: dict[int, float] = {}
    for task_id, answer in db.execute("SELECT task_result_id, answer FROM candidates"):
        reward = float((json.loads(answer) if answer else {}).get("reward") or 0.0)
        best[task_id] = max(best.get(task_id, 0.0), reward)
    k = len(best) or 1
    return {
        "run": "oracle best-of-8 (true reward picks among best_of_n's episodes)",
        "goals": len(best),
        "avg_reward": round(sum(best.values()) / k, 4),
        "success_rate": round(sum(1 for r in best.values() if r >= 1.0) / k, 4),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--subset", type=int, default=20, help="goals for best_of_n, iad and oracle")
    ap.add_argument("--runs", type=Path, default=Path("runs/bench-webshop-policy"))
    ap.add_argument("--only", default="first,greedy,best_of_n,iad", help=f"of {', '.join(CONFIGS)}")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/webshop_policy.json"))
    args = ap.parse_args()
    args.runs.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {}
    for name in args.only.split(","):
        print(f"== {name}: {command(name, args.subset)}", flush=True)
        results[name] = run_one(name, args.subset, args.runs)
        print(json.dumps(results[name]["metrics"]), f"{results[name]['wall_s']} s", flush=True)
    rows = []
    for name, r in results.items():
        tasks = per_task(r["run_dir"])
        rows.append(row(name, tasks, None))
        if CONFIGS[name].get("all"):
            rows.append(row(f"{name} (first {args.subset})", tasks, args.subset))
        if name == "best_of_n":
            rows.append(oracle_row(r["run_dir"]))
    compare = None
    if "iad" in results and "best_of_n" in results:
        compare = subprocess.run(
            ["agentloop", "report", results["best_of_n"]["run_dir"], "--compare", results["iad"]["run_dir"]],
            check=True,
            capture_output=True,
            text=True,
            env={**os.environ, "COLUMNS": "200"},
        ).stdout
    load = os.getloadavg()
    out = {
        "machine": f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPUs, load {load[0]:.2f}",
        "python": sys.version.split()[0],
        "subset": args.subset,
        "runs": results,
        "table": rows,
        "compare_iad_vs_best_of_n": compare,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    print(
        "| run | goals | avg_reward | success_rate | episodes / goal | tokens / goal | calls / goal | s / goal |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        rest = (
            f"{r['episodes_per_goal']:g} | {r['tokens_per_goal']:,} | {r['calls_per_goal']:g} | {r['wall_s_per_goal']:g}"
            if "tokens_per_goal" in r
            else "(as best_of_n) | | |"
        )
        print(f"| {r['run']} | {r['goals']} | {r['avg_reward']:.3f} | {r['success_rate']:.3f} | {rest} |")
    if compare:
        print(compare)


if __name__ == "__main__":
    main()
