"""A suite written against agentloop's public API: arithmetic word problems, scored by the exact answer.

Run it with any graph: ``agentloop run examples/arith_suite.py:ArithSuite --graph iad --limit 2``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path

from agentloop import Backend
from agentloop.graphs import Candidate, LoopResult, PromptTask, Verdict
from agentloop.runs import RunSpec
from agentloop.suites import Score, Suite, SuiteItem, content_hash

DATA = Path(__file__).resolve().parent / "arith" / "problems.jsonl"
PROMPT = "Solve this word problem. Think briefly, then end with a line 'Answer: N'.\n\n{question}"


def parse_answer(text: str) -> int | None:
    """The number after the last 'Answer:', else the last number in the text."""
    numbers = re.findall(r"-?\d+", text.rsplit("Answer:", 1)[-1].replace(",", ""))
    return int(numbers[-1]) if numbers else None


def make_verifier(kind: str, gold: int) -> Callable[[Candidate], Verdict]:
    """``number`` (gold-free: a whole number came out) or ``exact`` (the answer key: an upper bound)."""

    def verify(candidate: Candidate) -> Verdict:
        if candidate.answer is None:
            return Verdict(0.0, passed=False, feedback="no number found; end with 'Answer: N'")
        if kind == "number":
            return Verdict(1.0, passed=True)
        ok = candidate.answer == gold
        return Verdict(float(ok), passed=ok, feedback="" if ok else f"{candidate.answer} is wrong")

    return verify


class ArithSuite(Suite):
    """Arithmetic word problems (examples/arith/problems.jsonl): accuracy of the final number."""

    name = "arith"
    default_limit = 5  # the quick slice when neither --limit nor --all is given
    default_verifier = "number"
    stop = ("\n\n\n",)

    def __init__(self) -> None:
        self.gold: dict[str, int] = {}

    def items(self, spec: RunSpec, backend: Backend | None = None) -> list[SuiteItem]:
        if spec.verifier not in ("number", "exact"):
            raise ValueError(f"arith verifiers are number and exact, not {spec.verifier!r}")
        path = Path(spec.data) if spec.data else DATA
        rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        items = []
        for index, row in enumerate(self.select(spec, rows), start=spec.offset):
            self.gold[row["id"]] = row["answer"]
            task = PromptTask(
                PROMPT.format(question=row["question"]),
                make_verifier(spec.verifier, row["answer"]),
                id=row["id"],
                parse=parse_answer,
            )
            # content_hash: what defines the task, so `report --compare` pairs only the same problems.
            digest = content_hash(["arith", row["question"], row["answer"]])
            items.append(SuiteItem(task, index, row["question"], source=str(path), content_hash=digest))
        return items

    async def score(self, item: SuiteItem, result: LoopResult) -> Score:
        return Score(correct=result.answer == self.gold[item.task_id])

    def upper_bound(self, verifier: str) -> bool:
        return verifier == "exact"
